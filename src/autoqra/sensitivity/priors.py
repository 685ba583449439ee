"""The priors table (``PRIOR_COLUMNS``, one row per block), min-max normalisation and how
correlated ``I_q`` and ``I_r`` are (Pearson, Spearman, top-k overlap)."""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from autoqra.errors import DatasetError
from autoqra.io import atomic_write_tsv

PRIOR_COLUMNS = ("block", "iq_raw", "iq_norm", "ir_raw", "ir_norm", "combined")


def normalise(x: Any) -> np.ndarray:
    """Min-max to [0, 1]; a constant vector carries no ranking and maps to all 0.5."""
    x = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"cannot normalise non-finite sensitivities: {x.tolist()}")
    span = x.max() - x.min() if x.size else 0.0
    return np.full_like(x, 0.5) if span <= 0 else (x - x.min()) / span


def _topk(x: np.ndarray, k: int) -> set[int]:
    return set(np.argsort(-x, kind="stable")[:k].tolist())  # ties resolved by block index


def correlations(iq: Any, ir: Any, k: int | None = None) -> dict[str, Any]:
    """Pearson, Spearman (None where undefined, e.g. a constant vector) and top-k overlap of I_q and I_r."""
    from scipy import stats

    iq, ir = np.asarray(iq, dtype=float), np.asarray(ir, dtype=float)
    if iq.shape != ir.shape or iq.ndim != 1:
        raise ValueError(f"correlations need two vectors of equal length, got {iq.shape} and {ir.shape}")
    n = len(iq)
    k = max(1, n // 4) if k is None else int(k)
    if not 1 <= k <= n:
        raise ValueError(f"top-k overlap: k must be in 1..{n}, got {k}")
    defined = n >= 2 and np.ptp(iq) > 0 and np.ptp(ir) > 0
    pearson = float(stats.pearsonr(iq, ir)[0]) if defined else None
    spearman = float(stats.spearmanr(iq, ir)[0]) if defined else None
    return {"pearson": pearson, "spearman": spearman, "k": k,
            "topk_overlap": len(_topk(iq, k) & _topk(ir, k)) / k}


def write_priors(rows: list[dict], tsv_path: str | os.PathLike) -> Path:
    """Write the priors table (one row per block, PRIOR_COLUMNS) atomically."""
    return atomic_write_tsv(tsv_path, PRIOR_COLUMNS, [[r[c] for c in PRIOR_COLUMNS] for r in rows])


def read_priors(tsv_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``(imp_q, imp_r)``: the normalised priors in block order, validated; DatasetError names the file."""
    path = Path(tsv_path)
    if not path.is_file():
        raise DatasetError(f"{path}: priors file not found (run the sensitivity stage first)")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = [c for c in ("block", "iq_norm", "ir_norm") if c not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {missing}; expected {list(PRIOR_COLUMNS)}")
        rows = list(reader)
    parsed = []
    for line, r in enumerate(rows, start=2):
        try:
            block, q, s = int(r["block"]), float(r["iq_norm"]), float(r["ir_norm"])
        except (TypeError, ValueError):
            raise DatasetError(f"{path}: line {line}: expected an integer block and numeric iq_norm/ir_norm, "
                               f"got {r['block']!r}, {r['iq_norm']!r}, {r['ir_norm']!r}") from None
        if not (math.isfinite(q) and math.isfinite(s) and 0.0 <= q <= 1.0 and 0.0 <= s <= 1.0):
            raise DatasetError(f"{path}: line {line}: iq_norm/ir_norm must be finite and in [0, 1], got {q}, {s}")
        parsed.append((block, q, s))
    blocks = sorted(b for b, _, _ in parsed)
    if not blocks or blocks != list(range(len(parsed))):
        raise DatasetError(f"{path}: expected one row per block 0..n-1, each once; got blocks {blocks}")
    parsed.sort()
    return np.array([q for _, q, _ in parsed]), np.array([s for _, _, s in parsed])
