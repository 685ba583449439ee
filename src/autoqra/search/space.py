"""The discrete search space: per-block ladder indices for bits and ranks, their memory cost
table and the greedy repair that brings any configuration under the budget.

A configuration is a ``Genome``: an int array of shape (2, n_blocks); row 0 holds indices into the
bits ladder, row 1 indices into the ranks ladder. Working on indices keeps operators ladder-agnostic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from autoqra.errors import PlanError
from autoqra.plan import DEFAULT_HQQ_AXIS, DEFAULT_META_BITS, Plan, quantizer_map, quantizers_for

Genome = np.ndarray  # int64, shape (2, n_blocks)
EPS = 1e-6


@dataclass(frozen=True)
class SearchSpace:
    """Ladders, the per-block cost table ``cost[ℓ, i_bits, i_rank]`` (bytes) and the budget (bytes),
    plus how plans of the space are quantized: each rung's quantizer (``quantizers``, a map
    bit-width -> quantizer), the HQQ group size, axis and metadata precision."""

    bits: tuple[int, ...]
    ranks: tuple[int, ...]
    cost: np.ndarray
    budget: float
    quantizers: Mapping[int, str] = field(default_factory=quantizer_map)
    group_size: int = 128
    hqq_axis: int = DEFAULT_HQQ_AXIS
    meta_bits: int = DEFAULT_META_BITS

    @classmethod
    def from_memory_model(cls, mm, bits: Sequence[int], ranks: Sequence[int], budget: float) -> SearchSpace:
        """Tabulate ``mm.block_cost`` (an autoqra.memory.MemoryModel, with its quantizer map) over the ladders."""
        bits, ranks = tuple(sorted(bits)), tuple(sorted(ranks))
        table = np.array([[mm.block_cost(b, r)["total"] for r in ranks] for b in bits])
        cost = np.broadcast_to(table, (mm.shape.n_blocks, *table.shape)).copy()
        return cls(bits, ranks, cost, float(budget), dict(mm.quantizers), mm.group_size, mm.hqq_axis,
                   mm.meta_bits)

    @property
    def n_blocks(self) -> int:
        return self.cost.shape[0]

    def memory(self, g: Genome) -> float:
        """M(C) in bytes."""
        return float(self.cost[np.arange(self.n_blocks), g[0], g[1]].sum())

    def feasible(self, g: Genome) -> bool:
        return self.memory(g) <= self.budget * (1 + 1e-12)

    def min_memory(self) -> float:
        return float(self.cost[:, 0, 0].sum())

    def uniform(self, bits: int, rank: int) -> Genome:
        """The genome with ``bits``/``rank`` in every block (values must be on the ladders)."""
        return np.array([[self.bits.index(bits)] * self.n_blocks, [self.ranks.index(rank)] * self.n_blocks])

    def to_plan(self, g: Genome, meta: dict | None = None) -> Plan:
        """The plan of a genome: each block takes its rung's quantizer."""
        bits = tuple(self.bits[i] for i in g[0])
        return Plan(bits, tuple(self.ranks[i] for i in g[1]), quantizers_for(bits, self.quantizers),
                    self.group_size, self.hqq_axis, meta=meta or {}, meta_bits=self.meta_bits)

    def from_plan(self, plan: Plan) -> Genome:
        """The genome of a plan of this space; PlanError when the plan lies outside it (values off the
        ladders, another quantizer for a rung, or other HQQ settings)."""
        plan.check(n_blocks=self.n_blocks)
        off = sorted({b for b in plan.bits if b not in self.bits}) + sorted({r for r in plan.ranks if r not in self.ranks})
        if off:
            raise PlanError(f"plan {plan.hash}: values {off} are not on the ladders {list(self.bits)} / {list(self.ranks)}")
        if plan.quantizers != quantizers_for(plan.bits, self.quantizers):
            raise PlanError(f"plan {plan.hash}: quantizers {sorted(set(plan.quantizers))} differ from this space's "
                            f"map {dict(self.quantizers)}")
        if "hqq" in plan.quantizers and ((plan.group_size, plan.hqq_axis, plan.meta_bits)
                                         != (self.group_size, self.hqq_axis, self.meta_bits)):
            raise PlanError(f"plan {plan.hash}: HQQ group {plan.group_size} axis {plan.hqq_axis} meta_bits "
                            f"{plan.meta_bits}; this space uses group {self.group_size} axis {self.hqq_axis} "
                            f"meta_bits {self.meta_bits}")
        return np.array([[self.bits.index(b) for b in plan.bits], [self.ranks.index(r) for r in plan.ranks]])

    def contains(self, plan: Plan) -> bool:
        """Whether ``plan`` is a point of this space (same ladders, quantizer map and HQQ settings)."""
        try:
            self.from_plan(plan)
        except PlanError:
            return False
        return True

    def encode(self, g: Genome) -> np.ndarray:
        """Ordinal encoding in [0, 1]: bits indices then rank indices, each scaled by its ladder length."""
        qb = g[0] / max(len(self.bits) - 1, 1)
        rb = g[1] / max(len(self.ranks) - 1, 1)
        return np.concatenate([qb, rb]).astype(float)

    def key(self, g: Genome) -> bytes:
        """Hashable identity of a genome (for de-duplication)."""
        return np.asarray(g, dtype=np.int8).tobytes()


def rung_steps(space: SearchSpace) -> tuple[np.ndarray, np.ndarray]:
    """Expected damage removed by each one-rung step up the ladders, per unit of importance:
    ``(bits_steps, rank_steps)``, entry i for rung i -> i+1.

    Bits: quantization damage scales as 4^-(b - b_min) (each bit quarters the rounding MSE; the same
    model as the sequential baseline's), so 2->3 removes 0.75 of a block's damage and 4->8 only
    0.06. Ranks: the adapter's missing capacity scales as r_min / r (4->8 removes 0.5, 8->16 0.25).
    Importance alone (the same value for every rung) made the greedy fill buy 8-bit blocks (one
    4->8 step saves little damage at the price of two 2->4 steps) and the repair crush blocks
    to 2 bits first: at a budget halfway between uniform 2- and 4-bit that plan lost to random
    search by 6 task points (study b3, benchmarks/results/study/).
    """
    bits, ranks = np.asarray(space.bits, float), np.asarray(space.ranks, float)
    return -np.diff(4.0 ** -(bits - bits[0])), -np.diff(ranks[0] / ranks)


def _step_values(space: SearchSpace, g: Genome, imp_q: np.ndarray, imp_r: np.ndarray, down: bool) -> np.ndarray:
    """Importance-weighted damage of every one-step move of ``g``, shape (2, n_blocks) (row 0 bits,
    row 1 rank): removed by the step up (``down`` False) or added by the step down; 0 where the gene
    is at the end of its ladder."""
    out = np.zeros((2, space.n_blocks))
    for kind, (imp, steps) in enumerate(zip((imp_q, imp_r), rung_steps(space), strict=True)):
        idx = g[kind] - 1 if down else g[kind]
        ok = (idx >= 0) & (idx < len(steps))
        out[kind, ok] = (np.asarray(imp, float)[ok] + EPS) * steps[idx[ok]]
    return out


def repair_to_budget(space: SearchSpace, g: Genome, imp_q: np.ndarray, imp_r: np.ndarray,
                     low_bit_cap: float | None = None) -> Genome:
    """Greedy repair: while over budget, apply the one-step downgrade (one block's bits or rank one
    rung down) with the least expected damage added per byte saved (importance x ``rung_steps``).

    ``low_bit_cap`` (fraction of blocks) keeps blocks off the lowest bit-width while other
    downgrades remain; it yields only when nothing else can restore feasibility.
    """
    g = np.array(g, dtype=np.int64, copy=True)
    n = space.n_blocks
    rows = np.arange(n)
    while not space.feasible(g):
        cur = space.cost[rows, g[0], g[1]]
        best, best_val = None, np.inf
        fallback, fallback_val = None, np.inf
        n_low = int((g[0] == 0).sum())
        lost = _step_values(space, g, imp_q, imp_r, down=True)
        for kind in (0, 1):
            for ell in range(n):
                if g[kind, ell] == 0:
                    continue
                h = g.copy()
                h[kind, ell] -= 1
                saved = cur[ell] - space.cost[ell, h[0, ell], h[1, ell]]
                if saved <= 0:
                    continue
                val = lost[kind, ell] / saved
                to_low = kind == 0 and h[0, ell] == 0
                if low_bit_cap is not None and to_low and (n_low + 1) > low_bit_cap * n:
                    if val < fallback_val:
                        fallback, fallback_val = (kind, ell), val
                    continue
                if val < best_val:
                    best, best_val = (kind, ell), val
        step = best or fallback
        if step is None:
            raise ValueError(f"cannot repair: smallest plan needs {space.min_memory():.0f} bytes, "
                             f"budget is {space.budget:.0f}")
        g[step] -= 1
    return g


def _upgrade_costs(space: SearchSpace, g: Genome) -> np.ndarray:
    """Extra bytes of each one-step upgrade, shape (2, n_blocks): row 0 one bit rung up, row 1 one
    rank rung up; +inf where the gene is already at the top of its ladder."""
    rows = np.arange(space.n_blocks)
    cur = space.cost[rows, g[0], g[1]]
    extra = np.full((2, space.n_blocks), np.inf)
    up_b, up_r = g[0] + 1 < len(space.bits), g[1] + 1 < len(space.ranks)
    extra[0, up_b] = space.cost[rows[up_b], g[0, up_b] + 1, g[1, up_b]] - cur[up_b]
    extra[1, up_r] = space.cost[rows[up_r], g[0, up_r], g[1, up_r] + 1] - cur[up_r]
    return extra


def saturated(space: SearchSpace, g: Genome) -> bool:
    """True when no one-step upgrade fits the budget any more: the plan is "within one upgrade of
    the budget" (the leftover is smaller than the cheapest upgrade still on the ladders)."""
    g = np.asarray(g, dtype=np.int64)
    left = space.budget * (1 + 1e-12) - space.memory(g)
    return bool(left >= 0 and not (_upgrade_costs(space, g) <= left).any())


def fill_to_budget(space: SearchSpace, g: Genome, imp_q: np.ndarray, imp_r: np.ndarray,
                   bits_only: bool = False) -> Genome:
    """Greedy fill, the mirror of ``repair_to_budget``: while some one-step upgrade (one block's
    bits or rank one rung up; ``bits_only``: bits) still fits, apply the one with the most expected
    damage removed (importance x ``rung_steps``) per extra byte. A plan over the budget is returned
    unchanged (repair it first)."""
    g = np.array(g, dtype=np.int64, copy=True)
    limit = space.budget * (1 + 1e-12)
    while True:
        extra = _upgrade_costs(space, g)
        if bits_only:
            extra[1] = np.inf
        fits = extra <= limit - space.memory(g)
        if not fits.any():
            return g
        # a zero-byte upgrade (flat cost table) is free: take it first
        val = np.where(fits, _step_values(space, g, imp_q, imp_r, down=False) / np.maximum(extra, EPS), -np.inf)
        kind, ell = np.unravel_index(int(np.argmax(val)), val.shape)
        g[kind, ell] += 1
