"""How the search reads the Stage-0 sensitivities: one normalisation of the raw I_q / I_r to [0, 1],
used by every operator (warm-start interpolation, fill, repair, importance-guided mutation) and
by the surrogates' coverage features.

Three maps were compared in ``benchmarks/search_sim.py`` (the real Stage 1 + Stage 2 on Qwen3-4B and
Llama-3-8B shapes, three prior shapes, 5 seeds; ``--norms`` there reruns the comparison):

- ``minmax``: (x − min)/(max − min). Stage 0's file format. A flat bulk with a few outliers puts
  the bulk near 0 and one block at exactly 0, so the interpolated seed sends the bulk to the lowest
  rungs and importance-weighted draws almost never touch it;
- ``max``: x / max. Keeps ratios (a block twice as sensitive gets twice the weight), so
  importance-per-byte comparisons in repair and fill mean what they say, and no block is at 0;
- ``rank``: average rank / n. Throws the magnitudes away; outliers look like any other top block.

Default ``max``: in the simulator it gave the best true score of the final plan on the
flat-bulk-plus-outliers and smooth profiles and tied on uniform random ones (numbers in
``benchmarks/results/search_sim.json``, section ``norms``), and it is the one map under which the
importance ratios the greedy repair and fill compare are the measured ones.
"""

from __future__ import annotations

import numpy as np

NORMS = ("max", "minmax", "rank")
DEFAULT_NORM = "max"


def normalise_priors(raw: np.ndarray, how: str = DEFAULT_NORM) -> np.ndarray:
    """Map raw non-negative sensitivities (one per block) to [0, 1] by ``how`` (see module doc)."""
    x = np.asarray(raw, dtype=float)
    if x.ndim != 1 or not np.isfinite(x).all():
        raise ValueError(f"priors: expected one finite value per block, got shape {x.shape}")
    if how not in NORMS:
        raise ValueError(f"prior normalisation {how!r}: expected one of {NORMS}")
    if len(x) == 0:
        return x
    if how == "rank":
        order = np.argsort(x, kind="stable")
        ranks = np.empty(len(x))
        ranks[order] = np.arange(len(x), dtype=float)
        for v in np.unique(x):  # ties share their average rank
            ranks[x == v] = ranks[x == v].mean()
        return (ranks + 1) / len(x)
    lo, hi = float(x.min()), float(x.max())
    if how == "minmax":
        return (x - lo) / (hi - lo) if hi > lo else np.full(len(x), 0.5)
    x = np.clip(x - min(lo, 0.0), 0.0, None)  # x/max needs non-negative values: shift negatives up
    top = float(x.max())
    return x / top if top > 0 else np.full(len(x), 0.5)
