"""The study's combine step on a hand-made run directory: it copies the raw data (per-document results
compressed, plans, budgets) under the output directory, and ``--combine-only`` (``collect=False``)
rebuilds every table from those copies alone, after the run directory is gone."""

import json
import shutil

import numpy as np
import pandas as pd
from result_files import write

from autoqra.study import combine

METHODS = {"autoqra": {"plan": "search", "variant": "autoqra", "group": "autoqra", "label": "AutoQRA"},
           "qlora_nf4": {"plan": "uniform", "quantizer": "nf4", "bits": 4, "rank": 8, "label": "QLoRA NF4"},
           "sequential": {"plan": "sequential", "rank": 8, "label": "Sequential"}}
CFG = {"methods": METHODS, "models": ["m"], "search_space": {"bits": [2, 3, 4, 8], "ranks": [4, 8, 16]}}


def run_dir(root):
    rng = np.random.default_rng(0)
    auto = (rng.random((3, 60)) < 0.6).astype(float)
    runs = {"autoqra": auto, "qlora_nf4": auto, "sequential": (rng.random((3, 60)) < 0.4).astype(float)}
    docs = pd.DataFrame([{"model": "m", "method": m, "seed": s, "task": "synth_mc", "doc_id": d, "metric": "acc_norm",
                          "value": x[s, d]} for m, x in runs.items() for s in range(3) for d in range(60)])
    plan_hash = {"autoqra": "hq", "qlora_nf4": "hq", "sequential": "hs"}  # AutoQRA returned QLoRA's plan
    agg = pd.DataFrame([{"model": "m", "method": m, "group": METHODS[m].get("group", "baseline"),
                         "label": METHODS[m]["label"], "task": task, "metric": metric, "n_seeds": 3,
                         "mean": runs[m].mean(), "std": runs[m].mean(1).std(ddof=1), "memory_gb_analytic": 0.06,
                         "memory_gb_measured": 0.06, "quantizers": "nf4", "avg_bits": 4.0, "avg_rank": 8.0,
                         "trainable_params": 1, "plan_hash": plan_hash[m], "within_budget": True,
                         "train_seconds": 60.0, "tokens_per_s": 1.0, "peak_train_gb": 0.6}
                        for m in METHODS for task, metric in (("synth_mc", "acc_norm"), ("average", "main"))])
    write(root / "results/summary/docs.tsv", docs)
    write(root / "results/summary/aggregate.tsv", agg)
    write(root / "results/memory/m/budget.json", {"plan_bytes": 6e7})
    for m in METHODS:
        write(root / f"results/methods/m/{m}/plan.json", {"bits": [4] * 4, "ranks": [8] * 4})
    (root / "results/logs").mkdir(parents=True)
    (root / "results/logs/not_raw.log").write_text("not copied")
    return root


def test_combine_copies_raw_data_and_rebuilds_tables_from_it(tmp_path):
    run, out = run_dir(tmp_path / "work" / "b4"), tmp_path / "out"
    first = combine({"b4": {"dir": str(run), "budget": {"type": "uniform", "bits": 4}, "command": [],
                            "wall_seconds": 12.5}}, CFG, out)
    raw = out / "b4" / "results"
    assert (raw / "summary/docs.tsv.gz").is_file() and not (raw / "summary/docs.tsv").exists()
    assert (raw / "methods/m/sequential/plan.json").is_file() and (raw / "memory/m/budget.json").is_file()
    assert not (raw / "logs").exists() and first["runs"]["b4"]["raw_files"] == 6
    t1 = pd.read_csv(out / "table1_main.csv").set_index("Method")
    assert t1.loc["QLoRA NF4", "Δ vs AutoQRA"] == "+0.0 [+0.0, +0.0] (same plan as autoqra)"
    unc = pd.read_csv(out / "uncertainty.tsv", sep="\t")
    seq = unc[(unc.method == "sequential") & (unc.task == "average")].iloc[0]
    assert seq.pairing == "seeds + documents" and seq.delta_lo < seq.delta < seq.delta_hi
    t5 = pd.read_csv(out / "table5_claims.csv")
    assert t5.loc[t5.Claim.str.startswith("AutoQRA ≥ QLoRA"), "Ours [95 % CI]"].iloc[0].startswith(
        "returned QLoRA's plan: no gain")
    tables = {f: (out / f).read_text() for f in ("table1_main.csv", "table3_ablations.csv", "table5_claims.csv")}
    shutil.rmtree(tmp_path / "work")  # only the committed files are left
    again = combine({"b4": {"dir": str(run), "budget": {"type": "uniform", "bits": 4}, "command": [],
                            "wall_seconds": None}}, CFG, out, collect=False)
    assert {f: (out / f).read_text() for f in tables} == tables
    assert again["runs"]["b4"]["wall_seconds"] == 12.5
    assert json.loads((out / "study.json").read_text())["runs"]["b4"]["raw_data"] == "b4/results"


def test_an_ablations_run_gives_table3_rows_only(tmp_path):
    """study.ablation_run: separate: the <budget>-ablations run enters Table 3, not Table 1 or the claims
    (its AutoQRA is its budget run's), and no shared method is pooled into it."""
    run, abl, out = run_dir(tmp_path / "work" / "b4"), run_dir(tmp_path / "work" / "b4-ablations"), tmp_path / "out"
    entry = {"budget": {"type": "uniform", "bits": 4}, "command": [], "wall_seconds": 1.0}
    summary = combine({"b4": {**entry, "dir": str(run)}, "b4-ablations": {**entry, "dir": str(abl), "role": "ablations"}},
                      CFG, out, shared=["qlora_nf4"])
    assert set(pd.read_csv(out / "table1_main.csv").Model) == {"m @ b4"}
    assert not pd.read_csv(out / "table5_claims.csv").Model.str.contains("ablations").any()
    assert set(pd.read_csv(out / "table3_ablations.csv").Model) == {"m @ b4", "m @ b4-ablations"}
    assert summary["runs"]["b4-ablations"]["role"] == "ablations"
    assert set(pd.read_csv(out / "uncertainty.tsv", sep="\t").budget) == {"b4", "b4-ablations"}
