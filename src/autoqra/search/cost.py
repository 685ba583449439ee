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


def stage0_units(sensitivity: Mapping, n_blocks: int, seq_len: int) -> dict:
    """Stage 0's work (``autoqra.sensitivity``) in the same forward-pass units as an evaluation.

    - fidelity ``I_q``: the 16-bit reference plus one probe per block, each over ``n_calib``
      calibration sequences of ``calib_len`` tokens. A probe runs only blocks ℓ… (about half the
      decoder) but applies the LM head twice (reference and probe logits for the JSD); on
      SmolLM2-135M (vocab 49k) the head costs about half the decoder, so a probe counts as one full
      forward: ``n_calib·(n_blocks + 1)`` sequence forwards;
    - plasticity ``grad_norm``: ``grad_batches`` forward+backward passes of ``batch_size`` sequences;
      ``loss_drop``: per block ``loss_drop_steps`` training steps and ``grad_batches`` held-out
      evaluation batches, plus one shared evaluation before.

    Sequences are scaled by their length relative to ``seq_len`` (the data's ``max_seq_len``, what an
    evaluation's training and validation sequences are cut to). Missing keys take
    ``SensitivitySettings``' defaults (``max_seq_len``: ``seq_len``).
    """
    from dataclasses import fields

    from autoqra.sensitivity.settings import SensitivitySettings

    d = {f.name: f.default for f in fields(SensitivitySettings)}
    d["max_seq_len"] = seq_len  # the pipeline cuts Stage 0's training sequences as an evaluation's
    d.update({k: v for k, v in dict(sensitivity).items() if v is not None})
    calib = float(d["calib_len"]) / float(seq_len)
    probe = float(d["max_seq_len"]) / float(seq_len)
    fidelity = float(d["n_calib"]) * (n_blocks + 1) * calib
    bs, gb = int(d["batch_size"]), int(d["grad_batches"])
    if d["plasticity"] == "loss_drop":
        plast = (n_blocks * (TRAIN_PASSES * int(d["loss_drop_steps"]) * bs + gb * bs) + gb * bs) * probe
    else:
        plast = TRAIN_PASSES * gb * bs * probe
    return {"fidelity": fidelity, "plasticity": plast, "units": fidelity + plast}


def charge_stage0(cost: Mapping, stage0: Mapping) -> dict:
    """``cost`` (``stage_costs``) with Stage 0 (``stage0_units``) added as a stage of its own and to
    the total, in the total's HF unit: the priors are part of what AutoQRA spends, so the equal-cost
    baselines get them too."""
    unit = float(cost["total"]["hf_unit"])
    s0 = {**dict(stage0), "hf_unit": unit, "hf_equivalents": float(stage0["units"]) / unit}
    total = dict(cost["total"])
    total["units"] = float(total["units"]) + float(stage0["units"])
    total["hf_equivalents"] = total["units"] / unit
    total["stage0_charged"] = True
    return {**dict(cost), "stage0": s0, "total": total}
