"""`autoqra study` end to end on a micro-sized study: the pipeline once per budget (uniform HQQ 2-bit and
4-bit) sharing one cache, the budget-independent methods run once, then the combined tables."""

import json
import os
import shutil

import pandas as pd
import pytest
import yaml
from workflow_runner import MICRO, OFFLINE, ROOT

pytestmark = pytest.mark.integration


def test_study_runs_both_budgets_and_combines(tmp_path, monkeypatch):
    from autoqra.study import run_study

    cfg = yaml.safe_load(MICRO.read_text())
    cfg["search"]["variants"] = {"autoqra": {}}
    cfg["methods"] = {m: s for m, s in cfg["methods"].items() if m in ("autoqra", "base", "lora16", "qlora_nf4",
                                                                        "hqq4", "no_stage2")}
    cfg["optuna_search"] = {"enabled": False}
    cfg["study"] = {"budgets": {"b2": {"type": "uniform", "bits": 2, "rank": 8, "quantizer": "hqq"},
                                "b4": {"type": "uniform", "bits": 4, "rank": 8, "quantizer": "hqq"}},
                    "shared_methods": ["base", "lora16", "qlora_nf4", "hqq4"],
                    "work_dir": str(tmp_path / "work"), "out_dir": str(tmp_path / "out")}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    work, out = tmp_path / "work", tmp_path / "out"
    # a study spanning sessions: the first budget now, then the whole study (b2 resumes: nothing to do)
    first = run_study(path, cores=2, root=ROOT, budgets=["b2"])
    assert set(first["runs"]) == {"b2"} and set(pd.read_csv(out / "table1_main.csv").Model) == {"micro @ b2"}
    with pytest.raises(Exception, match="--budgets"):
        run_study(path, cores=2, root=ROOT, budgets=["b9"])
    summary = run_study(path, cores=2, root=ROOT)
    assert set(summary["runs"]) == {"b2", "b4"} and all(r["wall_seconds"] > 0 for r in summary["runs"].values())
    b2 = summary["runs"]["b2"]  # its wall time covers both invocations
    assert len(b2["invocations"]) == 2 and b2["wall_seconds"] == pytest.approx(sum(w["seconds"] for w in b2["invocations"]))
    assert b2["wall_seconds"] > first["runs"]["b2"]["wall_seconds"]
    budgets = {b: json.loads((work / b / "results/memory/micro/budget.json").read_text())["plan_bytes"]
               for b in ("b2", "b4")}
    assert budgets["b2"] < budgets["b4"]
    # one shared cache; the shared methods were fine-tuned only for the first budget
    assert {yaml.safe_load((work / b / "config.yaml").read_text())["cache_dir"] for b in ("b2", "b4")} == \
        {str(work / "cache")}
    assert (work / "b2/results/finetune/micro/lora16").is_dir() and not (work / "b4/results/finetune/micro/lora16").exists()
    t1 = pd.read_csv(out / "table1_main.csv")
    assert set(t1.Model) == {"micro @ b2", "micro @ b4"}
    b4 = t1[t1.Model == "micro @ b4"].Method.tolist()
    assert b4[0] == "AutoQRA" and {"LoRA (16-bit)†", "QLoRA (NF4)", "Base (untuned)†"} <= set(b4)  # pooled from b2
    assert "QLoRA (NF4)†" in t1[t1.Model == "micro @ b2"].Method.tolist()  # pooled, but over the tighter budget
    plan2 = json.loads((work / "b2/results/final/micro/autoqra/plan.json").read_text())
    assert plan2["meta"]["memory_bytes"] <= budgets["b2"]
    t5 = pd.read_csv(out / "table5_claims.csv")
    assert len(t5) == 2 * 9 + 1 and set(t5.Model) == {"micro @ b2", "micro @ b4", "micro @ all budgets"}
    qlora = t5[t5.Claim.str.startswith("AutoQRA ≥ QLoRA")]
    assert qlora["Ours [95 % CI]"].str.contains(r"\[").all()  # both budgets have the pooled QLoRA to compare with
    unc = pd.read_csv(out / "uncertainty.tsv", sep="\t")
    assert set(unc.budget) == {"b2", "b4"} and set(unc[unc.budget == "b4"].method) >= {"autoqra", "lora16", "base"}
    assert (out / "b4/paper_figures/fig2_pareto_micro.png").is_file() and (out / "study.json").is_file()
    assert os.path.relpath(work, ROOT) in json.loads((out / "study.json").read_text())["runs"]["b2"]["dir"]
    assert (out / "table5_claims.md").read_text().startswith("| Model | Claim |")
    assert (out / "b4/results/summary/docs.tsv.gz").is_file()  # raw data committed with the tables
    assert (out / "b4/results/methods/micro/autoqra/plan.json").is_file()
    # redrawing the tables from the copied raw data alone keeps the wall times the full run measured
    tables = (out / "table1_main.csv").read_text()
    shutil.rmtree(work)
    again = run_study(path, cores=2, root=ROOT, combine_only=True)
    assert (out / "table1_main.csv").read_text() == tables
    assert {b: r["wall_seconds"] for b, r in again["runs"].items()} == \
        {b: r["wall_seconds"] for b, r in summary["runs"].items()}
