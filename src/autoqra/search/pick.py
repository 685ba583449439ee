"""The final pick of a search, made robust to evaluation noise (pure, no I/O).

A search that keeps the best of ~150 single noisy HF observations picks a plan whose observed score
is biased upwards (the winner's curse), and the same observation then says how good it is. Here:

1. ``pick_candidates``: the top-k feasible observed plans, taken in turn by the search's utility
   (Stage 2's incumbents) and by HF score, each filled to the budget (``fill_to_budget``), distinct;
2. every candidate is re-evaluated at HF with ``reevaluation_seeds`` (seeds the search never used);
3. ``robust_pick``: the candidate with the best mean over those seeds (HF score in the pipeline;
   filled candidates all sit within one upgrade of the budget, so mean utility would rank them the
   same up to sub-upgrade memory differences), with its spread.

Any score reported for the picked plan comes from yet another seed, ``heldout_seed``.

Why this rule (``benchmarks/search_sim.py``, paper settings, Qwen3-4B and Llama-3-8B shapes, three
sensitivity profiles, 5 seeds; ``pick_*`` entries of ``benchmarks/results/search_sim.json``):
Stage 2 maximises α·P̃ − (1−α)·M̃, which trades score for memory: its best plans by utility,
picked as they are (the earlier rule), ended at 0.77-0.85 of the budget with a true score 0.13-0.29
below the pick below, in every run. Filled, the top plans by utility are strong on uniform and
smooth profiles (mean true −0.9120 / −0.9331 on Qwen3-4B) but poor on the flat bulk with outliers
(−1.0300; the fill spends the rest of the budget on cheap rank upgrades where the search had put
8-bit outliers); the top plans by score are the reverse (−0.9875 there, −0.9287 / −0.9458 on the
others). Taking candidates from both rankings in turn came close to the better of the two on
every model and profile (at most 0.0041 below it; −0.9897 / −0.9161 / −0.9343 on Qwen3-4B).
Stage 2 keeps its utility GP; only the candidates it hands to the pick are filled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoqra.search.space import Genome, SearchSpace, fill_to_budget

# The pipeline's pick seeds start here (config ``refine.pick_seed_offset``): far above the final
# fine-tuning seeds (finetune.seeds, 0-4 in the study), so the seeds a plan was picked on never
# score it again in the tables. The pure functions default to 0 (seeds right after the search's).
PICK_SEED_OFFSET = 1000


def reevaluation_seeds(seed: int, n: int, offset: int = 0) -> list[int]:
    """The fresh seeds of the re-evaluations: the ``n`` seeds after ``seed + offset``."""
    return [int(seed) + int(offset) + i for i in range(1, int(n) + 1)]


def heldout_seed(seed: int, n: int, offset: int = 0) -> int:
    """The seed of any score reported for a picked plan: used neither by the search nor by its
    ``n`` re-evaluations."""
    return int(seed) + int(offset) + int(n) + 1


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
