"""Table 5's inputs read from the pipeline's result files (``autoqra.report.claims`` computes the
rows): the searches' HF histories and costs, the random pool, the priors, every final plan, each
plan's measured pre-fine-tuning damage and the fair baselines' HF scores. pandas only; no torch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from autoqra.report.claim_stats import ArchiveSpace, lf_hf_pairs
from autoqra.report.claims import claim_rows, claims_frame
from autoqra.report.load import (
    read_aggregate,
    read_json,
    read_priors,
    read_random_summary,
    read_search_cost,
    read_tsv,
    read_uncertainty,
)

FAIR_PLANS = ("uniform", "sequential")  # the baselines whose HF score sets claim 4's target


def stage_costs(search_cost, model: str, variant: str = "autoqra") -> tuple[float | None, float]:
    """(AutoQRA's search cost in HF-equivalents: Stage 1 + Stage 2 + pick, Stage 0's in the same unit:
    its device seconds over the seconds of one Stage-1 HF-equivalent)."""
    if search_cost is None:
        return None, 0.0
    cost = read_search_cost(search_cost)
    cost = cost[cost["model"] == model]
    part = cost[(cost["variant"] == variant) & cost["stage"].isin(["stage1_search", "stage2_refine", "search_pick"])]
    hfeq = pd.to_numeric(part.get("hf_equivalents"), errors="coerce") if "hf_equivalents" in part else None
    if part.empty or hfeq is None or hfeq.isna().any():
        return None, 0.0
    s1 = part[part["stage"] == "stage1_search"]
    s0 = cost[cost["stage"] == "stage0_sensitivity"]
    unit = float(s1["device_hours"].sum() / s1["hf_equivalents"].astype(float).sum()) if len(s1) else 0.0
    stage0 = float(s0["hf_equivalents"].astype(float).sum()) if "hf_equivalents" in s0 and \
        s0["hf_equivalents"].notna().all() and len(s0) else (float(s0["device_hours"].sum()) / unit if unit else 0.0)
    return float(hfeq.sum()), stage0


def fair_target(methods_hf, methods: Mapping[str, Mapping], budget: float | None) -> tuple[float, str] | None:
    """The best HF score of a fair baseline's plan within the budget (``FAIR_PLANS``), and its method."""
    if methods_hf is None:
        return None
    df = read_tsv(methods_hf, ["method", "hf_score", "memory_bytes"], ["hf_score", "memory_bytes"])
    fair = df[df["method"].map(lambda m: (methods.get(m) or {}).get("plan") in FAIR_PLANS) & df["hf_score"].notna()]
    if budget is not None:
        fair = fair[fair["memory_bytes"] <= budget * (1 + 1e-9)]
    if fair.empty:
        return None
    best = fair.sort_values("hf_score", ascending=False).iloc[0]
    return float(best["hf_score"]), str(best["method"])


def plan_damage(random_summary, methods_hf) -> dict[str, float]:
    """plan hash -> measured pre-fine-tuning damage (loss increase from quantization alone)."""
    out = {}
    if random_summary is not None:
        for o in read_json(random_summary, ["observations"])["observations"]:
            if o.get("plan_hash") and o.get("quant_error") is not None:
                out[str(o["plan_hash"])] = float(o["quant_error"])
    if methods_hf is not None:
        df = read_tsv(methods_hf, ["method"])
        if {"plan_hash", "quant_error"} <= set(df.columns):
            for h, q in zip(df["plan_hash"], pd.to_numeric(df["quant_error"], errors="coerce"), strict=True):
                if isinstance(h, str) and np.isfinite(q):
                    out[h] = float(q)
    return out


def claims_from_files(model: str, *, aggregate, uncertainty, methods: Mapping[str, Mapping], bits: Sequence[int],
                      ranks: Sequence[int], history=None, random_summary=None, fronts: Sequence = (),
                      priors=None, plans: Sequence = (), search_cost=None, methods_hf=None) -> list[dict[str, str]]:
    """Table 5's rows of one model from the pipeline's result files (optional ones may be None/empty)."""
    agg, unc = read_aggregate(aggregate), read_uncertainty(uncertainty)
    rnd = read_random_summary(random_summary)
    auto_scores, budget = None, None
    if history is not None:
        hist = read_json(history, ["observations", "final"])
        budget = float(hist["final"]["budget_bytes"])
        auto_scores = [o["score"] if o.get("score") is not None and o["memory"] <= budget * (1 + 1e-9) else None
                       for o in hist["observations"]]
    auto_cost, stage0 = stage_costs(search_cost, model)
    archives = [read_json(f, ["archive", "budget_bytes"]) for f in fronts]
    pairs = lf_hf_pairs([a["archive"] for a in archives])
    space = imp = None
    if priors is not None:
        pri = read_priors(priors).sort_values("block")
        imp = (pri["iq_norm"].to_numpy(float), pri["ir_norm"].to_numpy(float))
    if pairs:
        mem = {g.tobytes(): m for g, _, _, m in pairs}
        space = ArchiveSpace(bits, ranks, archives[0]["budget_bytes"], pairs[0][0].shape[1], mem)
    return claim_rows(model, unc=unc, agg=agg, methods=methods, damage=plan_damage(random_summary, methods_hf),
                      target=fair_target(methods_hf, methods, budget), auto_scores=auto_scores, auto_cost=auto_cost,
                      stage0_cost=stage0, random_scores=None if rnd is None else rnd["observations"]["score"].tolist(),
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
    """Table 5's rows of one model from a pipeline run directory or the study's copy of its raw data
    (the paths the rules write), with the given (possibly pooled) aggregate and uncertainty tables."""
    r = Path(run_dir) / "results"

    def found(p: Path):
        return p if p.is_file() else None

    return claims_from_files(
        model, aggregate=aggregate, uncertainty=uncertainty, methods=cfg["methods"],
        bits=cfg["search_space"]["bits"], ranks=cfg["search_space"]["ranks"],
        history=found(r / "final" / model / "autoqra" / "history.json"),
        random_summary=found(r / "random" / model / "summary.json"),
        fronts=sorted((r / "search" / model).glob("*/front.json")), priors=found(r / "sensitivity" / model / "priors.tsv"),
        plans=sorted((r / "methods" / model).glob("*/plan.json")),
        search_cost=found(r / "summary" / "search_cost.tsv"), methods_hf=found(r / "methods_hf" / f"{model}.tsv"))
