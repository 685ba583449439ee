"""The real Snakefile on config/micro.yaml, run in a scratch directory (the same DAG CI and users run)."""

import json
import shutil
import subprocess

import pytest
import yaml
from workflow_runner import MICRO, ROOT, SNAKEMAKE, snakemake

pytestmark = pytest.mark.integration


def test_micro_pipeline_produces_outputs_with_manifests(micro_run):
    r = micro_run / "results"
    for f in ("models/micro/hf/config.json", "models/micro/hf/manifest.json",
              "data/synth-micro/train.jsonl", "data/synth-micro/manifest.json",
              "memory/micro/budget.json", "memory/micro/reference_plans.tsv"):
        assert (r / f).is_file(), f
    budget = yaml.safe_load((r / "memory/micro/budget.json").read_text())
    assert budget["description"] == "uniform 4-bit at rank 8" and budget["plan_bytes"] > budget["min_plan_bytes"]
    assert budget["manifest"]["versions"]["torch"]


def test_micro_pipeline_search_and_final_plan(micro_run):
    import csv
    import json

    r = micro_run / "results"
    with open(r / "sensitivity/micro/priors.tsv") as fh:
        priors = list(csv.DictReader(fh, delimiter="\t"))
    assert [int(p["block"]) for p in priors] == [0, 1, 2, 3]
    assert len({p["iq_raw"] for p in priors}) > 1 and len({p["ir_raw"] for p in priors}) > 1
    front = json.loads((r / "search/micro/autoqra/front.json").read_text())
    assert front["front"] and front["evaluations"]["hf"] >= 4 and front["evaluations"]["lf"] >= 4
    with open(r / "search/micro/autoqra/hypervolume.tsv") as fh:
        hv = [float(row["hypervolume"]) for row in csv.DictReader(fh, delimiter="\t")]
    assert len(hv) == 3 and hv == sorted(hv)
    budget = json.loads((r / "memory/micro/budget.json").read_text())["plan_bytes"]
    for rec in front["archive"]:
        assert rec["memory"] <= budget * (1 + 1e-9)
    hist = json.loads((r / "final/micro/autoqra/history.json").read_text())
    plan = json.loads((r / "final/micro/autoqra/plan.json").read_text())
    assert hist["final"]["within_budget"] and hist["final"]["memory_bytes"] <= budget
    assert len(plan["bits"]) == 4 and set(plan["bits"]) <= {2, 3, 4, 8}
    # the noise-robust pick: filled candidates re-evaluated at fresh seeds, best mean score wins
    pick = hist["pick"]
    assert pick["seeds"] == [1, 2] and hist["final"]["within_one_upgrade"]
    finals = [c for c in pick["candidates"] if "final" in c["sets"]]
    assert hist["final"]["hf_score"] == max(c["mean_score"] for c in finals)
    assert all(len(c["scores"]) == 2 and c["within_one_upgrade"] for c in pick["candidates"])
    assert plan["meta"]["reevaluation_seeds"] == [1, 2]
    # one hypervolume reference for every variant, fixed before the searches
    ref = json.loads((r / "search/micro/hv_reference.json").read_text())
    for variant in ("autoqra", "single_fidelity", "no_importance"):
        f = json.loads((r / f"search/micro/{variant}/front.json").read_text())
        assert f["hv_reference"] == [ref["score"], 1.01], variant
    # the cost AutoQRA spent (LF, Stage 2 and its pick included) is recorded in HF-equivalents
    cost = hist["cost"]
    assert cost["total"]["hf_equivalents"] == pytest.approx(sum(cost[k]["hf_equivalents"]
                                                                for k in ("stage1", "stage2", "pick")))
    assert cost["stage1"]["evaluations"]["lf"] == front["evaluations"]["lf"] and cost["pick"]["hf_equivalents"] > 0
    assert hist["cost_curve"][-1]["cost"] == pytest.approx(cost["total"]["hf_equivalents"])


def test_micro_pipeline_methods_finetune_and_benchmarks(micro_run):
    """Every configured (method, seed) is fine-tuned, benchmarked by lm-eval and summarised."""
    import pandas as pd

    from autoqra.config import load_config

    r = micro_run / "results"
    cfg = load_config(ROOT / "config" / "micro.yaml", base_dir=ROOT)
    expected = {(m, s) for m, spec in cfg["methods"].items() for s in (spec["seeds"] or cfg["finetune"]["seeds"])}
    res = pd.read_csv(r / "summary/results.tsv", sep="\t")
    assert set(zip(res.method, res.seed, strict=True)) == expected
    assert set(res.task) == {"synth_mc", "synth_gen", "average"}
    assert res.value.between(0, 1).all()
    agg = pd.read_csv(r / "summary/aggregate.tsv", sep="\t")
    assert set(agg.method) == set(cfg["methods"])
    budget = json.loads((r / "memory/micro/budget.json").read_text())["plan_bytes"]
    for m, spec in cfg["methods"].items():
        plan = json.loads((r / f"methods/micro/{m}/plan.json").read_text())
        assert plan["meta"]["within_budget"] == (m != "lora16"), m  # 16-bit LoRA is the only one above it
        assert plan["meta"]["memory_bytes"] <= budget or m == "lora16"
        train = json.loads((r / f"finetune/micro/{m}/s0/train.json").read_text())
        assert train["steps"] == cfg["finetune"]["steps"] and train["trainable_params"] > 0
        lm = json.loads((r / f"lm_eval/micro/{m}/s0.json").read_text())
        assert lm["versions"] == {"synth_mc": 1.0, "synth_gen": 1.0} and lm["plan_hash"] == train["plan_hash"]
        if spec["plan"] == "search":
            name = "plan.json" if spec["stage2"] else "stage1_plan.json"
            want = json.loads((r / f"final/micro/{spec['variant']}/{name}").read_text())
            assert (plan["bits"], plan["ranks"]) == (want["bits"], want["ranks"]), m
    assert json.loads((r / "methods/micro/qlora_nf4/plan.json").read_text())["backend"] == "bnb"
    cost = pd.read_csv(r / "summary/search_cost.tsv", sep="\t", keep_default_na=False)
    hf = cost.set_index(["stage", "variant"])["hf_evaluations"]
    # random search and optuna spend AutoQRA's recorded cost (HF-equivalents, floored), own pick included
    spent = json.loads((r / "final/micro/autoqra/history.json").read_text())["cost"]["total"]["hf_equivalents"]
    assert hf["random_search", ""] == int(spent) == hf["optuna_search", "tpe"]
    assert hf["random_search", ""] > hf["stage1_search", "autoqra"] + hf["stage2_refine", "autoqra"]  # LF counted
    heq = cost.set_index(["stage", "variant"])["hf_equivalents"].replace("", float("nan")).astype(float)
    autoqra = sum(heq[s, "autoqra"] for s in ("stage1_search", "stage2_refine", "search_pick"))
    assert autoqra == pytest.approx(spent, abs=1e-3)  # the TSV keeps 6 significant digits
    # every HF score shown for a method comes from the held-out seed (seed + reevaluate_seeds + 1)
    mhf = pd.read_csv(r / "methods_hf/micro.tsv", sep="\t")
    assert set(mhf.seed) == {3} and set(mhf.method) == set(cfg["methods"])
    # Single fidelity: every offspring at HF, no LF evaluation at all.
    assert hf["stage1_search", "single_fidelity"] == 4 + 2 * 4
    assert cost.set_index(["stage", "variant"]).loc[("stage1_search", "single_fidelity"), "lf_evaluations"] == 0


def test_paper_figures_regenerate_without_training(micro_run):
    """Deleting paper_figures/ and asking for `paper` re-runs the paper rules and nothing else."""
    figs = micro_run / "paper_figures"
    names = sorted(p.name for p in figs.iterdir())
    assert {"table1_main.tex", "table4_search_cost.csv", "fig2_pareto_micro.png", "fig6_priors_micro.pdf"} <= set(names)
    assert all((figs / n).stat().st_size > 0 for n in names)
    shutil.rmtree(figs)
    # The target goes before --configfile (which takes several values).
    dry = snakemake(micro_run, "paper", "-n", "--configfile", str(MICRO))
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = set()
    for line in dry.stdout.split("Job stats:")[1].splitlines()[3:]:  # after "job count" and "---"
        if not line.strip():
            break
        jobs.add(line.split()[0])
    assert jobs and all(j.startswith("paper") or j == "total" for j in jobs), jobs
    res = snakemake(micro_run, "paper", "--configfile", str(MICRO))
    assert res.returncode == 0, res.stderr[-3000:]
    assert sorted(p.name for p in figs.iterdir()) == names
    rep = snakemake(micro_run, "--configfile", str(MICRO), "--report", "report.html")
    assert rep.returncode == 0, rep.stderr[-3000:]
    html = (micro_run / "report.html").read_text(errors="replace")
    assert "fig2_pareto_micro.png" in html and "table1_main.csv" in html


def test_rerun_is_a_no_op(micro_run):
    res = snakemake(micro_run, "--configfile", str(MICRO), "-n")
    assert res.returncode == 0
    assert "Nothing to be done" in res.stdout + res.stderr


@pytest.mark.parametrize("name", ["micro.yaml", "config.yaml", "paper.yaml"])
def test_dry_run_builds_dag(tmp_path, name):
    # paper.yaml names hub models: offline they would have to be cached, online they are fetched later
    res = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config" / name), offline=name != "paper.yaml")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "model_prepare" in res.stdout


def test_paper_dag_on_the_slurm_profile(tmp_path):
    """The full paper DAG (two models, five search variants, 13 methods x 3 seeds) builds with the
    SLURM executor profile, and the GPU rules carry their GPU resources."""
    res = snakemake(tmp_path, "-n", "--configfile", str(ROOT / "config" / "paper.yaml"),
                    "--profile", str(ROOT / "profiles" / "slurm"), offline=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    total = int(next(line.split()[1] for line in out.splitlines() if line.startswith("total")))
    assert total > 3000
    ev = out[out.index("rule search_evaluate:"):]
    resources = next(line for line in ev.splitlines() if line.strip().startswith("resources:"))
    assert "gpu=1" in resources and "slurm_partition=gpu" in resources and "mem_mb=64000" in resources
    light = out[out.index("rule search_propose:"):]
    resources = next(line for line in light.splitlines() if line.strip().startswith("resources:"))
    assert "gpu" not in resources.replace("slurm_partition=cpu", "")


def test_lint_is_clean():
    res = subprocess.run([*SNAKEMAKE, "--lint", "--configfile", "config/micro.yaml"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in out, out[-3000:]


def test_between_workflow_cache_shares_model_and_data(tmp_path):
    """`snakemake --cache` with $SNAKEMAKE_OUTPUT_CACHE: a second workflow directory takes the
    prepared base model and data splits from the cache instead of preparing them again."""
    cache = tmp_path / "cache"
    cache.mkdir()
    target = "results/memory/micro/budget.json"
    runs = {}
    for name in ("first", "second"):
        work = tmp_path / name
        res = snakemake(work, target, "results/data/synth-micro/train.jsonl", "--cache", "--configfile", str(MICRO),
                        env={"SNAKEMAKE_OUTPUT_CACHE": str(cache)})
        assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
        runs[name] = (work, res.stdout + res.stderr)
    first, second = runs["first"][1], runs["second"][1]
    assert "Moving output file results/models/micro/hf to cache" in first
    assert "Symlinking output file results/models/micro/hf/model.safetensors from cache" in second
    assert "Symlinking output file results/data/synth-micro/train.jsonl from cache" in second
    work = runs["second"][0]
    log = work / "results/logs/model_prepare/micro.log"  # Snakemake creates it empty; the job never ran
    assert not log.exists() or log.stat().st_size == 0
    assert (work / "results/models/micro/hf/model.safetensors").is_symlink()
    manifests = [json.loads((w / "results/models/micro/hf/manifest.json").read_text()) for w, _ in runs.values()]
    assert manifests[0] == manifests[1]
    budgets = [json.loads((w / target).read_text())["plan_bytes"] for w, _ in runs.values()]
    assert budgets[0] == budgets[1] > 0
