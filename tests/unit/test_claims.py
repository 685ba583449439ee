"""Table 5 (the claims table) from hand-made summaries and search records (no torch, no pipeline)."""


import numpy as np
import pandas as pd
import pytest
from result_files import write

from autoqra.report.claim_stats import evaluations_to_target, first_hit_distribution, spearman_ci
from autoqra.report.claims import FAILS, HOLDS, OPEN, write_claims

METHODS = {"autoqra": {"plan": "search", "group": "autoqra"},
           "lora16": {"plan": "uniform", "bits": 16, "rank": 8, "quantizer": "none", "group": "baseline"},
           "qlora_nf4": {"plan": "uniform", "bits": 4, "rank": 8, "quantizer": "nf4", "group": "baseline"},
           "hqq4": {"plan": "uniform", "bits": 4, "rank": 8, "quantizer": "hqq", "group": "baseline"},
           "hqq2": {"plan": "uniform", "bits": 2, "rank": 8, "quantizer": "hqq", "group": "baseline"},
           "random": {"plan": "random", "group": "baseline"}}


def unc_row(method, task, metric, mean, delta=None, lo=None, hi=None):
    return {"model": "m", "method": method, "task": task, "metric": metric, "lower_is_better": False, "n_seeds": 3,
            "n_docs": 600, "mean": mean, "ci_lo": mean - 0.02, "ci_hi": mean + 0.02, "reference": "autoqra",
            "delta": delta, "delta_lo": lo, "delta_hi": hi, "resolved": None if delta is None else (lo > 0 or hi < 0)}


@pytest.fixture
def inputs(tmp_path):
    r = tmp_path / "results"
    unc = pd.DataFrame([
        unc_row("autoqra", "average", "main", 0.60),
        unc_row("qlora_nf4", "average", "main", 0.55, -0.05, -0.08, -0.02),  # AutoQRA +5 [+2, +8]
        unc_row("lora16", "average", "main", 0.62, 0.02, -0.01, 0.05),  # AutoQRA −2 [−5, +1]: not resolved
        unc_row("autoqra", "general_text", "nats_per_token", 3.70),
        unc_row("hqq4", "general_text", "nats_per_token", 3.65, -0.05, -0.07, -0.03),  # AutoQRA +0.05 [+0.03, +0.07]
        unc_row("hqq2", "general_text", "nats_per_token", 6.0, 2.3, 2.2, 2.4)])
    agg = pd.DataFrame([{"model": "m", "method": m, "group": s["group"], "label": m, "task": "average", "metric": "main",
                         "n_seeds": 3, "mean": 0.5, "std": 0.0, "memory_gb_analytic": mem, "memory_gb_measured": mem,
                         "avg_bits": 4.0, "avg_rank": 8.0, "trainable_params": 1, "train_seconds": 1.0,
                         "tokens_per_s": 1.0, "peak_train_gb": 0.1, "within_budget": ok}
                        for (m, s), mem, ok in zip(METHODS.items(), (0.050, 0.200, 0.055, 0.055, 0.030, 0.05),
                                                   (True, False, True, True, True, True), strict=True)])
    rng = np.random.default_rng(0)
    qe = rng.uniform(0, 1, 80)
    random = {"budget_bytes": 100.0, "observations": [
        {"score": float(-q + rng.normal(0, 0.05)), "memory": 90.0, "quant_error": float(q), "utility": 0.0}
        for q in qe]}  # the proxy ranks plans almost perfectly: ρ ≈ 0.98
    best_random = max(o["score"] for o in random["observations"])
    history = {"final": {"budget_bytes": 100.0},
               "observations": [{"score": best_random + 0.1, "memory": 120.0},
                                {"score": best_random + 0.01, "memory": 95.0}]}  # 2nd reaches it; 1st is infeasible
    genomes = [np.array([[b % 4, (b + 1) % 4], [b % 3, (b * 2) % 3]]) for b in range(6)]
    archive = [{"genome": g.tolist(), "score": s, "memory": 90.0 + i, "fidelity": f, "generation": 0}
               for i, g in enumerate(genomes) for f, s in (("lf", -float(i)), ("hf", -float(i) * 2))]
    plan = {"bits": [2, 2, 4, 8, 8, 4], "ranks": [16, 16, 8, 4, 4, 8]}  # low bits, high ranks: ρ = −1
    return {"aggregate": write(r / "aggregate.tsv", agg), "uncertainty": write(r / "uncertainty.tsv", unc),
            "random_summary": write(r / "random.json", random), "history": write(r / "history.json", history),
            "fronts": [write(r / "front.json", {"archive": archive, "budget_bytes": 100.0})],
            "priors": write(r / "priors.tsv", pd.DataFrame({"block": [0, 1], "iq_norm": [0.2, 0.8],
                                                             "ir_norm": [0.5, 0.5]})),
            "plans": [write(r / "plan.json", plan), write(r / "plan_b3.json", plan)]}  # two budgets' plans pooled


def test_claims_table_from_hand_made_inputs(inputs, tmp_path):
    df = write_claims(["m"], {"m": inputs}, METHODS, [2, 3, 4, 8], [4, 8, 16], tmp_path / "t5.csv", tmp_path / "t5.tex")
    by = {row.Claim.split(" (")[0]: row for row in df.itertuples(index=False)}
    assert len(df) == 7 and list(df.columns) == ["Model", "Claim", "Paper", "Ours [95 % CI]", "n", "Verdict"]
    qlora = by["AutoQRA ≥ QLoRA at ≤ its memory"]
    assert qlora.Verdict == HOLDS and qlora[3].startswith("+5.0 [+2.0, +8.0]") and "50.00 vs 55.00 MB" in qlora[3]
    lora = by["AutoQRA close to 16-bit LoRA"]
    assert lora.Verdict == OPEN and lora[3] == "−2.0 [−5.0, +1.0]"
    proxy = next(r for r in df.itertuples(index=False) if r.Claim.startswith("Static proxy"))
    assert proxy.Verdict == FAILS and float(proxy[3].split()[0].replace("−", "-")) > 0.9 and proxy.n == "80 plans"
    evals = next(r for r in df.itertuples(index=False) if r.Claim.startswith("Fewer HF"))
    assert evals[3].startswith("2 vs 40.5 [") and evals.n == "1/80 random plans ≥ target"
    assert evals.Verdict == HOLDS  # one hit among 80: random needs <= 2 with probability 2/80
    surrogate = next(r for r in df.itertuples(index=False) if r.Claim.startswith("Performance model"))
    assert surrogate.Verdict == OPEN and surrogate.n == "6 LF/HF pairs"  # too few pairs
    bits_rank = next(r for r in df.itertuples(index=False) if r.Claim.startswith("Low bits"))
    assert bits_rank.Verdict == HOLDS and bits_rank[3].startswith("−1.00") and bits_rank.n == "12 blocks"
    general = next(r for r in df.itertuples(index=False) if r.Claim.startswith("(this project)"))
    assert general.Verdict == HOLDS and general[3] == "+0.050 [+0.030, +0.070] vs hqq4"
    tex = (tmp_path / "t5.tex").read_text()
    assert r"\toprule" in tex and r"$\rho$" in tex and r"$\ge$" in tex


def test_a_worse_and_bigger_autoqra_does_not_hold(inputs, tmp_path):
    unc = pd.read_csv(inputs["uncertainty"], sep="\t")
    unc.loc[unc.method == "qlora_nf4", ["delta", "delta_lo", "delta_hi"]] = [0.01, -0.02, 0.04]  # not resolved ...
    agg = pd.read_csv(inputs["aggregate"], sep="\t")
    agg.loc[agg.method == "autoqra", "memory_gb_analytic"] = 0.06  # ... but AutoQRA needs more memory than QLoRA
    unc.loc[unc.method == "hqq4", ["delta", "delta_lo", "delta_hi"]] = [-0.5, -0.6, -0.4]  # 0.5 nats/token worse
    inputs = {**inputs, "uncertainty": write(tmp_path / "u.tsv", unc), "aggregate": write(tmp_path / "a.tsv", agg)}
    df = write_claims(["m"], {"m": inputs}, METHODS, [2, 3, 4, 8], [4, 8, 16], tmp_path / "t.csv", tmp_path / "t.tex")
    verdicts = dict(zip(df.Claim.str.split(" ").str[:2].str.join(" "), df.Verdict, strict=True))
    assert verdicts["AutoQRA ≥"] == FAILS and verdicts["(this project)"] == FAILS


def test_statistics_behind_the_claims():
    p = first_hit_distribution(10, 2)
    assert p.sum() == pytest.approx(1.0) and p[0] == pytest.approx(2 / 10) and len(p) == 9
    e = evaluations_to_target([0.1, 0.5, 0.9], [0.2, 0.3, 0.4, 0.95])
    assert e["target"] == 0.9 and e["n_auto"] == 3 and e["k_random"] == 1 and e["random_mean"] == pytest.approx(2.5)
    r = spearman_ci([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1], n_boot=200)
    assert r["rho"] == pytest.approx(-1.0) and r["hi"] <= -0.99 and r["n"] == 6
    assert np.isnan(spearman_ci([1, 1, 1], [1, 2, 3], n_boot=50)["rho"])
