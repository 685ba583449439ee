"""Variation operators of the Stage-1 search: warm start (seed, fill, uniform plans, jitter),
coupled and uncoupled crossover and mutation (the uncoupled ones are an ablation, as are flat
mutation-site draws). Every genome an operator hands out for evaluation is repaired to the budget;
crossovers alone return raw children that the caller repairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from autoqra.search.space import Genome, SearchSpace, fill_to_budget, repair_to_budget

# Added to importances in the importance-weighted draws: min-max normalisation puts one block at
# exactly 0 (or 1), and a zero weight would freeze that gene for the whole search.
IMP_FLOOR = 0.02
FILL_TRIES = 100  # random draws per missing genome before giving up on de-duplication


def _tops(space: SearchSpace) -> np.ndarray:
    """Highest ladder index per genome row, shaped to broadcast against a genome."""
    return np.array([[len(space.bits) - 1], [len(space.ranks) - 1]])


def _importance(imp_q: np.ndarray, imp_r: np.ndarray) -> np.ndarray:
    return np.clip(np.stack([np.asarray(imp_q, float), np.asarray(imp_r, float)]), 0.0, 1.0)


def repair(space: SearchSpace, g: Genome, imp_q: np.ndarray, imp_r: np.ndarray,
           low_bit_cap: float | None = None) -> Genome:
    """Lift the most sensitive blocks above the low-bit cap, then ``repair_to_budget``.

    repair_to_budget alone only limits its own downgrades; random rungs, jitter and crossover can
    put more blocks at the lowest bit-width than the cap allows before repair sees them.
    """
    g = np.array(g, dtype=np.int64, copy=True)
    if low_bit_cap is not None and len(space.bits) > 1:
        low = np.flatnonzero(g[0] == 0)
        excess = len(low) - int(np.floor(low_bit_cap * space.n_blocks))  # same rounding as repair_to_budget
        if excess > 0:
            order = low[np.argsort(-np.asarray(imp_q)[low], kind="stable")]
            g[0, order[:excess]] = 1
    return repair_to_budget(space, g, imp_q, imp_r, low_bit_cap)


def seed_genome(space: SearchSpace, imp_q: np.ndarray, imp_r: np.ndarray, interp: str = "value") -> Genome:
    """Linear interpolation of importances onto the ladders (I=0 → lowest rung, I=1 → top), unrepaired.

    ``interp="value"`` interpolates the bit-width/rank itself (q = q_min + I·(q_max − q_min)) and
    snaps to the nearest rung; ``"index"`` interpolates the rung index. On uneven ladders such as
    (2, 3, 4, 8) the index map sends every block with I < 1/6 to 2 bits, and with diminishing
    returns that seed scored well below uniform 4-bit on the synthetic objective of the tests
    (value map: slightly above it), so "value" is the default.
    """
    imp = _importance(imp_q, imp_r)
    if interp == "index":
        return np.rint(imp * _tops(space)).astype(np.int64)
    if interp != "value":
        raise ValueError(f"interp={interp!r}: expected 'value' or 'index'")
    rows = []
    for row, ladder in zip(imp, (space.bits, space.ranks), strict=True):
        lad = np.asarray(ladder, dtype=float)
        target = lad[0] + row * (lad[-1] - lad[0])
        rows.append(np.abs(target[:, None] - lad[None, :]).argmin(axis=1))
    return np.array(rows, dtype=np.int64)


def allocation_seed(space: SearchSpace, imp_q: np.ndarray, imp_r: np.ndarray, reference_rank: int | None = None,
                    low_bit_cap: float | None = None) -> Genome:
    """The priors' own bit allocation, as the oracle makes it but from Stage 0's estimates: every block
    at the reference rank (the budget's; None: the middle rung) and the lowest bit-width, then one bit
    rung at a time to the block with the most expected damage removed per byte (damage = I_q x
    ``rung_steps``: 2->3 removes 0.75 of a block's damage for one bit, 4->8 0.06 for four), and
    ``fill_to_budget`` for what is left. The per-byte values fall along the ladder, so this greedy is
    the marginal-analysis optimum of that additive model up to its last step: a sensitive block
    climbs to 4 bits before others leave 2, and to 8 only once their cheap rungs are bought. The
    interpolated seed cannot do this at a tight budget: it gives the most important block 8 bits before
    the budget is known (fill only climbs), and starting ranks at the bottom instead spends bytes on
    ranks that bits repay better (both measured on the synthetic objective of tests/unit/test_search.py)."""
    r_ref = space.ranks[len(space.ranks) // 2] if reference_rank is None else reference_rank
    g = np.zeros((2, space.n_blocks), dtype=np.int64)
    g[1] = space.ranks.index(r_ref) if r_ref in space.ranks else len(space.ranks) // 2
    if not space.feasible(g):  # the lowest bits at the reference rank do not fit: repair lowers ranks
        return repair(space, g, imp_q, imp_r, low_bit_cap)
    g = fill_to_budget(space, g, imp_q, imp_r, bits_only=True)
    return repair(space, fill_to_budget(space, g, imp_q, imp_r), imp_q, imp_r, low_bit_cap)


def jitter_genome(space: SearchSpace, g: Genome, rng: np.random.Generator, jitter: float) -> Genome:
    """Move each gene one rung up or down with probability ``jitter`` (reflected at the ladder ends)."""
    move = rng.random(g.shape) < jitter
    step = rng.choice(np.array([-1, 1]), size=g.shape)
    h = g + move * step
    top = _tops(space)
    # reflect instead of clipping so a gene at an end still moves when selected
    h = np.where(h < 0, 1, h)
    h = np.where(h > top, top - 1, h)
    return np.clip(h, 0, top).astype(np.int64)


def random_genome(space: SearchSpace, rng: np.random.Generator, imp_q: np.ndarray, imp_r: np.ndarray,
                  low_bit_cap: float | None = None) -> Genome:
    """Uniformly random rungs, repaired to the budget (the "no warm start" initialisation)."""
    n = space.n_blocks
    g = np.stack([rng.integers(0, len(space.bits), n), rng.integers(0, len(space.ranks), n)])
    return repair(space, g, imp_q, imp_r, low_bit_cap)


def sample_feasible(space: SearchSpace, rng: np.random.Generator, tries: int = 1000) -> Genome:
    """A uniform draw from the feasible genomes by rejection (random-search baseline); after
    ``tries`` misses, a uniform draw repaired with flat importances."""
    n = space.n_blocks
    for _ in range(tries):
        g = np.stack([rng.integers(0, len(space.bits), n), rng.integers(0, len(space.ranks), n)])
        if space.feasible(g):
            return g.astype(np.int64)
    flat = np.full(n, 0.5)
    return random_genome(space, rng, flat, flat)


def _fill_unique(space: SearchSpace, out: list[Genome], seen: set[bytes], n: int,
                 rng: np.random.Generator, imp_q: np.ndarray, imp_r: np.ndarray,
                 low_bit_cap: float | None) -> list[Genome]:
    """Top ``out`` up to ``n`` distinct genomes with random ones; fewer only if the space runs dry."""
    tries = 0
    while len(out) < n and tries < FILL_TRIES * n:
        tries += 1
        g = random_genome(space, rng, imp_q, imp_r, low_bit_cap)
        if space.key(g) not in seen:
            seen.add(space.key(g))
            out.append(g)
    return out


def uniform_genomes(space: SearchSpace, reference_rank: int | None = None,
                    low_bit_cap: float | None = None) -> list[Genome]:
    """The uniform plans of the space that fit: every bit-width at the reference rank, and at the
    highest rank that fits. The budget's own plan (the largest feasible one at the reference rank)
    comes first, the others by decreasing memory. ``reference_rank`` None: the middle rank rung.
    Plans with more blocks at the lowest bit-width than ``low_bit_cap`` allows are left out."""
    r_ref = space.ranks[len(space.ranks) // 2] if reference_rank is None else reference_rank
    if r_ref not in space.ranks:
        raise ValueError(f"reference rank {r_ref} is not on the rank ladder {list(space.ranks)}")
    at_ref, others = [], []
    for b in space.bits:
        fitting = [r for r in space.ranks if space.feasible(space.uniform(b, r))]
        if low_bit_cap is not None and b == space.bits[0] and low_bit_cap < 1:
            continue  # every block at the lowest bit-width breaks any cap below 1
        if r_ref in fitting:
            at_ref.append(space.uniform(b, r_ref))
        if fitting and fitting[-1] != r_ref:
            others.append(space.uniform(b, fitting[-1]))
    at_ref.sort(key=space.memory, reverse=True)
    rest = sorted(at_ref[1:] + others, key=space.memory, reverse=True)
    return at_ref[:1] + rest


def warm_start(space: SearchSpace, imp_q: np.ndarray, imp_r: np.ndarray, n: int,
               rng: np.random.Generator, jitter: float = 0.15,
               low_bit_cap: float | None = None, interp: str = "value",
               reference_rank: int | None = None) -> list[Genome]:
    """The warm-started initial population (``n`` distinct feasible genomes):

    1. the importance-interpolated seed, repaired, then filled to the budget (``fill_to_budget``:
       the interpolation alone leaves memory unused, and mutation cannot be relied on to climb);
    2. the uniform plans that fit (``uniform_genomes``: the budget's own first), at most ``n // 2``
       of them so that small populations keep room for the seed's neighbourhood;
    3. jittered copies of the seed, each repaired and filled; random genomes if the jitter runs dry.
    """
    seed = fill_to_budget(space, repair(space, seed_genome(space, imp_q, imp_r, interp), imp_q, imp_r, low_bit_cap),
                          imp_q, imp_r)
    alloc = allocation_seed(space, imp_q, imp_r, reference_rank, low_bit_cap)
    out, seen = [alloc], {space.key(alloc)}
    if space.key(seed) not in seen:
        seen.add(space.key(seed))
        out.append(seed)
    for g in uniform_genomes(space, reference_rank, low_bit_cap)[:max(n // 2, 1)]:
        if len(out) < n and space.key(g) not in seen:
            seen.add(space.key(g))
            out.append(g)
    for _ in range(2 * n):
        if len(out) >= n:
            break
        g = repair(space, jitter_genome(space, seed, rng, jitter), imp_q, imp_r, low_bit_cap)
        g = fill_to_budget(space, g, imp_q, imp_r)
        if space.key(g) not in seen:
            seen.add(space.key(g))
            out.append(g)
    return _fill_unique(space, out, seen, n, rng, imp_q, imp_r, low_bit_cap)


def random_population(space: SearchSpace, imp_q: np.ndarray, imp_r: np.ndarray, n: int,
                      rng: np.random.Generator, low_bit_cap: float | None = None) -> list[Genome]:
    """``n`` distinct random repaired genomes."""
    return _fill_unique(space, [], set(), n, rng, imp_q, imp_r, low_bit_cap)


def coupled_crossover(a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
    """Uniform crossover over blocks: each block takes its (bits, rank) pair from one parent."""
    take_a = rng.random(a.shape[1]) < 0.5
    return np.where(take_a[None, :], a, b).astype(np.int64)


def uncoupled_crossover(a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
    """Uniform crossover over genes: bits and rank of a block may come from different parents."""
    take_a = rng.random(a.shape) < 0.5
    return np.where(take_a, a, b).astype(np.int64)


def _draw(weights: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """A (row, block) drawn with probability proportional to ``weights`` (shape of a genome)."""
    w = weights.ravel()
    k = int(rng.choice(w.size, p=w / w.sum()))
    return divmod(k, weights.shape[1])


def site_weights(imp_q: np.ndarray, imp_r: np.ndarray, gamma: float, guided: bool = True
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(upgrade, downgrade) weights per gene: Pr ∝ (I + floor)^γ up and (1 − I + floor)^γ down;
    flat when ``guided`` is False (the "w/o importance guidance" ablation)."""
    imp = _importance(imp_q, imp_r)
    if not guided:
        return np.ones_like(imp), np.ones_like(imp)
    return (imp + IMP_FLOOR) ** gamma, (1.0 - imp + IMP_FLOOR) ** gamma


def _n_moves(n: int, p: float | None, rng: np.random.Generator) -> int:
    return max(1, int(rng.binomial(n, p if p is not None else 1.0 / n)))


def _down_mask(h: Genome, low_bit_cap: float | None) -> np.ndarray:
    """Genes that may go one rung down; none to the lowest bit-width once the low-bit cap is full."""
    can_down = h > 0
    if low_bit_cap is not None and (h[0] == 0).sum() + 1 > low_bit_cap * h.shape[1]:
        can_down[0] &= h[0] != 1
    return can_down


def coupled_mutation(space: SearchSpace, g: Genome, imp_q: np.ndarray, imp_r: np.ndarray,
                     rng: np.random.Generator, gamma: float = 1.5, p: float | None = None,
                     low_bit_cap: float | None = None, *, guided: bool = True) -> Genome:
    """Binomial(n_blocks, p) upgrades (at least one; p = 1/n_blocks), each at a gene drawn with
    Pr ∝ I^γ; an upgrade is paired with a compensating downgrade in another block (Pr ∝ (1−I)^γ)
    only when the plan would not fit without one, then the plan is repaired.

    Pairing every upgrade (the earlier rule) kept a plan's memory where it started, so a population
    seeded below the budget stayed below it; unpaired upgrades let the search climb to the budget.
    One compensating step, not "cut until the memory is back": cuts rarely match the upgrade's bytes
    and overshoot on average; repair's least-importance-per-byte greedy settles any remainder.
    """
    h = np.array(g, dtype=np.int64, copy=True)
    up_w, down_w = site_weights(imp_q, imp_r, gamma, guided)
    top = _tops(space)
    for _ in range(_n_moves(space.n_blocks, p, rng)):
        can_up = h < top
        if not can_up.any():
            break
        kind, ell = _draw(np.where(can_up, up_w, 0.0), rng)
        h[kind, ell] += 1
        if space.feasible(h):
            continue
        can_down = _down_mask(h, low_bit_cap)
        can_down[:, ell] = False  # compensate elsewhere, never undo the upgrade itself
        if can_down.any():
            k2, l2 = _draw(np.where(can_down, down_w, 0.0), rng)
            h[k2, l2] -= 1
    return repair(space, h, imp_q, imp_r, low_bit_cap)


def uncoupled_mutation(space: SearchSpace, g: Genome, imp_q: np.ndarray, imp_r: np.ndarray,
                       rng: np.random.Generator, p: float | None = None,
                       low_bit_cap: float | None = None, *, gamma: float = 1.5, guided: bool = True) -> Genome:
    """The "w/o coupled operators" mutation: the same importance-guided choice of site as
    ``coupled_mutation``, without the pairing. Binomial(n_blocks, p) independent moves (at least
    one), each an upgrade (Pr ∝ I^γ) or a downgrade (Pr ∝ (1−I)^γ) with probability 1/2; only the
    repair brings the plan back under the budget."""
    h = np.array(g, dtype=np.int64, copy=True)
    up_w, down_w = site_weights(imp_q, imp_r, gamma, guided)
    top = _tops(space)
    for _ in range(_n_moves(space.n_blocks, p, rng)):
        up = rng.random() < 0.5
        mask = h < top if up else _down_mask(h, low_bit_cap)
        if not mask.any():
            continue
        kind, ell = _draw(np.where(mask, up_w if up else down_w, 0.0), rng)
        h[kind, ell] += 1 if up else -1
    return repair(space, h, imp_q, imp_r, low_bit_cap)


@dataclass(frozen=True)
class Operators:
    """The operator strategy of one search. ``coupled`` False drops the joint inheritance of
    (bits, rank) and the pairing of upgrades with downgrades (one ablation); ``importance_guided``
    False draws mutation sites uniformly instead of by importance (another)."""

    coupled: bool = True
    gamma: float = 1.5
    jitter: float = 0.15
    low_bit_cap: float | None = None
    mutation_rate: float | None = None
    interp: str = "value"  # warm-start seed map, see seed_genome
    importance_guided: bool = True
    reference_rank: int | None = None  # the budget's rank: the uniform plans of the warm start

    def initial(self, space: SearchSpace, imp_q: np.ndarray, imp_r: np.ndarray, n: int,
                rng: np.random.Generator, warm: bool = True) -> list[Genome]:
        """Warm-started or random initial population (repaired, distinct)."""
        if warm:
            return warm_start(space, imp_q, imp_r, n, rng, self.jitter, self.low_bit_cap, self.interp,
                              self.reference_rank)
        return random_population(space, imp_q, imp_r, n, rng, self.low_bit_cap)

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
        """Raw (unrepaired) child of ``a`` and ``b``."""
        return (coupled_crossover if self.coupled else uncoupled_crossover)(a, b, rng)

    def mutate(self, space: SearchSpace, g: Genome, imp_q: np.ndarray, imp_r: np.ndarray,
               rng: np.random.Generator) -> Genome:
        """Mutated and repaired copy of ``g``."""
        if self.coupled:
            return coupled_mutation(space, g, imp_q, imp_r, rng, self.gamma, self.mutation_rate,
                                    self.low_bit_cap, guided=self.importance_guided)
        return uncoupled_mutation(space, g, imp_q, imp_r, rng, self.mutation_rate, self.low_bit_cap,
                                  gamma=self.gamma, guided=self.importance_guided)

    def repair(self, space: SearchSpace, g: Genome, imp_q: np.ndarray, imp_r: np.ndarray) -> Genome:
        """``g`` brought under the budget with this strategy's low-bit cap."""
        return repair(space, g, imp_q, imp_r, self.low_bit_cap)
