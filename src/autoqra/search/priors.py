"""How the search reads the Stage-0 sensitivities: one normalisation of the raw I_q / I_r to [0, 1],
used by every operator (warm-start interpolation, fill, repair, importance-guided mutation) and
by the surrogates' coverage features.

Three maps were compared in ``benchmarks/search_sim.py`` (the real Stage 1 + Stage 2 + pick at the
paper's settings on Qwen3-4B and Llama-3-8B shapes, three sensitivity profiles, 3 seeds each;
``benchmarks/results/search_sim_norms.json``):

- ``minmax``: (x − min)/(max − min), Stage 0's file format. A flat bulk with a few outliers puts
  the bulk near 0 and one block at exactly 0, so the interpolated seed sends the bulk to the
  lowest rungs and importance-weighted draws almost never touch it;
- ``max``: x / max. Keeps ratios (a block twice as sensitive gets twice the weight), so the
  importance-per-byte comparisons of repair and fill compare measured ratios, and no block is at 0;
- ``rank``: average rank / n. Throws the magnitudes away; outliers look like any other top block.

Gap of the final plan's true score to the knapsack optimum, mean over models and seeds (flat bulk
+ outliers / uniform random / smooth): max −0.007 / −0.012 / −0.015, minmax −0.018 / −0.011 /
−0.022, rank −0.021 / −0.009 / −0.007. ``max`` has the smallest mean gap (−0.011 vs −0.012 rank,
−0.017 minmax) and the smallest worst case (−0.015 vs −0.021 and −0.022); it is clearly best on
the flat-bulk-plus-outliers profile that real LLMs show (first/last blocks far more sensitive) and
loses to ``rank`` only on the smooth one. Hence the default.
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
