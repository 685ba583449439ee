"""The paper DAG as the SLURM executor would submit it: a dry run with the SLURM workflow profile
and no --cores (so nothing local caps the jobs), checked job by job."""

import os
from collections import Counter, defaultdict

import pytest
import yaml
from workflow_runner import MICRO, ROOT, dry_run_jobs, rule_locality, snakemake

from autoqra.config import validate_schema
from autoqra.pipeline.common import evolution_settings, shard_of
from autoqra.pipeline.search import phase_size

pytestmark = pytest.mark.integration

GPU_RULES = {"sensitivity", "search_reference", "search_evaluate", "refine_evaluate", "final_evaluate",
             "random_evaluate", "random_reevaluate", "optuna_search", "methods_hf", "finetune", "lm_eval"}


@pytest.fixture(scope="module")
def paper_jobs(tmp_path_factory):
    work = tmp_path_factory.mktemp("paper-slurm")
    res = snakemake(work, "-n", "--configfile", str(ROOT / "config" / "paper.yaml"),
                    "--workflow-profile", str(ROOT / "profiles" / "slurm"), offline=False, cores=None,
                    env={"HF_TOKEN": os.environ.get("HF_TOKEN", "hf_dry_run")})  # required by the gated Llama 3
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "profiles/default" not in out  # the local profile does not leak into a SLURM run
    return dry_run_jobs(res.stdout)


def test_gpu_rules_ask_for_one_gpu_and_as_many_cpus_as_threads(paper_jobs):
    gpu = [j for j in paper_jobs if j["rule"] in GPU_RULES]
    assert {j["rule"] for j in gpu} == GPU_RULES
    for j in gpu:
        res = j["resources"]
        assert j["threads"] == 8 == int(res["cpus_per_task"]), j  # job_threads: 8 in paper.yaml
        assert res["gpu"] == "1" and res["slurm_partition"] == "gpu", j
        # sized by the forecast (autoqra.forecast.resources), not a fixed guess
        assert int(res["mem_mb"]) >= 4000 and int(res["runtime"]) >= 30 and int(res["gpu_mem_mb"]) > 0, j
        assert res["gpu_model"] in ("l40s", "a100", "h200"), j
    runtimes = {j["rule"]: int(j["resources"]["runtime"]) for j in gpu}
    assert len(set(runtimes.values())) > 3, runtimes  # per rule, not one 6-hour guess for all
    cpu = [j for j in paper_jobs if j["rule"] not in GPU_RULES]
    assert cpu and all("gpu" not in j["resources"] for j in cpu)
    assert all(int(j["resources"]["cpus_per_task"]) == j["threads"] for j in paper_jobs)


def test_no_gpu_job_has_nothing_to_evaluate(paper_jobs):
    # schema defaults only: the full validation looks the hub models up in the cache (CI is offline)
    cfg = validate_schema(yaml.safe_load((ROOT / "config" / "paper.yaml").read_text()))
    phases = defaultdict(list)
    for j in paper_jobs:
        w = j["wildcards"]
        if j["rule"] == "search_evaluate":
            phases[("search", w["model"], w["variant"], int(w["g"]), w["phase"])].append(int(w["shard"]))
        elif j["rule"] == "refine_evaluate":
            phases[("refine", w["model"], w["variant"], int(w["t"]), "hf")].append(int(w["shard"]))
        elif j["rule"] == "random_evaluate":
            phases[("random", w["model"], "", 0, "hf")].append(int(w["shard"]))
    assert phases
    empty = []
    for (kind, _, variant, step, phase), shards in phases.items():
        assert sorted(shards) == list(range(len(shards)))
        if kind == "search":
            n = phase_size(evolution_settings(cfg["search"], cfg["search"]["variants"][variant]), step, phase)
            assert len(shards) == min(cfg["search"]["shards"], n)
        elif kind == "refine":
            n = cfg["refine"]["q"]
        else:  # at equal cost: at least AutoQRA's generation-0 evaluations (known only at run time)
            assert len(shards) == cfg["random_search"]["shards"]
            n = cfg["search"]["population"]
        empty += [(kind, variant, step, phase, k) for k in shards if not shard_of(list(range(n)), k, len(shards))]
    assert empty == []
    single = [k for k in phases if k[2] == "single_fidelity"]
    assert single and all(k[4] == "hf" for k in single)  # single fidelity: no LF jobs at all
    counts = Counter(k[4] for k in phases if k[0] == "search" and k[2] == "autoqra" and k[3] > 0)
    assert counts == {"lf": 2 * 12, "hf": 2 * 12}
    hf_jobs = [len(v) for k, v in phases.items() if k[0] == "search" and k[3] > 0 and k[4] == "hf"
               and k[2] != "single_fidelity"]
    assert set(hf_jobs) == {cfg["search"]["promote"]}  # 6 promoted, 6 jobs (not 8 with two empty)


def test_bookkeeping_rules_run_on_the_submit_host(paper_jobs, tmp_path):
    local = rule_locality(tmp_path, MICRO)  # a rule-level property, the same for every config
    rules = {j["rule"] for j in paper_jobs}
    remote = {r for r in rules if not local[r]}
    assert remote == GPU_RULES | {"model_prepare"}, remote
    assert {"prefetch_model", "prefetch_data", "prefetch_lm_eval"} <= rules - remote  # downloads on the submit host
    counts = Counter(j["rule"] for j in paper_jobs)
    submitted = sum(counts[r] for r in remote)
    gpu = sum(counts[r] for r in GPU_RULES)
    print(f"paper.yaml on SLURM: {len(paper_jobs)} jobs, {submitted} submitted (sbatch without arrays), "
          f"{gpu} GPU jobs; {dict(counts)}")
    assert gpu == submitted - counts["model_prepare"]
