"""Power note: the variance components of a paired Δ measured from per-document results, the 95 %
half-width they give for ``n`` seeds, and what a target half-width would cost (numpy and pandas only;
no torch). Used for the README's power note (``python -m autoqra.report.power docs.tsv ...``).

Components of Δ = A − B on the task average (``autoqra.report.variance``): the document term
``σ_b²/D`` (it shrinks only with more documents), the per-seed variance ``w = σ_e² + σ_ε²/D`` of the
seed-level Δ (method × seed interaction plus per-seed document noise; it shrinks with seeds) and
the noise part ``σ_ε²/D`` alone. Half-width for ``n`` seeds: ``t_ν · √(σ_b²/D + w/n)`` with
Satterthwaite's ν; seeds to reach a target: the smallest such ``n``; cost: ``n`` × 2 methods × the
measured CPU-seconds of one method-seed (fine-tuning + lm-eval scoring).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from autoqra.report.uncertainty import AVERAGE, model_estimates
from autoqra.report.variance import components, difference

MAX_SEEDS = 1000


def delta_components(docs: pd.DataFrame, a: str, b: str, n_boot: int = 2000, seed: int = 0, task: str = AVERAGE,
                     metric: str = "main") -> dict[str, Any]:
    """The measured components of Δ = a − b on ``task``'s ``metric`` (default the task average;
    ``docs``: one model's DOC_COLUMNS rows; both methods on the same seeds)."""
    extra = {task: [metric]} if task != AVERAGE else None
    est, seeds = model_estimates(docs, extra=extra, n_boot=n_boot, seed=seed)
    if seeds[a] != seeds[b] or len(seeds[a]) < 2:
        raise ValueError(f"power: {a} and {b} need the same ≥ 2 seeds (have {seeds[a]} and {seeds[b]})")
    if (a, task, metric) not in est:
        raise ValueError(f"power: no {task}/{metric} values for {a} (have {sorted({k[1:] for k in est})})")
    d = difference(est[(a, task, metric)], est[(b, task, metric)], paired=True)
    c = components(d)
    v_seed, v_eps, s = c.seed_terms[0]
    return {"a": a, "b": b, "delta": d.point, "n_seeds": s, "n_docs": c.n_docs, "doc_var": c.doc_part,
            "seed_var": v_seed * s, "method_seed_var": max(v_seed - v_eps, 0.0) * s, "noise_var": v_eps * s,
            "per_seed_deltas": [float(x) for x in d.groups[0].per_seed]}


def half_width(comp: Mapping[str, float], n_seeds: int, level: float = 0.95) -> float:
    """The 95 % half-width of Δ with ``n_seeds`` paired seeds and the measured components."""
    doc, w = comp["doc_var"], comp["seed_var"] / n_seeds
    v = doc + w
    den = doc ** 2 / max(comp["n_docs"] - 1, 1) + (w ** 2 / (n_seeds - 1) if n_seeds > 1 else math.inf)
    dof = v ** 2 / den if den > 0 else math.inf
    return float(stats.t.ppf(0.5 + level / 2, dof) * math.sqrt(v)) if n_seeds > 1 else math.inf


def seeds_for(comp: Mapping[str, float], target: float) -> int | None:
    """The fewest paired seeds whose half-width is ≤ ``target`` (None: documents alone exceed it)."""
    for n in range(2, MAX_SEEDS + 1):
        if half_width(comp, n) <= target:
            return n
    return None


def run_seconds(run_dir: str | Path, model: str, methods: Sequence[str]) -> float:
    """Mean measured wall seconds of one method-seed: fine-tuning + lm-eval scoring (Snakemake's
    ``benchmark:`` files under results/benchmarks/{finetune,lm_eval}/{model}/{method}/s{seed}.tsv)."""
    per = []
    for m in methods:
        for f in sorted((Path(run_dir) / "results/benchmarks/finetune" / model / m).glob("s*.tsv")):
            ev = Path(str(f).replace("/finetune/", "/lm_eval/"))
            if ev.is_file():
                per.append(float(pd.read_csv(f, sep="\t")["s"].iloc[0]) + float(pd.read_csv(ev, sep="\t")["s"].iloc[0]))
    if not per:
        raise FileNotFoundError(f"{run_dir}/results/benchmarks/finetune/{model}/{{{','.join(methods)}}}: no benchmarks")
    return float(np.mean(per))


def power_note(comp: Mapping[str, Any], seconds_per_run: float, targets: Sequence[float] = (0.01, 0.02)) -> dict:
    """Half-width now, and for each target (in the metric's unit; 0.01 = 1 point) the seeds and CPU-hours needed."""
    out = {**comp, "half_width_now": half_width(comp, comp["n_seeds"]), "seconds_per_run": seconds_per_run,
           "doc_floor": float(stats.norm.ppf(0.975) * math.sqrt(comp["doc_var"])), "targets": {}}
    for t in targets:
        n = seeds_for(comp, t)
        out["targets"][f"±{t:g}"] = {  # in the metric's unit: 0.01 = 1 point of accuracy
            "seeds": n, "cpu_hours": None if n is None else n * 2 * seconds_per_run / 3600}
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="variance components and seed cost of Δ(a − b) from a docs.tsv")
    p.add_argument("docs", help="results/summary/docs.tsv(.gz)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--run-dir", help="the run directory whose benchmark files give the seconds per method-seed")
    p.add_argument("--seconds", type=float, help="seconds per method-seed (instead of --run-dir)")
    p.add_argument("--task", default=AVERAGE, help="a task (default: the task average)")
    p.add_argument("--metric", default="main", help="its metric, e.g. nats_per_token (default: the main one)")
    args = p.parse_args(argv)
    docs = pd.read_csv(args.docs, sep="\t")
    model = str(docs["model"].iloc[0])
    comp = delta_components(docs[docs["model"] == model], args.a, args.b, task=args.task, metric=args.metric)
    secs = args.seconds if args.seconds is not None else run_seconds(args.run_dir, model, [args.a, args.b])
    print(json.dumps(power_note(comp, secs), indent=1))


if __name__ == "__main__":
    main()
