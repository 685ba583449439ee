"""What a search's evaluations cost, in HF-equivalents (pure, no I/O): the unit the random and
optuna searchers are given to spend, so that they get the evaluation cost AutoQRA actually spent.

An evaluation trains for some steps and then scores the validation split. Its cost is counted in
forward-pass equivalents from the record itself: 3 per trained sequence (forward + backward ≈ 3
forwards) and 1 per validation example; an HF-equivalent is the cost of one HF evaluation. Why
counted work rather than measured seconds: the records' seconds on a shared CPU (or a busy GPU
node) vary by tens of percent with the neighbours' load, so a seconds-based budget would change the
baselines' evaluation count, and with it their plans, from one run to the next. The work count is
deterministic and, on a device that is not shared, proportional to the device time. On the paper's
settings (LF = 5 % of Alpaca for 0.1 epoch, HF = 20 % for 0.5 epoch, 500 validation examples) an
LF evaluation is ≈ 0.08 HF, so the 520 LF evaluations of a 40 × 12 search add ≈ 28 % to its HF
evaluations; a count of HF evaluations alone would leave that out.

Multiple-choice accuracy scores each choice with its own forward; those extra forwards are not
counted (``evaluation.metric: neg_loss``, the default and paper setting, has none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

TRAIN_PASSES = 3.0  # forward + backward of one training sequence, in forward passes


def evaluation_units(steps: float, sequences_per_step: float, eval_examples: float) -> float:
    """Forward-pass equivalents of one evaluation."""
    return TRAIN_PASSES * float(steps) * float(sequences_per_step) + float(eval_examples)


def _eval_examples(settings: Mapping, n_val: int | None) -> float:
    cap = (settings.get("eval") or {}).get("max_examples")
    if cap is None:
        return float(n_val or 0)
    return float(min(cap, n_val) if n_val else cap)


def record_units(rec: Mapping, n_val: int | None = None) -> float | None:
    """Cost of one evaluation record (``steps``, ``settings.train``, ``settings.eval``); None when
    the record does not say how many steps it trained (a failed run on a data-fraction fidelity)."""
    settings = rec.get("settings") or {}
    steps = rec.get("steps")
    if steps is None:
        steps = (settings.get("fidelity") or {}).get("steps")
    if steps is None:
        return None
    train = settings.get("train") or {}
    per_step = int(train.get("batch_size", 1)) * int(train.get("grad_accum", 1))
    return evaluation_units(steps, per_step, _eval_examples(settings, n_val))


def hf_equivalents(records: Sequence[Mapping], n_val: int | None = None, hf_unit: float | None = None) -> dict:
    """The cost of ``records`` (each with ``fidelity``): counts per fidelity, total forward-pass
    units and HF-equivalents (total / ``hf_unit``; default the median cost of the HF records).
    A record of unknown cost counts as the median of its fidelity's known ones (else one HF)."""
    units = [record_units(r, n_val) for r in records]
    by_fid: dict[str, list[float]] = {}
    for r, u in zip(records, units, strict=True):
        if u is not None:
            by_fid.setdefault(str(r["fidelity"]), []).append(u)
    if hf_unit is None:
        if not by_fid.get("hf"):
            raise ValueError("HF-equivalents: no HF record with a known cost to take the unit from")
        hf_unit = float(np.median(by_fid["hf"]))
    total = 0.0
    for r, u in zip(records, units, strict=True):
        known = by_fid.get(str(r["fidelity"]))
        total += u if u is not None else (float(np.median(known)) if known else hf_unit)
    counts: dict[str, int] = {}
    for r in records:
        counts[str(r["fidelity"])] = counts.get(str(r["fidelity"]), 0) + 1
    return {"evaluations": counts, "units": total, "hf_unit": float(hf_unit),
            "hf_equivalents": total / float(hf_unit)}


def equal_cost_evaluations(hf_eq: float) -> int:
    """HF evaluations a baseline searcher may spend to match ``hf_eq`` (never more than it)."""
    return max(1, math.floor(float(hf_eq) + 1e-9))
