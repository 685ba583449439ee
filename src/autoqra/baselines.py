"""The plans of the baselines the paper compares against (DESIGN §1), all under the same budget
accounting as AutoQRA:

- ``uniform``: the same bits, quantizer and rank in every block (16-bit LoRA with quantizer ``none``,
  QLoRA with ``nf4``, uniform HQQ 4/3/2-bit + LoRA);
- ``sequential``: quantization first, adapters second — mixed bits allocated from the raw ``I_q``
  (JSD in nats, its damage model's own units) under the budget (greedy upgrades by expected damage
  reduction per byte), then one uniform rank;
- ``random``: plans drawn uniformly from the feasible ones (rejection sampling from the ladders, or
  where the budget is too tight for that, by counting: ``FeasibleCounter``), so the distribution is
  not shaped by any prior; the best chosen by the same utility as AutoQRA;
- ``oracle``: the exact optimum of an additive per-block damage model under the budget (rank fixed):
  what a search that knew the damage model would return (``oracle_genome``).

Pure numpy; no I/O.
"""

from __future__ import annotations

import numpy as np

from autoqra.errors import ConfigError
from autoqra.plan import DEFAULT_HQQ_AXIS, DEFAULT_META_BITS, Plan
from autoqra.search.space import EPS, Genome, SearchSpace

PLAN_KINDS = ("search", "uniform", "sequential", "random", "base", "oracle")


def uniform_plan(n_blocks: int, bits: int, rank: int, quantizer: str, group_size: int,
                 hqq_axis: int = DEFAULT_HQQ_AXIS, meta_bits: int = DEFAULT_META_BITS) -> Plan:
    """Every block at ``bits``/``rank`` with ``quantizer``; 16-bit plans are plain LoRA (``none``)."""
    return Plan.uniform(n_blocks, bits, rank, "none" if bits == 16 else quantizer, group_size, hqq_axis, meta_bits)


def sequential_genome(space: SearchSpace, iq_raw: np.ndarray, rank: int) -> Genome:
    """Bits from the raw ``I_q`` under the budget with every rank fixed at ``rank`` (bit allocation
    first, adapters second).

    Block ℓ at ``b`` bits is charged the expected damage ``I_q(ℓ)·4^-(b - b_min)`` (each extra bit
    divides the quantization MSE by ~4; ``I_q`` is the measured damage at the lowest width, the
    raw JSD: a min-max normalised prior would charge its least sensitive block nothing). From
    every block at the lowest rung, the upgrade with the largest damage reduction per extra byte is
    applied while it fits the budget — the classic greedy for this knapsack (HAWQ-style). Starting
    from the top and cutting instead would stop at uniform 4-bit on a uniform-4-bit budget: an 8→4
    cut saves far more bytes per unit of importance than any 4→3 cut.
    """
    if rank not in space.ranks:
        raise ConfigError(f"sequential baseline: rank {rank} is not on the rank ladder {list(space.ranks)}")
    iq_raw = np.asarray(iq_raw, float)
    if iq_raw.shape != (space.n_blocks,) or not np.isfinite(iq_raw).all() or (iq_raw < 0).any():
        raise ValueError(f"sequential baseline: expected {space.n_blocks} finite raw I_q values >= 0 (JSD, nats)")
    imp_q = iq_raw + EPS
    n, ir = space.n_blocks, space.ranks.index(rank)
    g = space.uniform(space.bits[0], rank)
    if not space.feasible(g):
        raise ConfigError(f"sequential baseline: every block at {space.bits[0]} bits with rank {rank} still "
                          f"needs {space.memory(g):.0f} bytes > budget {space.budget:.0f}; lower the rank")
    b_min = space.bits[0]

    def damage(ell: int, i_bits: int) -> float:
        return imp_q[ell] * 4.0 ** -(space.bits[i_bits] - b_min)

    used = space.memory(g)
    while True:
        best, best_val = None, 0.0
        for ell in range(n):
            i = g[0, ell]
            if i + 1 >= len(space.bits):
                continue
            extra = space.cost[ell, i + 1, ir] - space.cost[ell, i, ir]
            if used + extra > space.budget * (1 + 1e-12):
                continue
            val = (damage(ell, i) - damage(ell, i + 1)) / max(extra, EPS)
            if val > best_val:
                best, best_val = ell, val
        if best is None:
            return g
        used += space.cost[best, g[0, best] + 1, ir] - space.cost[best, g[0, best], ir]
        g[0, best] += 1


def random_genomes(space: SearchSpace, n: int, rng: np.random.Generator, max_tries: int = 100_000) -> list[Genome]:
    """``n`` distinct feasible genomes drawn uniformly from the feasible plans (no prior shapes the draw).

    First plain rejection sampling (each block's bits and rank uniform on the ladders, keep what fits);
    where the budget is tight that accepts almost nothing (the study's b3, halfway between uniform 2-
    and 4-bit, admits ~1 in 10^5 of SmolLM2's plans), so the remaining draws come from
    ``FeasibleCounter``, whose draws are uniform over the same set. Both are exact, so the switch
    changes only the cost of the draw, not its distribution.
    """
    out: dict[bytes, Genome] = {}
    tries = min(max_tries, 1000 * n)
    for _ in range(tries):
        if len(out) == n:
            break
        g = np.stack([rng.integers(0, len(space.bits), space.n_blocks),
                      rng.integers(0, len(space.ranks), space.n_blocks)]).astype(np.int64)
        if space.feasible(g):
            out.setdefault(space.key(g), g)
    counter = FeasibleCounter(space) if len(out) < n else None
    for _ in range(max_tries):
        if len(out) == n or counter is None or counter.log_count == -np.inf:
            break
        g = counter.draw(rng)
        if space.feasible(g):
            out.setdefault(space.key(g), g)
    if len(out) < n:
        raise ValueError(f"random search: found only {len(out)} of {n} feasible plans (the budget admits too few "
                         f"distinct plans; at most ~{counter.count_estimate() if counter else 0:.3g})")
    return list(out.values())


class FeasibleCounter:
    """Uniform draws from the plans whose memory fits the budget, by counting (a knapsack DP).

    Block costs are measured in units of budget / ``bins``, rounded DOWN, so every plan that fits
    in bytes also fits in units: the DP counts a superset S of the feasible set F (it adds only
    plans within ``n_blocks`` units of the budget). ``draw`` returns a plan uniform on S: block by
    block, each option with probability (ways to complete the rest in the remaining units) / (ways
    from here); rejecting the draws outside F (the caller's exact ``feasible``) leaves a plan
    uniform on F. Counts are kept as logs (12^30 plans overflow nothing then).
    """

    def __init__(self, space: SearchSpace, bins: int | None = None):
        n, nb, nr = space.cost.shape
        self.n_ranks = nr
        self.bins = bins or max(4096, 64 * n)
        unit = space.budget * (1 + 1e-12) / self.bins
        self.units = np.floor(space.cost.reshape(n, nb * nr) / unit).astype(np.int64)  # (blocks, options)
        log_ways = np.full((n + 1, self.bins + 1), -np.inf)
        log_ways[n] = 0.0  # the empty rest fits in any m >= 0 units in exactly one way
        for k in range(n - 1, -1, -1):
            log_ways[k] = np.logaddexp.reduce(np.stack([self._shifted(log_ways[k + 1], u) for u in self.units[k]]), axis=0)
        self.log_ways = log_ways
        self.log_count = float(log_ways[0, self.bins])

    @staticmethod
    def _shifted(row: np.ndarray, u: int) -> np.ndarray:
        """``row[m - u]`` for every m (−inf where m < u)."""
        out = np.full_like(row, -np.inf)
        if u < len(row):
            out[u:] = row[: len(row) - u]
        return out

    def count_estimate(self) -> float:
        """|S|, an upper bound on the number of feasible plans."""
        return float(np.exp(self.log_count)) if self.log_count > -np.inf else 0.0

    def draw(self, rng: np.random.Generator) -> Genome:
        n = self.units.shape[0]
        g, m = np.zeros((2, n), np.int64), self.bins
        for k in range(n):
            rest = np.array([self.log_ways[k + 1, m - u] if u <= m else -np.inf for u in self.units[k]])
            p = np.exp(rest - self.log_ways[k, m])
            o = int(rng.choice(len(p), p=p / p.sum()))
            g[:, k] = divmod(o, self.n_ranks)
            m -= int(self.units[k, o])
        return g


# -- the oracle: exact optimum of the additive damage model ----------------------------------------

def block_damages(iq_raw: np.ndarray, rung_damage: dict[int, float], bits: tuple[int, ...]) -> np.ndarray:
    """(blocks, rungs) damage table of the additive model: block ℓ at rung b costs
    ``share_ℓ · d(b)``, ``share_ℓ = I_q(ℓ) / Σ I_q`` (raw JSD, so the shares are the measured
    sensitivity spread) and ``d(b)`` the measured damage of the *uniform* b-bit model (nats/token),
    so that every uniform plan's modelled damage is its measured one."""
    iq = np.asarray(iq_raw, float)
    if iq.ndim != 1 or not np.isfinite(iq).all() or (iq < 0).any() or iq.sum() <= 0:
        raise ValueError("oracle: expected finite raw I_q values >= 0 with a positive sum (JSD, nats)")
    missing = [b for b in bits if b not in rung_damage]
    if missing:
        raise ConfigError(f"oracle: no measured damage for rung(s) {missing} (method key 'damages' or the "
                          f"quantizer bench JSON)")
    return np.outer(iq / iq.sum(), [float(rung_damage[b]) for b in bits])


def oracle_genome(space: SearchSpace, table: np.ndarray, rank: int, bins: int | None = None) -> tuple[Genome, dict]:
    """The plan with every rank at ``rank`` that minimises Σ_ℓ ``table[ℓ, bits_ℓ]`` under the budget:
    a multiple-choice knapsack solved by DP over memory in units of budget / ``bins``.

    Costs rounded DOWN make the DP solve a relaxation (a superset of the feasible plans, as in
    ``FeasibleCounter``) whose optimum bounds every feasible plan's damage from below
    (``lower_bound``); if that plan fits in bytes, it is the exact optimum. Otherwise costs rounded
    UP give a plan that fits for sure, exact when its damage equals the bound (``exact``); the two
    differ only where the budget binds within ``n_blocks`` units.
    """
    if rank not in space.ranks:
        raise ConfigError(f"oracle: rank {rank} is not on the rank ladder {list(space.ranks)}")
    n, nb = space.n_blocks, len(space.bits)
    if table.shape != (n, nb):
        raise ValueError(f"oracle: damage table is {table.shape}, expected ({n}, {nb})")
    ir = space.ranks.index(rank)
    bins = bins or max(1 << 16, 256 * n)
    unit = space.budget * (1 + 1e-12) / bins
    cost = space.cost[:, :, ir]
    g = np.zeros((2, n), np.int64)
    g[1] = ir
    best_down, g[0] = _mck(table, np.floor(cost / unit).astype(np.int64), bins)
    best = best_down
    if not space.feasible(g):
        best, g[0] = _mck(table, np.ceil(cost / unit).astype(np.int64), bins)
        if not np.isfinite(best) or not space.feasible(g):
            raise ConfigError(f"oracle: no plan at rank {rank} fits the budget {space.budget:.0f} bytes")
    info = {"damage": float(best), "lower_bound": float(best_down), "exact": bool(best <= best_down + 1e-12),
            "rank": rank, "bins": bins}
    return g, info


def _mck(table: np.ndarray, units: np.ndarray, bins: int) -> tuple[float, np.ndarray]:
    """Min Σ table[ℓ, c_ℓ] with Σ units[ℓ, c_ℓ] <= bins; (value, choice per block)."""
    n, k = table.shape
    best = np.zeros(bins + 1)  # best[m]: min damage of the blocks so far within m units
    arg = np.zeros((n, bins + 1), np.int8)
    for ell in range(n):
        cand = np.full((k, bins + 1), np.inf)
        for c in range(k):
            u = int(units[ell, c])
            if u <= bins:
                cand[c, u:] = best[: bins + 1 - u] + table[ell, c]
        arg[ell] = np.argmin(cand, axis=0)
        best = cand[arg[ell], np.arange(bins + 1)]
    choice, m = np.zeros(n, np.int64), bins
    if not np.isfinite(best[bins]):
        return float("inf"), choice
    for ell in range(n - 1, -1, -1):
        choice[ell] = arg[ell, m]
        m -= int(units[ell, choice[ell]])
    return float(best[bins]), choice


def plan_damage(table: np.ndarray, g: Genome) -> float:
    """The additive model's damage of genome ``g``."""
    return float(table[np.arange(table.shape[0]), np.asarray(g)[0]].sum())


def plan_distance(a: Genome, b: Genome) -> dict[str, int]:
    """Blocks whose bits differ, whose ranks differ, and whose (bits, rank) pair differs."""
    a, b = np.asarray(a), np.asarray(b)
    return {"bits": int((a[0] != b[0]).sum()), "ranks": int((a[1] != b[1]).sum()),
            "blocks": int(((a[0] != b[0]) | (a[1] != b[1])).sum())}
