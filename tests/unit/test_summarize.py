"""Tidy summary tables from hand-made fine-tuning records and lm-eval outputs (no torch)."""

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

from autoqra.lmeval import tidy_results
from autoqra.pipeline.summarize import main_metric, summarize


def write(path: Path, obj) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return str(path)


def lm_result(method, seed, acc, em):
    return {"method": method, "seed": seed, "versions": {"t_mc": 1.0, "t_gen": 1.0},
            "results": {"t_mc": {"alias": "t_mc", "acc,none": acc, "acc_stderr,none": "N/A", "acc_norm,none": acc / 2},
                        "t_gen": {"alias": "t_gen", "exact_match,first_line": em,
                                  "exact_match_stderr,first_line": 0.01}}}


def train_record(method, seed, mem):
    return {"method": method, "seed": seed, "memory_analytic_bytes": mem, "memory_measured_bytes": mem * 1.1,
            "fixed_bytes": 1e8, "peak_train_bytes": 5e8, "avg_bits": 4.0, "bits_per_weight_stored": 4.5, "avg_rank": 8.0,
            "trainable_params": 1000, "train_seconds": 10.0 + seed, "tokens_per_s": 50.0, "steps": 12, "plan_hash": f"{method}-hash",
            "build_seconds": 1.0}


def test_tidy_results_drops_stderr_and_names_filters():
    rows = tidy_results(lm_result("a", 0, 0.5, 0.25))
    assert {(r["task"], r["metric"]) for r in rows} == {("t_mc", "acc"), ("t_mc", "acc_norm"),
                                                         ("t_gen", "exact_match[first_line]")}
    em = next(r for r in rows if r["task"] == "t_gen")
    assert em["stderr"] == 0.01 and em["value"] == 0.25
    assert main_metric(["acc_norm", "acc"]) == "acc" and main_metric(["exact_match[x]"]) == "exact_match[x]"


def test_summarize_means_and_stds_over_seeds(tmp_path):
    r = tmp_path / "results"
    inputs = {"train": [], "lm_eval": [], "plans": [], "fronts": [], "random": [], "sensitivity": []}
    values = {("a", 0): (0.5, 0.2), ("a", 1): (0.7, 0.4), ("b", 0): (0.3, 0.0)}
    for (m, s), (acc, em) in values.items():
        inputs["train"].append(write(r / f"finetune/mod/{m}/s{s}/train.json", train_record(m, s, 2e7)))
        inputs["lm_eval"].append(write(r / f"lm_eval/mod/{m}/s{s}.json", lm_result(m, s, acc, em)))
    for m in ("a", "b"):
        inputs["plans"].append(write(r / f"methods/mod/{m}/plan.json", {"bits": [4], "ranks": [8],
                                                                         "meta": {"within_budget": True}}))
    inputs["sensitivity"].append(write(r / "sensitivity/mod/correlations.json", {"timings": {"total": 12.5}}))
    out = SimpleNamespace(results=tmp_path / "s/results.tsv", aggregate=tmp_path / "s/aggregate.tsv",
                          search_cost=tmp_path / "s/search_cost.tsv", manifest=tmp_path / "s/manifest.json")
    methods = {"a": {"group": "autoqra", "label": "A"}, "b": {"group": "baseline", "label": None}}
    summarize(inputs, methods, out)
    res = pd.read_csv(out.results, sep="\t")
    assert len(res) == 3 * 4  # 3 runs x (acc, acc_norm, exact_match, average)
    avg = res[(res.task == "average") & (res.method == "a")].sort_values("seed")
    assert avg.value.tolist() == pytest.approx([(0.5 + 0.2) / 2, (0.7 + 0.4) / 2])
    assert set(res.memory_gb_analytic) == {0.02} and set(res.label) == {"A", "b"}
    assert set(res.bits_stored) == {4.5} and set(res.avg_bits) == {4.0}  # stored (incl. metadata) beside nominal
    agg = pd.read_csv(out.aggregate, sep="\t")
    row = agg[(agg.method == "a") & (agg.task == "t_mc") & (agg.metric == "acc")].iloc[0]
    assert row.n_seeds == 2 and row["mean"] == pytest.approx(0.6) and row["std"] == pytest.approx(0.1414214, rel=1e-5)
    assert row.train_seconds == pytest.approx(10.5)
    single = agg[(agg.method == "b") & (agg.task == "t_mc") & (agg.metric == "acc")].iloc[0]
    assert single.n_seeds == 1 and pd.isna(single["std"])
    cost = pd.read_csv(out.search_cost, sep="\t")
    assert cost.set_index("stage").loc["stage0_sensitivity", "device_seconds"] == 12.5
    assert cost.set_index("stage").loc["finetune", "evaluations"] == 3
    assert json.loads(out.manifest.read_text())["stage"] == "summarize"


def docs_tsv(path: Path, correct, general_ll) -> str:
    rows = [("t_mc", i, "acc", float(c)) for i, c in enumerate(correct)]
    rows += [("t_gen", i, "exact_match[first_line]", 0.0) for i in range(len(correct))]
    for i, ll in enumerate(general_ll):
        rows += [("general_text", i, "loglikelihood", ll), ("general_text", i, "bytes", 100.0),
                 ("general_text", i, "words", 20.0), ("general_text", i, "tokens", 25.0)]
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=["task", "doc_id", "metric", "value"]).to_csv(path, sep="\t", index=False)
    return str(path)


def test_summarize_per_document_intervals(tmp_path):
    """docs.tsv pools every run's documents; uncertainty.tsv has CIs and Δ vs the AutoQRA method;
    nats/token of the rolling task is derived per run; the average leaves the perplexity task out."""
    r = tmp_path / "results"
    inputs = {"train": [], "lm_eval": [], "docs": [], "plans": [], "fronts": [], "random": [], "sensitivity": []}
    n = 200
    for m, acc, ll in (("auto", 0.5, -50.0), ("better", 0.8, -75.0)):
        correct = [1 if i < acc * n else 0 for i in range(n)]
        inputs["train"].append(write(r / f"finetune/mod/{m}/s0/train.json", train_record(m, 0, 2e7)))
        res = lm_result(m, 0, acc, 0.0)
        res["results"]["general_text"] = {"bits_per_byte,none": 1.0, "word_perplexity,none": 5.0}
        inputs["lm_eval"].append(write(r / f"lm_eval/mod/{m}/s0.json", res))
        inputs["docs"].append(docs_tsv(r / f"lm_eval/mod/{m}/s0.docs.tsv", correct, [ll] * 10))
        inputs["plans"].append(write(r / f"methods/mod/{m}/plan.json", {"bits": [4], "ranks": [8]}))
    out = SimpleNamespace(**{k: tmp_path / f"s/{k}.tsv" for k in ("results", "aggregate", "search_cost", "docs",
                                                                   "uncertainty")}, manifest=tmp_path / "s/m.json")
    methods = {"auto": {"group": "autoqra"}, "better": {"group": "baseline"}}
    summarize(inputs, methods, out, n_boot=500)
    res = pd.read_csv(out.results, sep="\t")
    npt = res[(res.task == "general_text") & (res.metric == "nats_per_token")].set_index("method").value
    assert npt["auto"] == pytest.approx(2.0) and npt["better"] == pytest.approx(3.0)  # 500/250, 750/250
    avg = res[res.task == "average"].set_index("method").value
    assert avg["auto"] == pytest.approx((0.5 + 0.0) / 2)  # t_mc acc and t_gen exact match only
    unc = pd.read_csv(out.uncertainty, sep="\t").set_index(["method", "task", "metric"])
    row = unc.loc[("better", "t_mc", "acc")]
    assert row["delta"] == pytest.approx(0.3) and row.resolved and row.reference == "auto" and row.n_docs == n
    g = unc.loc[("better", "general_text", "nats_per_token")]
    assert g["delta"] == pytest.approx(1.0) and g.lower_is_better
    assert len(pd.read_csv(out.docs, sep="\t")) == 2 * (2 * n + 4 * 10)
