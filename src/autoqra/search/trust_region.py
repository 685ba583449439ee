"""Stage 2: trust-region Bayesian optimisation around the Stage-1 Pareto set (ask/tell, no I/O).

A GP (see ``tr_gp``) models the scalarised utility ``f = α·P̃ − (1−α)·M̃`` of a plan, with P̃ and
M̃ min-max normalised by constants fixed at start from the Stage-1 Pareto front, so utilities of
every iteration stay comparable. Candidates are plans within ``radius`` atomic edits (one block's
bits or rank one rung up or down) of the incumbents, repaired to the budget; a repaired plan that
left the region is dropped. The batch is chosen greedily by log-EI with the kriging-believer
fantasy (the chosen plan's posterior mean is added as an observation before the next pick), which
spreads a batch better than the top-q of one EI pass. The radius follows the TuRBO rule.

Each iteration can run in its own process: ``state_dict()``/``from_state()`` carry everything,
including the generator state, so a resumed run continues exactly as an uninterrupted one.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from autoqra.search.space import EPS, Genome, SearchSpace, repair_to_budget

STATE_VERSION = 1


@dataclass
class TrustRegionSettings:
    """Stage-2 knobs; radii count atomic edits, ``ei_tol`` and ``success_threshold`` are in utility units."""

    alpha: float = 0.6
    q: int = 2
    iterations: int = 4
    n_candidates: int = 256
    init_radius: int = 2
    min_radius: int = 1
    max_radius: int = 6
    success_tolerance: int = 2
    failure_tolerance: int = 2
    incumbents: int = 3
    ei_tol: float = 1e-4
    success_threshold: float = 1e-3
    low_bit_cap: float | None = None
    gp_maxiter: int = 100

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"trust_region.alpha must be in [0, 1], got {self.alpha}")
        if int(self.iterations) < 0:
            raise ValueError(f"trust_region.iterations must be >= 0, got {self.iterations}")
        for key in ("q", "n_candidates", "min_radius", "success_tolerance",
                    "failure_tolerance", "incumbents", "gp_maxiter"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"trust_region.{key} must be >= 1, got {getattr(self, key)}")
        if not self.min_radius <= self.init_radius <= self.max_radius:
            raise ValueError("trust_region radii must satisfy min_radius <= init_radius <= max_radius, "
                             f"got {self.min_radius}, {self.init_radius}, {self.max_radius}")


def edit_distance(a: Genome, b: Genome) -> int:
    """Number of atomic edits between two genomes: Σ |Δ rung| over bits and ranks."""
    return int(np.abs(np.asarray(a) - np.asarray(b)).sum())


def atomic_moves(space: SearchSpace, g: Genome) -> list[tuple[int, int, int]]:
    """All (row, block, ±1) single-rung moves that stay on the ladders."""
    tops = (len(space.bits) - 1, len(space.ranks) - 1)
    return [(row, ell, d) for row in (0, 1) for ell in range(space.n_blocks) for d in (-1, 1)
            if 0 <= g[row, ell] + d <= tops[row]]


def _apply(g: Genome, move: tuple[int, int, int]) -> Genome:
    h = np.array(g, dtype=np.int64, copy=True)
    h[move[0], move[1]] += move[2]
    return h


def trust_region_candidates(space: SearchSpace, incumbents: list[Genome], radius: int,
                            n_candidates: int, imp_q: np.ndarray, imp_r: np.ndarray,
                            rng: np.random.Generator, exclude: set[bytes],
                            low_bit_cap: float | None = None) -> list[Genome]:
    """Repaired, feasible, new plans within ``radius`` edits of some incumbent (at most ``n_candidates``)."""
    raw = [_apply(inc, m) for inc in incumbents for m in atomic_moves(space, inc)]
    for _ in range(n_candidates if radius >= 2 else 0):
        h = np.array(incumbents[int(rng.integers(len(incumbents)))], copy=True)
        for _ in range(int(rng.integers(2, radius + 1))):
            moves = atomic_moves(space, h)
            h = _apply(h, moves[int(rng.integers(len(moves)))])
        raw.append(h)
    out, seen = [], set(exclude)
    for h in raw:
        h = repair_to_budget(space, h, imp_q, imp_r, low_bit_cap)
        k = space.key(h)
        if k in seen or min(edit_distance(h, inc) for inc in incumbents) > radius:
            continue
        seen.add(k)
        out.append(h)
    if len(out) > n_candidates:
        keep = np.sort(rng.choice(len(out), size=n_candidates, replace=False))
        out = [out[i] for i in keep]
    return out


def plan_features(space: SearchSpace, g: Genome, imp_q: np.ndarray, imp_r: np.ndarray) -> np.ndarray:
    """GP inputs in [0, 1]: ordinal encoding + importance-weighted mean bit/rank rung + memory."""
    wq, wr = np.asarray(imp_q, float) + EPS, np.asarray(imp_r, float) + EPS
    qb, rb = np.split(space.encode(g), 2)
    lo, hi = space.cost.min(axis=(1, 2)).sum(), space.cost.max(axis=(1, 2)).sum()
    mem = (space.memory(g) - lo) / max(hi - lo, 1.0)
    return np.concatenate([space.encode(g), [wq @ qb / wq.sum(), wr @ rb / wr.sum(), mem]])


def _front(scores: list[float], mems: list[float]) -> list[int]:
    """Indices of the non-dominated points (maximise score, minimise memory)."""
    return [i for i in range(len(scores))
            if not any(scores[j] >= scores[i] and mems[j] <= mems[i]
                       and (scores[j] > scores[i] or mems[j] < mems[i]) for j in range(len(scores)))]


class TrustRegionSearch:
    """Ask/tell trust-region BO over plans; observations are (genome, HF score or None, memory)."""

    def __init__(self, space: SearchSpace, imp_q, imp_r, settings: TrustRegionSettings | None = None,
                 seed: int | np.random.Generator = 0, observations=()):
        self.space, self.settings = space, settings or TrustRegionSettings()
        self.imp_q, self.imp_r = np.asarray(imp_q, float), np.asarray(imp_r, float)
        if self.imp_q.shape != (space.n_blocks,) or self.imp_r.shape != (space.n_blocks,):
            raise ValueError(f"imp_q and imp_r need {space.n_blocks} entries each")
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.genomes: list[Genome] = []
        self.scores: list[float | None] = []
        self.memories: list[float] = []
        self.origin: list[int] = []  # -1 = Stage 1, t = Stage-2 iteration t
        # Memory is recomputed from the space so Stage-1 and Stage-2 points share one accounting.
        self._record([g for g, _, _ in observations], [s for _, s, _ in observations], -1)
        ok = [i for i in range(len(self.genomes)) if self._ok(i)]
        if not ok:
            raise ValueError("Stage 2 needs at least one feasible, successfully evaluated Stage-1 plan")
        s, m = [self.scores[i] for i in ok], [self.memories[i] for i in ok]
        front = _front(s, m)
        fs, fm = [s[i] for i in front], [m[i] for i in front]
        # A one-point front has no spread: fall back to all observations, then to fixed scales.
        span_p = max(fs) - min(fs) or max(s) - min(s) or 1.0
        span_m = max(fm) - min(fm) or max(m) - min(m) or max(space.budget - space.min_memory(), 1.0)
        self.norm = {"p_lo": min(fs), "p_span": span_p, "m_lo": min(fm), "m_span": span_m}
        self.radius = self.settings.init_radius
        self.successes = self.failures = self.iteration = 0
        self.stop_reason = ""
        self.pending: list[Genome] = []
        self.history: list[dict] = []

    def _record(self, genomes, scores, origin: int) -> None:
        if len(genomes) != len(scores):
            raise ValueError(f"got {len(genomes)} genomes but {len(scores)} scores")
        for g, s in zip(genomes, scores, strict=True):
            g = np.array(g, dtype=np.int64)
            if g.shape != (2, self.space.n_blocks):
                raise ValueError(f"genome shape {g.shape}, expected (2, {self.space.n_blocks})")
            bad = s is None or not math.isfinite(float(s))
            self.genomes.append(g)
            self.scores.append(None if bad else float(s))
            self.memories.append(self.space.memory(g))
            self.origin.append(origin)

    def _ok(self, i: int) -> bool:
        return self.scores[i] is not None and self.space.feasible(self.genomes[i])

    def utility(self, score: float, memory: float) -> float:
        """f = α·P̃ − (1−α)·M̃ with the normalisation fixed at start."""
        n, a = self.norm, self.settings.alpha
        return a * (score - n["p_lo"]) / n["p_span"] - (1 - a) * (memory - n["m_lo"]) / n["m_span"]

    def _ranked(self) -> list[int]:
        """Indices of feasible, scored observations, best utility first (ties: earliest)."""
        ok = [i for i in range(len(self.genomes)) if self._ok(i)]
        return sorted(ok, key=lambda i: -self.utility(self.scores[i], self.memories[i]))

    def best(self) -> tuple[Genome, float, float, float]:
        """(genome, score, memory, utility) of the best feasible observed plan."""
        i = self._ranked()[0]
        return (self.genomes[i].copy(), self.scores[i], self.memories[i],
                self.utility(self.scores[i], self.memories[i]))

    def incumbents(self) -> list[Genome]:
        """The top-u distinct feasible observed plans by utility."""
        out: dict[bytes, Genome] = {}
        for i in self._ranked():
            out.setdefault(self.space.key(self.genomes[i]), self.genomes[i])
            if len(out) == self.settings.incumbents:
                break
        return list(out.values())

    def should_stop(self) -> tuple[bool, str]:
        """(stop?, reason): max_ei_below_tol, no_candidates, trust_region_collapsed or iteration_budget."""
        if self.stop_reason:
            return True, self.stop_reason
        if self.iteration >= self.settings.iterations:
            return True, "iteration_budget"
        return False, ""

    def ask(self) -> list[Genome]:
        """Up to q new feasible plans from the trust region; [] once the search should stop."""
        if self.should_stop()[0]:
            return []
        if self.pending:  # asked again before tell: the same batch, no extra draws
            return [g.copy() for g in self.pending]
        st, incs, best_f = self.settings, self.incumbents(), self.best()[3]
        cands = trust_region_candidates(self.space, incs, self.radius, st.n_candidates, self.imp_q,
                                        self.imp_r, self.rng, {self.space.key(g) for g in self.genomes},
                                        st.low_bit_cap)
        entry = {"iteration": self.iteration, "radius": self.radius, "best_utility": best_f,
                 "incumbents": [g.tolist() for g in incs], "n_candidates": len(cands),
                 "max_ei": 0.0, "chosen": [], "chosen_log_ei": []}
        self.history.append(entry)
        if not cands:
            self.stop_reason = "no_candidates"
            return []
        gp = self._fit_gp()
        Xc = self._features(cands)
        log_ei = gp.log_ei(Xc, best_f)
        entry["max_ei"] = float(math.exp(log_ei.max()))
        if entry["max_ei"] < st.ei_tol:
            self.stop_reason = "max_ei_below_tol"
            return []
        left = list(range(len(cands)))
        for _ in range(min(st.q, len(cands))):
            j = left[int(np.argmax(log_ei[left]))]
            left.remove(j)
            self.pending.append(cands[j])
            entry["chosen"].append(cands[j].tolist())
            entry["chosen_log_ei"].append(float(log_ei[j]))
            if left and len(self.pending) < st.q:
                believed = float(gp.mean(Xc[j:j + 1])[0])
                gp, best_f = gp.condition(Xc[j], believed), max(best_f, believed)
                log_ei = gp.log_ei(Xc, best_f)
        return [g.copy() for g in self.pending]

    def _features(self, genomes: list[Genome]) -> np.ndarray:
        return np.stack([plan_features(self.space, g, self.imp_q, self.imp_r) for g in genomes])

    def _fit_gp(self):
        """The GP on all scored observations (failed runs left out), seeded from our generator."""
        try:  # lazy: botorch is the optional "search" extra; the rest of this module needs numpy only
            from autoqra.search.tr_gp import UtilityGP
        except ImportError as e:
            raise ImportError(f"Stage 2 needs botorch ({e}): pip install 'autoqra[search]'") from e
        scored = [i for i in range(len(self.genomes)) if self.scores[i] is not None]
        y = np.array([self.utility(self.scores[i], self.memories[i]) for i in scored])
        return UtilityGP.fit(self._features([self.genomes[i] for i in scored]), y,
                             seed=int(self.rng.integers(2**31 - 1)), maxiter=self.settings.gp_maxiter)

    def tell(self, genomes: list[Genome], scores: list[float | None]) -> None:
        """Record HF scores (None = failed run) and update the trust region by the TuRBO rule."""
        st, before = self.settings, self.best()[3]
        self._record(genomes, scores, self.iteration)
        after = self.best()[3]
        success = after > before + st.success_threshold
        if success:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= st.success_tolerance:
                self.radius, self.successes = min(2 * self.radius, st.max_radius), 0
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= st.failure_tolerance:
                self.radius, self.failures = self.radius // 2, 0
        if not self.history or self.history[-1]["iteration"] != self.iteration:
            self.history.append({"iteration": self.iteration, "radius": None, "chosen": []})
        self.history[-1].update({
            "success": success, "best_utility_after": after, "radius_after": self.radius,
            "successes": self.successes, "failures": self.failures,
            "n_failed": sum(s is None for s in self.scores[-len(genomes):]) if genomes else 0})
        self.iteration += 1
        self.pending = []
        if self.radius < st.min_radius:
            self.stop_reason = "trust_region_collapsed"

    def state_dict(self) -> dict:
        """Everything needed to resume, JSON-serialisable (generator state included)."""
        sp = self.space
        return {
            "version": STATE_VERSION, "settings": asdict(self.settings),
            "space": {"bits": list(sp.bits), "ranks": list(sp.ranks), "n_blocks": sp.n_blocks,
                      "budget": sp.budget},
            "imp_q": self.imp_q.tolist(), "imp_r": self.imp_r.tolist(),
            "rng": self.rng.bit_generator.state, "norm": dict(self.norm),
            "radius": self.radius, "successes": self.successes, "failures": self.failures,
            "iteration": self.iteration, "stop_reason": self.stop_reason,
            "observations": [{"genome": g.tolist(), "score": s, "memory": m, "origin": o} for g, s, m, o
                             in zip(self.genomes, self.scores, self.memories, self.origin, strict=True)],
            "pending": [g.tolist() for g in self.pending], "history": self.history,
        }

    @classmethod
    def from_state(cls, space: SearchSpace, state: dict) -> TrustRegionSearch:
        """Rebuild a search from ``state_dict()`` output; the space must match the saved one."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"trust-region state version {state.get('version')}, expected {STATE_VERSION}")
        want = {"bits": list(space.bits), "ranks": list(space.ranks), "n_blocks": space.n_blocks,
                "budget": space.budget}
        if state["space"] != want:
            raise ValueError(f"trust-region state was saved for space {state['space']}, got {want}")
        self = cls.__new__(cls)
        self.space, self.settings = space, TrustRegionSettings(**state["settings"])
        self.imp_q, self.imp_r = np.asarray(state["imp_q"], float), np.asarray(state["imp_r"], float)
        rs = state["rng"]
        self.rng = np.random.Generator(getattr(np.random, rs["bit_generator"])())
        self.rng.bit_generator.state = rs
        self.genomes, self.scores, self.memories, self.origin = [], [], [], []
        for o in state["observations"]:
            self._record([o["genome"]], [o["score"]], o["origin"])
        self.norm = dict(state["norm"])
        for key in ("radius", "successes", "failures", "iteration", "stop_reason"):
            setattr(self, key, state[key])
        self.pending = [np.array(g, dtype=np.int64) for g in state["pending"]]
        self.history = [dict(h) for h in state["history"]]
        return self
