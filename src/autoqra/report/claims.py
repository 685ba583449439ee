"""Table 5: each claim of the paper beside our number with its 95 % interval and a verdict,
"holds", "does not hold" or "not resolved at this scale" (numpy and pandas only; no torch).

The claims and exactly how each is measured (the caption, workflow/report/table5.rst, says the same):

1. *AutoQRA >= QLoRA at <= its memory* (paper: 69.83 vs 67.45 %): Δ = AutoQRA − QLoRA task average
   (paired bootstrap over documents and seeds, ``autoqra.report.uncertainty``). Holds when AutoQRA's
   memory M(C) <= QLoRA's and the CI of Δ lies above 0; does not hold when its memory is larger or
   the CI lies below 0.
2. *AutoQRA close to 16-bit LoRA* (paper: 69.83 vs 69.94 %): Δ = AutoQRA − LoRA. Holds when the
   CI's lower end is above −``CLOSE_MARGIN`` points (no worse than 1 point); does not hold when its
   upper end is below −``CLOSE_MARGIN``.
3. *A static proxy predicts fine-tuned quality only moderately* (paper: ρ ≈ 0.46): Spearman ρ between
   −(quantization error before fine-tuning) and the HF score over the random search's plans,
   bootstrap over plans. Holds when the CI lies below ``STRONG_RHO`` (0.7, a strong correlation),
   does not hold when it lies above.
4. *Fewer HF evaluations to reach the target than random search* (paper: 6 vs 107): target T = the
   lower of the two searchers' best feasible HF scores (both reach it); AutoQRA's count n is the
   position of its first HF observation >= T (Stage 1 then Stage 2, in evaluation order); for random
   search, the first position of one of its k plans >= T among its N plans in a uniformly random
   order (the order of random search is random), with its exact 2.5-97.5 % range. Holds when
   P(random needs <= n) <= 5 %, does not hold when P(random needs < n) >= 95 %.
5. *The performance model raises the top-3 hit rate* (paper: 44.7 → 67.3 %): the distinct plans with
   both an LF and an HF score in the searches' archives; ``SPLITS`` random test sets of
   ``TEST_SIZE`` plans (a generation's worth), the model (``PerformanceModel``) fit on the others;
   hit rate = |top-3 by prediction ∩ top-3 by HF| / 3, against top-3 by LF alone. Δ = model − LF,
   percentile interval over the splits (splits share plans: the interval is optimistic). Not
   resolved below ``MIN_PAIRS`` pairs.
6. *Blocks at low bits get high ranks* (paper, Fig. 3): Spearman ρ between bits and rank over the
   blocks of the final AutoQRA plan(s), bootstrap over blocks. Holds when the CI lies below 0, does
   not hold when above 0.
7. *(this project) General ability kept*: AutoQRA's general-text loss (nats/token) minus that of
   the best uniform plan within the budget, paired bootstrap. Holds when the CI's upper end is
   <= ``GENERAL_MARGIN`` (0.1 nats/token), does not hold when its lower end is above it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from autoqra.report.claim_stats import (
    ArchiveSpace,
    evaluations_to_target,
    lf_hf_pairs,
    spearman_ci,
    top3_hit_rates,
)

HOLDS, FAILS, OPEN = "holds", "does not hold", "not resolved at this scale"
CLOSE_MARGIN = 0.01  # 1 point of task average
STRONG_RHO = 0.7
GENERAL_MARGIN = 0.1  # nats/token
MIN_PAIRS = 16
MIN_POINTS = 10  # a rank correlation over fewer points gets no verdict
CLAIM_COLUMNS = ["Model", "Claim", "Paper", "Ours [95 % CI]", "n", "Verdict"]


def _verdict(lo: float, hi: float, holds_if_above: float | None = None, holds_if_below: float | None = None) -> str:
    """HOLDS when the interval clears the threshold in the claimed direction, FAILS when it clears
    it the other way, OPEN otherwise (or for a missing interval)."""
    if any(x is None or (isinstance(x, float) and math.isnan(x)) for x in (lo, hi)):
        return OPEN
    if holds_if_above is not None:
        return HOLDS if lo > holds_if_above else FAILS if hi < holds_if_above else OPEN
    return HOLDS if hi < holds_if_below else FAILS if lo > holds_if_below else OPEN


def _rho_cell(r: Mapping[str, float]) -> str:
    if not np.isfinite(r["rho"]):
        return "—"
    return f"{r['rho']:.2f} [{r['lo']:.2f}, {r['hi']:.2f}]".replace("-", "−")


def _pts(x: float) -> str:
    return f"{round(x * 100, 1) + 0.0:+.1f}".replace("-", "−")  # + 0.0: no "−0.0"


def vs_baseline(unc: pd.DataFrame, agg: pd.DataFrame, model: str, auto: str, baseline: str) -> dict[str, Any] | None:
    """Δ = AutoQRA − baseline on the task average (from the baseline's Δ vs AutoQRA) and both memories."""
    u = unc[(unc["model"] == model) & (unc["method"] == baseline) & (unc["task"] == "average")]
    if u.empty or pd.isna(u["delta"].iloc[0]):
        return None
    mem = agg[agg["model"] == model].groupby("method")["memory_gb_analytic"].first()
    r = u.iloc[0]
    return {"delta": -r["delta"], "lo": -r["delta_hi"], "hi": -r["delta_lo"], "n_docs": int(r["n_docs"]),
            "mem_auto": float(mem.get(auto, np.nan)), "mem_base": float(mem.get(baseline, np.nan))}


def general_vs_uniform(unc: pd.DataFrame, agg: pd.DataFrame, methods: Mapping[str, Mapping], model: str,
                       auto: str) -> dict[str, Any] | None:
    """Claim 7: AutoQRA − best within-budget uniform plan, general-text nats/token (Δ and CI)."""
    rows = unc[(unc["model"] == model) & (unc["metric"] == "nats_per_token")]
    within = agg[agg["model"] == model].groupby("method")["within_budget"].first().astype(str).str.lower()
    uniform = [m for m, spec in methods.items() if spec.get("plan") == "uniform" and within.get(m) == "true"]
    cands = rows[rows["method"].isin(uniform)]
    if cands.empty or rows[rows["method"] == auto].empty:
        return None
    best = cands.sort_values("mean").iloc[0]
    auto_row = rows[rows["method"] == auto].iloc[0]
    return {"baseline": best["method"], "auto": float(auto_row["mean"]), "uniform": float(best["mean"]),
            "delta": -best["delta"], "lo": -best["delta_hi"], "hi": -best["delta_lo"], "n_docs": int(best["n_docs"])}


def claim_rows(model: str, *, unc: pd.DataFrame, agg: pd.DataFrame, methods: Mapping[str, Mapping],
               random_obs: pd.DataFrame | None, auto_scores: Sequence | None, pairs: list | None,
               space: ArchiveSpace | None, priors: tuple | None, plans: Sequence[Mapping]) -> list[dict[str, str]]:
    """The rows of Table 5 for one model (see the module docstring for each definition)."""
    auto = next((m for m, s in methods.items() if s.get("group") == "autoqra"), None)
    rows = []

    def add(claim, paper, ours, n, verdict):
        rows.append({"Model": model, "Claim": claim, "Paper": paper, "Ours [95 % CI]": ours, "n": n, "Verdict": verdict})

    for kind, claim, paper in (("qlora", "AutoQRA ≥ QLoRA at ≤ its memory (Δ avg, points)", "+2.4 (69.83 vs 67.45)"),
                               ("lora", "AutoQRA close to 16-bit LoRA (Δ avg, points)", "−0.1 (69.83 vs 69.94)")):
        base = next((m for m, s in methods.items() if s.get("plan") == "uniform" and (
            (kind == "qlora" and s.get("quantizer") == "nf4" and s.get("bits") == 4) or (kind == "lora" and s.get("bits") == 16))),
            None)
        r = vs_baseline(unc, agg, model, auto, base) if auto and base else None
        if r is None:
            add(claim, paper, "—", "—", OPEN)
            continue
        ours = f"{_pts(r['delta'])} [{_pts(r['lo'])}, {_pts(r['hi'])}]"
        if kind == "qlora":
            over = r["mem_auto"] > r["mem_base"] * (1 + 1e-9)
            ours += f"; memory {r['mem_auto'] * 1e3:.2f} vs {r['mem_base'] * 1e3:.2f} MB"
            verdict = FAILS if over else _verdict(r["lo"], r["hi"], holds_if_above=0.0)
        else:
            verdict = _verdict(r["lo"], r["hi"], holds_if_above=-CLOSE_MARGIN)
        add(claim, paper, ours, f"{r['n_docs']} docs", verdict)

    if random_obs is not None and len(random_obs):
        r = spearman_ci(-random_obs["quant_error"], random_obs["score"])
        ours = _rho_cell(r)
        add("Static proxy predicts fine-tuned score only moderately (ρ)", "0.46", ours, f"{r['n']} plans",
            OPEN if r["n"] < MIN_POINTS else _verdict(r["lo"], r["hi"], holds_if_below=STRONG_RHO))
    else:
        add("Static proxy predicts fine-tuned score only moderately (ρ)", "0.46", "—", "—", OPEN)

    e = evaluations_to_target(auto_scores, random_obs["score"].tolist()) if (
        auto_scores is not None and random_obs is not None and len(random_obs)) else None
    if e is None:
        add("Fewer HF evaluations than random search to reach the target", "6 vs 107", "—", "—", OPEN)
    else:
        verdict = HOLDS if e["p_random_le"] <= 0.05 else FAILS if e["p_random_lt"] >= 0.95 else OPEN
        add("Fewer HF evaluations than random search to reach the target", "6 vs 107",
            f"{e['n_auto']} vs {e['random_mean']:.1f} [{e['random_lo']}, {e['random_hi']}]",
            f"{e['k_random']}/{e['n_random']} random plans ≥ target", verdict)

    h = top3_hit_rates(pairs, space, *priors) if pairs and space is not None and priors is not None else None
    if h is None:
        add("Performance model raises the top-3 hit rate (LF → model, %)", "44.7 → 67.3",
            "—", f"{len(pairs or [])} LF/HF pairs", OPEN)
    else:
        verdict = OPEN if h["n"] < MIN_PAIRS else _verdict(h["lo"], h["hi"], holds_if_above=0.0)
        add("Performance model raises the top-3 hit rate (LF → model, %)", "44.7 → 67.3",
            f"{h['lf'] * 100:.1f} → {h['model'] * 100:.1f}, Δ {_pts(h['delta'])} [{_pts(h['lo'])}, {_pts(h['hi'])}]",
            f"{h['n']} LF/HF pairs", verdict)

    bits = [b for p in plans for b in p["bits"]]
    ranks = [r for p in plans for r in p["ranks"]]
    r = spearman_ci(bits, ranks)
    ours = _rho_cell(r)
    add("Low bits ↔ high rank (ρ of bits and rank over blocks)", "negative (Fig. 3)", ours, f"{r['n']} blocks",
        OPEN if r["n"] < MIN_POINTS else _verdict(r["lo"], r["hi"], holds_if_below=0.0))

    g = general_vs_uniform(unc, agg, methods, model, auto) if auto else None
    if g is None:
        add("(this project) General ability kept: Δ nats/token vs best uniform ≤ 0.1", "—", "—", "—", OPEN)
    else:
        add("(this project) General ability kept: Δ nats/token vs best uniform ≤ 0.1", "—",
            f"{g['delta']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}] vs {g['baseline']}".replace("-", "−"),
            f"{g['n_docs']} docs", HOLDS if g["hi"] <= GENERAL_MARGIN else FAILS if g["lo"] > GENERAL_MARGIN else OPEN)
    return rows


def claims_frame(rows: list[dict[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def claims_from_files(model: str, *, aggregate, uncertainty, methods: Mapping[str, Mapping], bits: Sequence[int],
                      ranks: Sequence[int], history=None, random_summary=None, fronts: Sequence = (),
                      priors=None, plans: Sequence = ()) -> list[dict[str, str]]:
    """Table 5's rows of one model from the pipeline's result files (optional ones may be None/empty)."""
    from autoqra.report.load import (
        read_aggregate,
        read_json,
        read_priors,
        read_random_summary,
        read_uncertainty,
    )

    agg, unc = read_aggregate(aggregate), read_uncertainty(uncertainty)
    rnd = read_random_summary(random_summary)
    auto_scores = None
    if history is not None:
        hist = read_json(history, ["observations", "final"])
        budget = float(hist["final"]["budget_bytes"])
        auto_scores = [o["score"] if o.get("score") is not None and o["memory"] <= budget * (1 + 1e-9) else None
                       for o in hist["observations"]]
    archives = [read_json(f, ["archive", "budget_bytes"]) for f in fronts]
    pairs = lf_hf_pairs([a["archive"] for a in archives])
    space = imp = None
    if pairs and priors is not None:
        mem = {g.tobytes(): m for g, _, _, m in pairs}
        space = ArchiveSpace(bits, ranks, archives[0]["budget_bytes"], pairs[0][0].shape[1], mem)
        pri = read_priors(priors).sort_values("block")
        imp = (pri["iq_norm"].to_numpy(float), pri["ir_norm"].to_numpy(float))
    return claim_rows(model, unc=unc, agg=agg, methods=methods,
                      random_obs=None if rnd is None else rnd["observations"], auto_scores=auto_scores,
                      pairs=pairs, space=space, priors=imp, plans=[read_json(p, ["bits", "ranks"]) for p in plans])


def write_claims(models: Sequence[str], inputs: Mapping[str, Mapping[str, Any]], methods: Mapping[str, Mapping],
                 bits: Sequence[int], ranks: Sequence[int], out_csv, out_tex) -> pd.DataFrame:
    """Table 5 for every model (``inputs[model]``: the keyword inputs of ``claims_from_files``),
    written as CSV and LaTeX."""
    from autoqra.report.tables import write_table

    rows = [r for m in models for r in claims_from_files(m, methods=methods, bits=bits, ranks=ranks, **inputs[m])]
    df = claims_frame(rows)
    write_table(df, out_csv, out_tex)
    return df


def claim_rows_from_dir(model: str, run_dir, aggregate, uncertainty, cfg: Mapping[str, Any]) -> list[dict[str, str]]:
    """Table 5's rows of one model from a pipeline run directory (the paths the rules write), with the
    given (possibly pooled) aggregate and uncertainty tables: used by the study's combine step."""
    from pathlib import Path

    r = Path(run_dir) / "results"

    def found(p: Path):
        return p if p.is_file() else None

    return claims_from_files(
        model, aggregate=aggregate, uncertainty=uncertainty, methods=cfg["methods"],
        bits=cfg["search_space"]["bits"], ranks=cfg["search_space"]["ranks"],
        history=found(r / "final" / model / "autoqra" / "history.json"),
        random_summary=found(r / "random" / model / "summary.json"),
        fronts=sorted((r / "search" / model).glob("*/front.json")), priors=found(r / "sensitivity" / model / "priors.tsv"),
        plans=[p for p in [found(r / "final" / model / "autoqra" / "plan.json")] if p])
