"""Paper tables and figures from small hand-made result files (no torch, no pipeline run)."""

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from result_files import write

from autoqra.report import figures as F
from autoqra.report import paper_targets, plotting
from autoqra.report.load import ReportInputError, read_aggregate
from autoqra.report.tables import (
    latex_escape,
    latex_tabular,
    markdown_table,
    mean_std,
    table_ablations,
    table_main,
    table_search_cost,
    write_tables,
)

MODEL = "tiny"
BUDGET = 100e6
METHODS = {  # config order: a baseline first, to check that AutoQRA still leads the tables
    "hqq4": {"group": "baseline", "label": "HQQ 4-bit"},
    "autoqra": {"group": "autoqra", "label": "AutoQRA"},
    "lora16": {"group": "baseline", "label": "LoRA 16-bit"},
    "no_stage2": {"group": "ablation", "label": "w/o Stage 2"},
}


def aggregate_rows():
    # (method, group, label, n_seeds, within_budget, memory GB, {(task, metric): (mean, std)})
    runs = [("autoqra", "autoqra", "AutoQRA", 2, True, 0.0573,
             {("t_mc", "acc"): (0.5, 0.1), ("t_mc", "acc_norm"): (0.9, 0.0), ("t_gen", "exact_match[x]"): (0.3, 0.1),
              ("average", "main"): (0.4, 0.05)}),
            ("hqq4", "baseline", "HQQ 4-bit", 1, True, 0.0646,
             {("t_mc", "acc"): (0.3, None), ("t_mc", "acc_norm"): (0.2, None), ("t_gen", "exact_match[x]"): (0.1, None),
              ("average", "main"): (0.2, None)}),
            ("lora16", "baseline", "LoRA 16-bit", 2, False, 0.2172,
             {("t_mc", "acc"): (0.6, 0.0), ("t_gen", "exact_match[x]"): (0.2, 0.0), ("average", "main"): (0.4, 0.0)}),
            ("no_stage2", "ablation", "w/o Stage 2", 1, True, 0.0571,
             {("t_mc", "acc"): (0.45, None), ("t_gen", "exact_match[x]"): (0.25, None),
              ("average", "main"): (0.35, None)})]
    rows = []
    for method, group, label, n, ok, mem, values in runs:
        for (task, metric), (mean, std) in values.items():
            rows.append({"model": MODEL, "method": method, "group": group, "label": label, "task": task,
                         "metric": metric, "n_seeds": n, "mean": mean, "std": std, "memory_gb_analytic": mem,
                         "memory_gb_measured": mem * 1.1, "avg_bits": 3.5 if group != "baseline" else 4.0,
                         # stored bits per weight incl. metadata (issue #22): not the nominal bits
                         "bits_stored": {"autoqra": 3.6875, "lora16": 16.0}.get(method, 4.5),
                         "avg_rank": 8.0, "trainable_params": 2401536, "plan_hash": f"{method}-h",
                         "within_budget": ok, "train_seconds": 30.0, "tokens_per_s": 48.25, "peak_train_gb": 0.2})
    return pd.DataFrame(rows)


@pytest.fixture
def results(tmp_path):
    """A small results/ tree for one model with 4 blocks."""
    r = tmp_path / "results"
    paths = {"aggregate": write(r / "summary/aggregate.tsv", aggregate_rows())}
    cost = pd.DataFrame([
        {"model": MODEL, "stage": "stage1_search", "variant": "autoqra", "lf_evaluations": 12, "hf_evaluations": 8,
         "evaluations": 20, "trained": 12, "device_seconds": 360.0, "device_hours": 0.1,
         "trained_device_hours": 0.06},  # 8 of its 20 evaluations came from the shared cache
        {"model": MODEL, "stage": "stage0_sensitivity", "variant": None, "lf_evaluations": 0, "hf_evaluations": 0,
         "evaluations": 0, "trained": 0, "device_seconds": 72.0, "device_hours": 0.02},
        {"model": MODEL, "stage": "stage2_refine", "variant": "autoqra", "lf_evaluations": 0, "hf_evaluations": 2,
         "evaluations": 2, "trained": 2, "device_seconds": 18.0, "device_hours": 0.005, "hf_equivalents": 2.0},
        {"model": MODEL, "stage": "search_pick", "variant": "autoqra", "lf_evaluations": 0, "hf_evaluations": 4,
         "evaluations": 4, "trained": 4, "device_seconds": 36.0, "device_hours": 0.01, "hf_equivalents": 4.0}])
    cost.loc[0, "hf_equivalents"] = 14.6  # 12 LF at 0.55 HF each + 8 HF
    paths["search_cost"] = write(r / "summary/search_cost.tsv", cost)
    paths["budget"] = write(r / f"memory/{MODEL}/budget.json",
                            {"plan_bytes": BUDGET, "description": "uniform 4-bit at rank 8"})
    archive = [{"genome": [], "score": s, "memory": m, "fidelity": f, "generation": g}
               for s, m, f, g in [(-5.0, 80e6, "lf", 0), (-3.0, 80e6, "hf", 0), (-2.5, 95e6, "hf", 1),
                                  (None, 90e6, "hf", 1), (-2.8, 85e6, "hf", 1)]]
    front = [{"plan_hash": "b", "hf_score": -2.5, "memory_bytes": 95e6, "genome": []},
             {"plan_hash": "a", "hf_score": -2.8, "memory_bytes": 85e6, "genome": []}]
    for v in ("autoqra", "no_warm_start"):
        paths[f"front_{v}"] = write(r / f"search/{MODEL}/{v}/front.json",
                                    {"front": front, "archive": archive, "budget_bytes": BUDGET})
        paths[f"hv_{v}"] = write(r / f"search/{MODEL}/{v}/hypervolume.tsv",
                                 pd.DataFrame({"generation": [0, 1, 2], "hypervolume": [0.05, 0.08, 0.09]}))
    obs = [{"genome": [], "score": s, "memory": m, "origin": o, "utility": u}
           for s, m, o, u in [(-3.0, 80e6, -1, 0.1), (-2.8, 85e6, -1, 0.3), (-2.5, 95e6, -1, 0.4),
                              (-2.4, 99e6, 0, 0.45), (None, 90e6, 0, None), (-2.3, 120e6, 1, 0.9),
                              (-2.6, 88e6, 1, 0.35)]]
    traj = [{"iteration": 0, "radius": 2, "radius_after": 4, "best_utility": 0.4, "best_utility_after": 0.45,
             "success": True},
            {"iteration": 1, "radius": 4, "radius_after": 2, "best_utility": 0.45, "best_utility_after": 0.45,
             "success": False}]
    paths["history"] = write(r / f"final/{MODEL}/autoqra/history.json",
                             {"final": {"plan_hash": "c", "hf_score": -2.4, "memory_bytes": 99e6, "utility": 0.45,
                                        "budget_bytes": BUDGET}, "trajectory": traj, "observations": obs})
    paths["plan"] = write(r / f"final/{MODEL}/autoqra/plan.json",
                          {"bits": [4, 2, 3, 8], "ranks": [16, 4, 8, 8], "backend": "hqq", "group_size": 64})
    paths["priors"] = write(r / f"sensitivity/{MODEL}/priors.tsv", pd.DataFrame(
        {"block": [0, 1, 2, 3], "iq_raw": [0.2, 0.0, 0.1, 0.4], "iq_norm": [0.5, 0.0, 0.25, 1.0],
         "ir_raw": [3.0, 1.0, 2.0, 2.5], "ir_norm": [1.0, 0.0, 0.5, 0.75], "combined": [0.75, 0.0, 0.375, 0.875]}))
    paths["correlations"] = write(r / f"sensitivity/{MODEL}/correlations.json",
                                  {"correlations": {"pearson": 0.62, "spearman": 0.8, "topk_overlap": 0.5, "k": 2}})
    rnd = [{"genome": [], "plan_hash": str(i), "score": s, "memory": m, "utility": 0.0, "quant_error": q}
           for i, (s, m, q) in enumerate([(-3.0, 90e6, 0.1), (-2.7, 95e6, 0.2), (None, 80e6, 0.3),
                                          (-2.6, 99e6, 0.4), (-2.2, 150e6, 0.5), (-2.9, 70e6, 0.6)])]
    paths["random"] = write(r / f"random/{MODEL}/summary.json", {"observations": rnd, "budget_bytes": BUDGET})
    trials = [{"number": i, "plan_hash": str(i), "score": s, "memory": m, "feasible": m <= BUDGET}
              for i, (s, m) in enumerate([(-3.1, 99e6), (-2.0, 110e6), (-2.9, 60e6)])]
    paths["optuna"] = write(r / f"optuna/{MODEL}/summary.json",
                            {"sampler": "tpe", "trials": trials, "budget_bytes": BUDGET})
    paths["methods_hf"] = write(r / f"methods_hf/{MODEL}.tsv", pd.DataFrame([
        {"method": "autoqra", "label": "AutoQRA", "group": "autoqra", "plan_hash": "c", "memory_bytes": 99e6,
         "hf_score": -2.45, "status": "ok"},
        {"method": "random", "label": "Random search", "group": "baseline", "plan_hash": "r", "memory_bytes": 98e6,
         "hf_score": -2.65, "status": "ok"},
        {"method": "hqq4", "label": "HQQ 4-bit", "group": "baseline", "plan_hash": "d", "memory_bytes": 100e6,
         "hf_score": -2.7, "status": "ok"},
        {"method": "lora16", "label": "LoRA 16-bit", "group": "baseline", "plan_hash": "e", "memory_bytes": 400e6,
         "hf_score": -2.1, "status": "ok"},
        {"method": "hqq2", "label": "HQQ 2-bit", "group": "baseline", "plan_hash": "f", "memory_bytes": 50e6,
         "hf_score": None, "status": "failed"}]))
    return paths


# ---------------------------------------------------------------- tables


def test_mean_std_and_latex_escape():
    assert mean_std(0.5, 0.1, 2) == "50.0 ± 10.0"
    assert mean_std(0.3, float("nan"), 1) == "30.0"
    assert mean_std(0.3, 0.2, 1) == "30.0"  # one seed: no std even if a value is present
    assert mean_std(float("nan"), 0.1, 2) == "—"
    assert latex_escape("w/o 50% & exact_match") == r"w/o 50\% \& exact\_match"
    assert latex_escape("1.0 ± 0.2") == r"1.0 $\pm$ 0.2"


def test_table_main_values_and_order(results):
    t = table_main(read_aggregate(results["aggregate"]), METHODS, [MODEL])
    assert list(t["Method"]) == ["AutoQRA", "HQQ 4-bit", "LoRA 16-bit†"]  # AutoQRA first, no ablation
    assert list(t.columns) == ["Model", "Method", "t_gen (exact_match[x])", "t_mc (acc)", "Average", "Memory (GB)",
                               "Avg. bits", "bits/weight (stored)"]
    auto, hqq, lora = (t.iloc[i] for i in range(3))
    assert auto["t_mc (acc)"] == "50.0 ± 10.0" and auto["t_gen (exact_match[x])"] == "30.0 ± 10.0"
    assert auto["Average"] == "40.0 ± 5.0" and auto["Memory (GB)"] == "0.057" and auto["Avg. bits"] == "3.50"
    assert hqq["t_mc (acc)"] == "30.0" and hqq["Average"] == "20.0"  # one seed: no std
    assert lora["Memory (GB)"] == "0.217"
    # nominal bits beside the bits per weight really stored (metadata included)
    assert (auto["bits/weight (stored)"], hqq["Avg. bits"], hqq["bits/weight (stored)"]) == ("3.69", "4.00", "4.50")
    assert lora["bits/weight (stored)"] == "16.00"


def test_table_ablations_delta(results):
    t = table_ablations(read_aggregate(results["aggregate"]), METHODS, [MODEL])
    assert list(t["Method"]) == ["AutoQRA", "w/o Stage 2"]
    assert t.iloc[0]["Δ vs AutoQRA"] == "—"
    assert t.iloc[1]["Δ vs AutoQRA"] == "−5.0" and t.iloc[1]["Average"] == "35.0"  # 35.0 - 40.0 points
    assert list(t["bits/weight (stored)"]) == ["3.69", "4.50"] and list(t["Avg. bits"]) == ["3.50", "3.50"]


def test_table_search_cost_totals(results):
    from autoqra.report.load import read_search_cost

    t, totals = table_search_cost(read_search_cost(results["search_cost"]), [MODEL])
    assert list(t["Stage"]) == ["Stage 0 (sensitivity)", "Stage 1 (search)", "Stage 2 (refinement)",
                                "Noise-robust pick", "AutoQRA cost (equal-cost budget)", "Total"]
    assert totals == [5]
    total = t.iloc[5]
    assert (total["LF evals"], total["HF evals"], total["Trained"]) == (12, 14, 18)
    assert t.iloc[1]["Device-h (alone)"] == "0.1000" and t.iloc[1]["Device-h (paid)"] == "0.0600"
    assert total["Device-h (paid)"] == "0.0950"  # 0.06 + 0.02 + 0.005 + 0.01: cached evaluations not paid twice
    # HF-equivalents per stage, and AutoQRA's total: the budget the equal-cost searchers were given
    assert list(t["HF-equiv."]) == ["—", "14.6", "2.0", "4.0", "20.6", "—"]


def test_write_tables_csv_and_latex(results, tmp_path):
    from autoqra.report import TABLES

    out = {f"{n}_{e}": tmp_path / f"paper/{n}.{e}" for n in TABLES for e in ("csv", "tex")}
    tables = write_tables(results["aggregate"], results["search_cost"], METHODS, out, models=[MODEL])
    eff = pd.read_csv(out["table2_efficiency_csv"], dtype=str)
    assert len(eff) == 4 and eff.iloc[0]["Trainable params"] == "2,401,536" and eff.iloc[0]["Tokens/s"] == "48.2"
    tex = Path(out["table1_main_tex"]).read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\begin{tabular}{llrrrrrr}" in tex
    assert r"tiny & AutoQRA & 30.0 $\pm$ 10.0 & 50.0 $\pm$ 10.0 & 40.0 $\pm$ 5.0 & 0.057 & 3.50 & 3.69 \\" in tex
    assert r" & HQQ 4-bit & 10.0 & 30.0 & 20.0 & 0.065 & 4.00 & 4.50 \\" in tex  # model printed once per group
    assert r"LoRA 16-bit\textsuperscript{\dag}" in tex and r"exact\_match" in tex
    cost_tex = Path(out["table4_search_cost_tex"]).read_text()
    assert "\\midrule\n & Total &  & 12 & 14 & --- & 18 & --- & 0.0950 \\\\" in cost_tex
    assert set(tables) == set(TABLES)


def test_latex_tabular_groups_models():
    df = pd.DataFrame({"Model": ["a", "a", "b"], "Method": ["x", "y", "x"], "Score": ["1", "2", "3"]})
    body = latex_tabular(df).splitlines()
    assert body[5:10] == [r"a & x & 1 \\", r" & y & 2 \\", r"\midrule", r"b & x & 3 \\", r"\bottomrule"]


def test_markdown_table_aligns_numbers_and_escapes_pipes():
    df = pd.DataFrame({"Claim": ["a | b", "c"], "n": [3, 4], "Ours": ["1.0 [0.5, 1.5]", None]})
    assert markdown_table(df).splitlines() == ["| Claim | n | Ours |", "| --- | ---: | --- |",
                                               "| a \\| b | 3 | 1.0 [0.5, 1.5] |", "| c | 4 |  |"]


def test_reader_names_missing_columns(tmp_path):
    bad = write(tmp_path / "aggregate.tsv", pd.DataFrame({"model": ["m"], "method": ["a"]}))
    with pytest.raises(ReportInputError, match="aggregate.tsv: missing columns"):
        read_aggregate(bad)


def test_paper_targets_lists_every_file():
    t = paper_targets(["m1", "m2"], with_random=True)
    assert "paper_figures/table1_main.tex" in t and "paper_figures/fig1_quant_error_vs_score_m2.png" in t
    assert len(t) == 5 * 2 + 6 * 2 * 2  # tables 1-4 and the claims table 5, each csv + tex
    assert "paper_figures/table5_claims.csv" in t
    assert not any("fig1" in p for p in paper_targets(["m1"], with_random=False))


# ---------------------------------------------------------------- figures


def labelled(fig):
    for ax in fig.axes:
        if ax.get_label() == "<colorbar>":
            continue
        assert ax.get_xlabel() or ax.get_ylabel(), f"axes {ax} has no label"
    return True


def legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_best_so_far_counts_only_feasible_scored():
    got = plotting.best_so_far([float("nan"), -3.0, -2.0, -2.5, -2.9], [1, 1, 5, 1, 1], budget=2)
    assert np.isnan(got[0]) and list(got[1:]) == [-3.0, -3.0, -2.5, -2.5]


def test_fig1_spearman_and_files(results, tmp_path):
    out = [tmp_path / "f1.pdf", tmp_path / "f1.png"]
    fig = F.fig1_quant_error_vs_score(results["random"], MODEL, out=out)
    ax = fig.axes[0]
    assert "nats/token" in ax.get_xlabel() and "nats/token" in ax.get_ylabel() and MODEL in ax.get_title()
    # feasible scored plans: q = 0.1, 0.2, 0.4, 0.6 with scores -3.0, -2.7, -2.6, -2.9 -> ranks 1,3,4,2 vs 1,2,3,4
    rho = F.spearman([0.1, 0.2, 0.4, 0.6], [-3.0, -2.7, -2.6, -2.9])
    assert rho == pytest.approx(0.4)
    legend = fig.legends[0]
    assert legend.get_title().get_text() == "Spearman ρ = 0.40 (n = 4)"
    assert "2 failed/infeasible not shown" in [t.get_text() for t in legend.get_texts()]
    assert fig.axes[1].get_ylabel() == "Memory M(C) (MB)"  # colorbar
    for p in out:
        assert p.stat().st_size > 1000
    assert out[0].read_bytes()[:4] == b"%PDF" and out[1].read_bytes()[:4] == b"\x89PNG"


def test_fig1_without_random_search():
    fig = F.fig1_quant_error_vs_score(None, MODEL)
    assert "random search not run" in [t.get_text() for t in fig.axes[0].texts]


def test_fig2_pareto_broken_axis_for_far_baselines(results, tmp_path):
    out = [tmp_path / "f2.png"]
    fig = F.fig2_pareto(results["front_autoqra"], results["history"], results["budget"], MODEL,
                        methods_hf=results["methods_hf"], out=out,
                        labels={"hqq4": "HQQ 4-bit", "lora16": "LoRA 16-bit", "hqq2": "HQQ 2-bit"})
    main, far = fig.axes
    assert main.get_xlabel() == "Memory M(C) (MB)" and "HF score" in main.get_ylabel()
    assert far.get_xlim()[0] < 400 < far.get_xlim()[1]  # 16-bit LoRA drawn beyond the budget
    assert main.get_xlim()[0] < 80 < 100 < main.get_xlim()[1]  # all searched plans and the budget line
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "HQQ 4-bit" in texts and "LoRA 16-bit" in texts and "HQQ 2-bit" not in texts  # failed: not drawn
    assert "AutoQRA" not in texts  # the final plan is the star, not a labelled baseline
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "budget (uniform 4-bit at rank 8)" in legend and "AutoQRA final plan (held-out seed)" in legend
    star = next(c for c in main.collections if c.get_label() == "AutoQRA final plan (held-out seed)")
    assert star.get_offsets()[0][1] == pytest.approx(-2.45)  # methods_hf's held-out score, not the search's
    assert MODEL in fig.get_suptitle() and out[0].stat().st_size > 1000


def test_fig2_without_methods_hf(results):
    fig = F.fig2_pareto(results["front_autoqra"], results["history"], results["budget"], MODEL)
    assert len(fig.axes) == 1
    assert "baselines: no HF scores" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_fig3_curves_and_missing_optional(results):
    hvs = {v: results[f"hv_{v}"] for v in ("autoqra", "no_warm_start")}
    fig = F.fig3_search_efficiency(hvs, results["history"], results["budget"], MODEL,
                                   random_summary=results["random"], optuna_summary=results["optuna"])
    left, right = fig.axes
    assert left.get_xlabel() == "Generation" and right.get_xlabel() == "HF evaluations" and labelled(fig)
    assert legend_texts(left) == ["autoqra", "no_warm_start"]
    lines = {ln.get_label(): ln for ln in right.lines}
    # AutoQRA: -3.0, -2.8, -2.5, -2.4, failed, 120 MB (infeasible), -2.6
    assert list(lines["AutoQRA"].get_ydata()) == [-3.0, -2.8, -2.5, -2.4, -2.4, -2.4, -2.4]
    rnd = lines["random search"].get_ydata()
    assert list(rnd) == [-3.0, -2.7, -2.7, -2.6, -2.6, -2.6]  # failed and 150 MB plans do not count
    opt = lines["optuna tpe"].get_ydata()
    assert opt[0] == -3.1 and opt[1] == -3.1 and opt[2] == -2.9  # trial 1 is over budget
    fig = F.fig3_search_efficiency(hvs, results["history"], results["budget"], MODEL)
    assert {"random search: not run", "optuna: not run"} <= set(legend_texts(fig.axes[1]))


def test_fig3_x_axis_is_the_cost_in_hf_equivalents(results, tmp_path):
    """With the costs recorded (history cost_curve, summaries' cost): AutoQRA's curve runs over its
    LF + HF cost, the equal-cost searchers end at their total, the picks' held-out scores are marked."""

    hist = json.loads(Path(results["history"]).read_text())
    hist["cost_curve"] = [{"cost": c, "best_score": b} for c, b in
                          [(0.5, None), (1.5, -3.0), (2.0, -3.0), (3.0, -2.8), (4.0, -2.4), (6.0, -2.4)]]
    hist["cost"] = {"stage1": {"hf_equivalents": 3.0}, "stage2": {"evaluations": 1, "hf_equivalents": 1.0},
                    "pick": {"hf_equivalents": 2.0}, "total": {"hf_equivalents": 6.0}}
    write(Path(results["history"]), hist)
    rnd = json.loads(Path(results["random"]).read_text())
    write(Path(results["random"]), {**rnd, "cost": {"hf_equivalents": 6}})
    opt = json.loads(Path(results["optuna"]).read_text())
    write(Path(results["optuna"]), {**opt, "cost": {"hf_equivalents": 6}, "final": {"heldout_hf_score": -2.95}})
    hvs = {v: results[f"hv_{v}"] for v in ("autoqra", "no_warm_start")}
    fig = F.fig3_search_efficiency(hvs, results["history"], results["budget"], MODEL, random_summary=results["random"],
                                   optuna_summary=results["optuna"], methods_hf=results["methods_hf"],
                                   heldout_methods={"autoqra": "autoqra", "random": "random"},
                                   out=[tmp_path / "f3.png"])
    right = fig.axes[1]
    assert right.get_xlabel() == "Evaluation cost (HF-equivalents, LF included)"
    lines = {ln.get_label(): ln for ln in right.lines}
    assert list(lines["AutoQRA"].get_xdata()) == [0.5, 1.5, 2.0, 3.0, 4.0, 6.0]
    assert list(lines["AutoQRA: Stage 2 starts"].get_xdata()) == [3.0, 3.0]
    # random: six evaluations, then flat to its total cost (its pick); optuna: three, then to 6
    assert list(lines["random search"].get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert list(lines["optuna tpe"].get_xdata()) == [1, 2, 3, 6] and list(lines["optuna tpe"].get_ydata())[-1] == -2.9
    marks = {c.get_label(): c.get_offsets()[0].tolist() for c in right.collections}
    assert marks["AutoQRA pick, held-out seed"] == [6.0, -2.45]
    assert marks["random pick, held-out seed"] == [6.0, -2.65]
    assert marks["optuna pick, held-out seed"] == [6.0, -2.95]


def test_fig4_plan_bars_and_priors(results, tmp_path):
    out = [tmp_path / "f4.pdf"]
    fig = F.fig4_plan(results["plan"], results["priors"], MODEL, out=out)
    top, bottom = fig.axes[0], fig.axes[1]
    assert [p.get_height() for p in top.patches] == [4, 2, 3, 8]
    assert [p.get_height() for p in bottom.patches] == [16, 4, 8, 8]
    assert top.get_ylabel() == "Bits" and bottom.get_ylabel() == "LoRA rank"
    assert bottom.get_xlabel() == "Transformer block index" and labelled(fig)
    assert "mean 4.25 bits, mean rank 9.0" in fig.get_suptitle() and out[0].stat().st_size > 1000


def test_fig5_stage2_best_so_far_and_radius(results):
    fig = F.fig5_stage2(results["history"], MODEL)
    ax, twin = fig.axes
    best = next(ln for ln in ax.lines if ln.get_label() == "best so far")
    # feasible utilities: Stage 1 max 0.4, iteration 0 adds 0.45, iteration 1 only 0.35 (0.9 is over budget)
    assert list(best.get_ydata()) == [0.4, 0.45, 0.45, 0.45]
    assert list(twin.lines[0].get_ydata()) == [2, 4, 2, 2]
    assert twin.get_ylabel() == "Trust-region radius (edits)" and ax.get_xlabel() == "Stage-2 iteration"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Stage 1", "1", "2"]


def test_fig5_without_stage2(tmp_path):
    h = write(tmp_path / "history.json", {"final": {"hf_score": -2.0, "memory_bytes": 1.0, "budget_bytes": 2.0},
                                          "trajectory": [], "observations": [
                                              {"score": -2.0, "memory": 1.0, "origin": -1, "utility": 0.2}]})
    fig = F.fig5_stage2(h, MODEL)
    assert "no Stage-2 iterations" in legend_texts(fig.axes[0])


def test_fig6_priors_labels_and_title(results):
    fig = F.fig6_priors(results["priors"], results["correlations"], MODEL)
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts if t.get_text()) == ["0", "1", "2", "3"]
    assert "Spearman ρ = 0.80" in ax.get_title() and "top-2 overlap = 0.50" in ax.get_title()
    assert "$I_q$" in ax.get_xlabel() and "$I_r$" in ax.get_ylabel()


def test_report_code_does_not_import_torch():
    code = ("import sys; import autoqra.report.figures, autoqra.report.tables, autoqra.report.load; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_nan_safe_spearman():
    assert math.isnan(F.spearman([1.0, 2.0], [2.0, 1.0]))


def test_table_efficiency_shows_no_training_for_the_untuned_base(results):
    from autoqra.report.tables import table_efficiency

    agg = read_aggregate(results["aggregate"])
    base = agg[agg["method"] == "lora16"].assign(method="base", label="Base")
    methods = {**METHODS, "base": {"group": "baseline", "label": "Base", "plan": "base"}}
    t = table_efficiency(pd.concat([agg, base], ignore_index=True), methods, [MODEL]).set_index("Method")
    assert t.loc["Base†", "Tokens/s"] == t.loc["Base†", "Train peak (GB)"] == t.loc["Base†", "Trainable params"] == "—"
    assert t.loc["LoRA 16-bit†", "Tokens/s"] != "—"  # the same numbers under a trained method are shown


def test_figure_modules_import_without_a_circle():
    """figures imports fig_pareto and fig_search; those import only plotting and load (no circle)."""
    import ast
    from pathlib import Path

    import autoqra.report as report

    def report_imports(name):
        tree = ast.parse((Path(report.__file__).parent / f"{name}.py").read_text())
        return {n.module.rsplit(".", 1)[-1] for n in ast.walk(tree)
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("autoqra.report.")}

    assert report_imports("fig_search") <= {"plotting", "load"} and report_imports("fig_pareto") <= {"plotting", "load"}
    assert "figures" not in report_imports("plotting")
