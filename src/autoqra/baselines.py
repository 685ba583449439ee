"""The plans of the baselines the paper compares against (DESIGN §1), all under the same budget
accounting as AutoQRA:

- ``uniform``: the same bits and rank in every block (16-bit LoRA with backend ``none``, QLoRA with
  ``bnb`` NF4, uniform HQQ 4/3/2-bit + LoRA);
- ``sequential``: quantization first, adapters second — mixed bits allocated from ``I_q`` alone
  under the budget (greedy: start every block at the top rung, then repeatedly lower the block whose
  fidelity prior ``I_q`` is smallest per byte saved), then one uniform rank;
- ``random``: feasible plans drawn uniformly from the ladders (rejection sampling, so the
  distribution is not shaped by any prior), the best chosen by the same utility as AutoQRA.

Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

from autoqra.errors import ConfigError
from autoqra.plan import Plan
from autoqra.search.space import EPS, Genome, SearchSpace

PLAN_KINDS = ("search", "uniform", "sequential", "random")


def uniform_plan(n_blocks: int, bits: int, rank: int, backend: str, group_size: int) -> Plan:
    """Every block at ``bits``/``rank``; 16-bit plans use backend ``none`` (plain LoRA)."""
    return Plan.uniform(n_blocks, bits, rank, backend="none" if bits == 16 else backend, group_size=group_size)


def sequential_genome(space: SearchSpace, imp_q: np.ndarray, rank: int) -> Genome:
    """Bits from ``I_q`` under the budget with every rank fixed at ``rank``.

    Starts from the highest bit-width everywhere and, while over budget, lowers one block by one
    rung: the block that loses the least fidelity prior per byte saved. Ranks never move.
    """
    if rank not in space.ranks:
        raise ConfigError(f"sequential baseline: rank {rank} is not on the rank ladder {list(space.ranks)}")
    imp_q = np.asarray(imp_q, float)
    n = space.n_blocks
    g = space.uniform(space.bits[-1], rank)
    rows = np.arange(n)
    while not space.feasible(g):
        cur = space.cost[rows, g[0], g[1]]
        best, best_val = None, np.inf
        for ell in range(n):
            if g[0, ell] == 0:
                continue
            saved = cur[ell] - space.cost[ell, g[0, ell] - 1, g[1, ell]]
            val = (imp_q[ell] + EPS) / max(saved, EPS)
            if val < best_val:
                best, best_val = ell, val
        if best is None:
            raise ConfigError(f"sequential baseline: every block at {space.bits[0]} bits with rank {rank} still "
                              f"needs {space.memory(g):.0f} bytes > budget {space.budget:.0f}; lower the rank")
        g[0, best] -= 1
    return g


def random_genomes(space: SearchSpace, n: int, rng: np.random.Generator, max_tries: int = 100_000) -> list[Genome]:
    """``n`` distinct feasible genomes, each block's bits and rank drawn uniformly from the ladders."""
    out: dict[bytes, Genome] = {}
    for _ in range(max_tries):
        if len(out) == n:
            break
        g = np.stack([rng.integers(0, len(space.bits), space.n_blocks),
                      rng.integers(0, len(space.ranks), space.n_blocks)]).astype(np.int64)
        if space.feasible(g):
            out.setdefault(space.key(g), g)
    if len(out) < n:
        raise ValueError(f"random search: found only {len(out)} of {n} feasible plans in {max_tries} draws; "
                         f"the budget admits too few plans for uniform sampling")
    return list(out.values())
