"""The final pick of a search, made robust to evaluation noise (pure, no I/O).

A search that keeps the best of ~150 single noisy HF observations picks a plan whose observed score
is biased upwards (the winner's curse), and the same observation then says how good it is. Here:

1. ``pick_candidates``: the top-k feasible observed plans by the search's utility, each filled to
   the budget (``fill_to_budget``), distinct;
2. every candidate is re-evaluated at HF with ``reevaluation_seeds`` (seeds the search never used);
3. ``robust_pick``: the candidate with the best mean utility over those seeds, with its spread.

Any score reported for the picked plan comes from yet another seed, ``heldout_seed``.

Why fill: Stage 2 maximises α·P̃ − (1−α)·M̃, which may trade a little score for memory; the user
asked for the best plan that fits the budget. Filled, every candidate is "within one upgrade of the
budget", so their memories are nearly equal and the mean utility ranks them by score. In
``benchmarks/search_sim.py`` the unfilled pick (``--no-fill``) ended below the budget in some runs and
lost true score to the filled one (numbers in ``benchmarks/results/search_sim.json``); Stage 2 keeps
its utility GP, only the candidates it hands to the pick are filled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoqra.search.space import Genome, SearchSpace, fill_to_budget


def reevaluation_seeds(seed: int, n: int) -> list[int]:
    """The fresh seeds of the re-evaluations: the ``n`` seeds after the search's own."""
    return [int(seed) + i for i in range(1, int(n) + 1)]


def heldout_seed(seed: int, n: int) -> int:
    """The seed of any score reported for a picked plan: used neither by the search nor by its
    ``n`` re-evaluations."""
    return int(seed) + int(n) + 1


def pick_candidates(space: SearchSpace, genomes: Sequence[Genome], rankings: Sequence[Sequence[float | None]],
                    k: int, imp_q: np.ndarray, imp_r: np.ndarray, fill: bool = True) -> list[Genome]:
    """Up to ``k`` distinct candidates from the feasible observed ``genomes``, taken in turn from each
    ranking (one value per genome, higher is better, None = not scored; ties: first observed), each
    filled to the budget when ``fill``; a plan that fills into an earlier candidate is skipped."""
    if k < 1:
        raise ValueError(f"pick: k must be >= 1, got {k}")
    orders = []
    for values in rankings:
        if len(values) != len(genomes):
            raise ValueError(f"pick: {len(values)} values for {len(genomes)} plans")
        ok = [i for i, v in enumerate(values) if v is not None and np.isfinite(v) and space.feasible(genomes[i])]
        orders.append(iter(sorted(ok, key=lambda i, v=values: -float(v[i]))))
    out: list[Genome] = []
    seen: set[bytes] = set()
    while orders and len(out) < k:
        for order in list(orders):
            i = next(order, None)
            if i is None:
                orders.remove(order)
                continue
            g = np.asarray(genomes[i], dtype=np.int64)
            g = fill_to_budget(space, g, imp_q, imp_r) if fill else g.copy()
            if space.key(g) not in seen and len(out) < k:
                seen.add(space.key(g))
                out.append(g)
    return out


def robust_pick(values: Sequence[Sequence[float | None]]) -> tuple[int, list[float], list[float]]:
    """(index of the best candidate by mean value, every candidate's mean, every candidate's std).

    ``values[i]`` are candidate i's re-evaluations (None = failed, left out of its mean); a
    candidate without one successful re-evaluation has mean -inf and never wins unless all fail,
    which is an error. Ties go to the earlier candidate (the better one by the search's own rank).
    """
    means, stds = [], []
    for row in values:
        ok = np.array([float(v) for v in row if v is not None and np.isfinite(v)])
        means.append(float(ok.mean()) if len(ok) else -np.inf)
        stds.append(float(ok.std(ddof=1)) if len(ok) > 1 else 0.0)
    if not means or not np.isfinite(max(means)):
        raise ValueError("robust pick: no candidate has a successful re-evaluation")
    return int(np.argmax(means)), means, stds
