"""Stage 1: multi-fidelity evolutionary search over per-block (bits, rank), ask/tell style.

One generation: ``propose(g)`` → LF-evaluate the offspring → ``tell(.., "lf", ..)`` →
``promote(offspring, lf)`` → HF-evaluate the promoted → ``tell(.., "hf", ..)`` → ``select()``.
The whole state (RNG included) round-trips through JSON, so each step can run as its own process
and a resumed search follows exactly the trajectory of an uninterrupted one.

Hypervolume: over all feasible HF evaluations so far (so it never decreases), memory in units of
the budget, reference point (P_ref, 1 + hv_memory_margin). The margin lets plans that use the
whole budget count. P_ref is ``hv_ref_score``: the pipeline fixes it once per model before any
search runs (``pareto.shared_hv_reference``), so every variant's hypervolume is measured against the same
point. Left unset (tests, notebooks), it is frozen at the first selection to the lowest initial HF
score minus 10 % of the initial score spread; later points below it add nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from autoqra.search import pareto
from autoqra.search.operators import Operators, random_genome
from autoqra.search.space import Genome, SearchSpace
from autoqra.search.surrogate import PerformanceModel, feature_matrix

FIDELITIES = ("lf", "hf")
DEDUP_TRIES = 20  # variation attempts per child before falling back to a random genome
STATE_VERSION = 2  # 2: importance_guided and reference_rank settings, climbing operators
GENOME_LISTS = ("population", "pending", "offspring")


@dataclass
class EvolutionSettings:
    """Stage-1 settings; ``warm_start``, ``coupled``, ``importance_guided``, ``performance_model``
    and ``multi_fidelity`` are the ablation switches, one component each (single fidelity: every
    offspring is evaluated at HF, none at LF). ``reference_rank`` is the budget's rank (the uniform
    plans of the warm start); ``hv_ref_score`` the hypervolume reference shared by all variants."""

    population: int = 8
    generations: int = 4
    offspring: int | None = None  # None: same as population
    promote: int = 2
    crossover_prob: float = 0.9
    mutation_prob: float = 0.5
    gamma: float = 1.5
    jitter: float = 0.15
    low_bit_cap: float | None = None
    stall_generations: int = 3
    stall_tol: float = 1e-4  # relative hypervolume improvement
    warm_start: bool = True
    warm_start_interp: str = "value"  # "value" or "index", see operators.seed_genome
    coupled: bool = True
    importance_guided: bool = True
    performance_model: bool = True
    multi_fidelity: bool = True
    min_pairs: int = 6
    hv_ref_score: float | None = None
    hv_memory_margin: float = 0.01
    reference_rank: int | None = None

    def __post_init__(self) -> None:
        checks = {  # name: (holds, what is expected)
            "population": (self.population >= 2, ">= 2"),
            "generations": (self.generations >= 0, ">= 0"),
            "offspring": (self.offspring is None or self.offspring >= 1, "null or >= 1"),
            # HF evaluates the top `promote` of the LF-scored offspring
            "promote": (1 <= self.promote <= (self.n_offspring if self.multi_fidelity else self.promote),
                        f"between 1 and the offspring per generation ({self.n_offspring})"),
            "stall_generations": (self.stall_generations >= 1, ">= 1"),
            "crossover_prob": (0 <= self.crossover_prob <= 1, "in [0, 1]"),
            "mutation_prob": (0 <= self.mutation_prob <= 1, "in [0, 1]"),
            "jitter": (0 <= self.jitter <= 1, "in [0, 1]"),
            "low_bit_cap": (self.low_bit_cap is None or 0 <= self.low_bit_cap <= 1, "null or in [0, 1]"),
            "gamma": (self.gamma >= 0, ">= 0"),
            "hv_memory_margin": (self.hv_memory_margin >= 0, ">= 0"),
            "warm_start_interp": (self.warm_start_interp in ("value", "index"), "'value' or 'index'"),
        }
        bad = [f"{k}={getattr(self, k)!r} (expected {want})" for k, (ok, want) in checks.items() if not ok]
        if bad:
            raise ValueError(f"evolution settings out of range: {', '.join(bad)}")

    @property
    def n_offspring(self) -> int:
        return self.offspring or self.population


def _check_importance(space: SearchSpace, imp: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(imp, dtype=float)
    if a.shape != (space.n_blocks,) or not np.isfinite(a).all():
        raise ValueError(f"{name}: expected {space.n_blocks} finite values in [0, 1], got shape {a.shape}")
    return np.clip(a, 0.0, 1.0)


Evaluate = Callable[[list[Genome], str], Sequence[float | None]]


class EvolutionarySearch:
    """Constrained NSGA-II over genomes with warm start, coupled operators and LF→HF promotion."""

    def __init__(self, space: SearchSpace, imp_q: np.ndarray, imp_r: np.ndarray,
                 settings: EvolutionSettings | None = None, seed: int = 0):
        self.space, self.seed = space, int(seed)
        self.settings = settings or EvolutionSettings()
        self.imp_q, self.imp_r = _check_importance(space, imp_q, "imp_q"), _check_importance(space, imp_r, "imp_r")
        s = self.settings
        self.ops = Operators(s.coupled, s.gamma, s.jitter, s.low_bit_cap, interp=s.warm_start_interp,
                             importance_guided=s.importance_guided, reference_rank=s.reference_rank)
        self.rng = np.random.default_rng(self.seed)
        self.archive: list[dict] = []          # every evaluation told, in order
        self.population: list[Genome] = []
        self.pending: list[Genome] = []        # HF-evaluated since the last select()
        self.offspring: list[Genome] = []      # the last batch handed out
        self.generation = -1                   # last selected generation (0 = initial population)
        self.history: list[float] = []         # hypervolume after each select()
        self.hv_ref: list[float] | None = None
        self._model = PerformanceModel(min_pairs=s.min_pairs, seed=self.seed)
        self._model_data: tuple | None = None

    @property
    def initial_fidelities(self) -> tuple[str, ...]:
        """Fidelities at which the initial population is evaluated."""
        return FIDELITIES if self.settings.multi_fidelity else ("hf",)

    def initial_population(self) -> list[Genome]:
        """Warm-started (or random) distinct feasible genomes to evaluate first."""
        self.offspring = self.ops.initial(self.space, self.imp_q, self.imp_r, self.settings.population,
                                          self.rng, warm=self.settings.warm_start)
        return [g.copy() for g in self.offspring]

    def propose(self, generation: int) -> list[Genome]:
        """Offspring of generation ``generation``: tournament, crossover, mutation, repair, de-dup."""
        if generation != self.generation + 1 or not self.population:
            raise ValueError(f"propose({generation}): the search has selected generation "
                             f"{self.generation} with {len(self.population)} members; expected {self.generation + 1}")
        s, rng = self.settings, self.rng
        rank, crowd = pareto.rank_and_crowding(*self._objectives(self.population, self._scores("hf")))
        seen = {self.space.key(np.array(r["genome"])) for r in self.archive}
        seen |= {self.space.key(g) for g in self.population}
        kids: list[Genome] = []
        for _ in range(s.n_offspring):
            child = None
            for attempt in range(DEDUP_TRIES):
                a = self.population[self._tournament(rank, crowd)]
                b = self.population[self._tournament(rank, crowd)]
                h = self.ops.crossover(a, b, rng) if rng.random() < s.crossover_prob else a.copy()
                # retries always mutate: a duplicate child of the same parents would recur otherwise
                if attempt > 0 or rng.random() < s.mutation_prob:
                    h = self.ops.mutate(self.space, h, self.imp_q, self.imp_r, rng)
                else:
                    h = self.ops.repair(self.space, h, self.imp_q, self.imp_r)
                if self.space.key(h) not in seen:
                    child = h
                    break
            for _ in range(DEDUP_TRIES if child is None else 0):
                h = random_genome(self.space, rng, self.imp_q, self.imp_r, s.low_bit_cap)
                if self.space.key(h) not in seen:
                    child = h
                    break
            if child is not None:  # None only when the feasible space is exhausted
                seen.add(self.space.key(child))
                kids.append(child)
        self.offspring = kids
        return [g.copy() for g in kids]

    def promote(self, offspring: Sequence[Genome], lf_scores: Sequence[float | None]) -> list[int]:
        """Indices (best first) of the offspring to evaluate at HF: top-k by predicted HF score."""
        if not self.settings.multi_fidelity:
            return list(range(len(offspring)))
        valid = [i for i, v in enumerate(lf_scores) if v is not None and np.isfinite(v)]
        if not valid:
            return []
        lf = np.array([lf_scores[i] for i in valid], dtype=float)
        if self.settings.performance_model:
            X = feature_matrix(self.space, [offspring[i] for i in valid], lf, self.imp_q, self.imp_r)
            pred = self.model().predict(X)
        else:
            pred = lf
        order = np.argsort(-pred, kind="stable")[:self.settings.promote]
        return [valid[i] for i in order]

    def model(self) -> PerformanceModel:
        """The performance model, refitted whenever the LF/HF pairs have changed."""
        lf, hf = self._scores("lf"), self._scores("hf")
        keys = [k for k in hf if hf[k] is not None and lf.get(k) is not None]
        data = (keys, [lf[k] for k in keys], [hf[k] for k in keys])
        if data != self._model_data:  # refit only on new pairs (a fit is deterministic, not free)
            X = feature_matrix(self.space, [self._genome_of(k) for k in keys], data[1], self.imp_q, self.imp_r)
            self._model.fit(X, np.array(data[2], dtype=float))
            self._model_data = data
        return self._model

    def tell(self, genomes: Sequence[Genome], fidelity: str, scores: Sequence[float | None]) -> None:
        """Record evaluations; a None (or non-finite) score marks a failed evaluation."""
        if fidelity not in FIDELITIES:
            raise ValueError(f"fidelity {fidelity!r}: expected one of {FIDELITIES}")
        if len(genomes) != len(scores):
            raise ValueError(f"tell: {len(genomes)} genomes but {len(scores)} scores")
        for g, v in zip(genomes, scores, strict=True):
            g = np.asarray(g, dtype=np.int64)
            if g.shape != (2, self.space.n_blocks):
                raise ValueError(f"tell: genome shape {g.shape}, expected (2, {self.space.n_blocks})")
            ok = v is not None and np.isfinite(v)
            self.archive.append({"genome": g.tolist(), "fidelity": fidelity, "score": float(v) if ok else None,
                                 "memory": self.space.memory(g), "generation": self.generation + 1})
            if fidelity == "hf":
                self.pending.append(g)

    def select(self) -> list[Genome]:
        """Environmental selection over population ∪ new HF evaluations (failures never survive)."""
        hf = self._scores("hf")
        cands, keys = [], set()
        for g in self.population + self.pending:
            k = self.space.key(g)
            if k not in keys and hf.get(k) is not None:
                keys.add(k)
                cands.append(g)
        F, viol = self._objectives(cands, hf)
        self.population = [cands[i] for i in pareto.environmental_selection(F, viol, self.settings.population)]
        self.pending, self.offspring = [], []
        self.generation += 1
        self._freeze_ref()
        self.history.append(self.hypervolume())
        return [g.copy() for g in self.population]

    def hypervolume(self) -> float:
        """Hypervolume of the feasible HF evaluations so far (memory in units of the budget)."""
        pts = self._hf_points()
        if self.hv_ref is None or len(pts) == 0:
            return 0.0
        return pareto.hypervolume_2d(pts, (self.hv_ref[0], self.hv_ref[1]))

    def should_stop(self) -> bool:
        """True after ``stall_generations`` selections without a relative HV gain above ``stall_tol``."""
        k = self.settings.stall_generations
        if len(self.history) <= k:
            return False
        old, new = self.history[-1 - k], self.history[-1]
        return new - old <= self.settings.stall_tol * max(abs(old), 1e-12)

    def done(self) -> bool:
        return self.generation >= self.settings.generations or self.should_stop()

    def front(self) -> list[tuple[Genome, float, float]]:
        """(genome, HF score, memory) of the feasible HF Pareto front, by increasing memory."""
        hf = self._scores("hf")
        keys = [k for k, v in hf.items() if v is not None]
        genomes = [self._genome_of(k) for k in keys]
        feas = [i for i, g in enumerate(genomes) if self.space.feasible(g)]
        F, _ = self._objectives([genomes[i] for i in feas], hf)
        out = [(genomes[feas[i]], float(F[i, 0]), float(F[i, 1])) for i in pareto.pareto_front(F)]
        return sorted(out, key=lambda t: (t[2], -t[1]))

    def evaluate_offspring(self, offspring: list[Genome], evaluate: Evaluate) -> None:
        """Run one generation's evaluations in-process: LF for all, then HF for the promoted."""
        if self.settings.multi_fidelity:
            lf = list(evaluate(offspring, "lf"))
            self.tell(offspring, "lf", lf)
            promoted = [offspring[i] for i in self.promote(offspring, lf)]
            self.tell(promoted, "hf", list(evaluate(promoted, "hf")) if promoted else [])
        else:
            self.tell(offspring, "hf", list(evaluate(offspring, "hf")))

    def run(self, evaluate: Evaluate) -> list[tuple[Genome, float, float]]:
        """In-process driver (tests, notebooks): initial population, then generations until done()."""
        if self.generation < 0:
            init = self.initial_population()
            for fid in self.initial_fidelities:
                self.tell(init, fid, list(evaluate(init, fid)))
            self.select()
        while not self.done():
            self.evaluate_offspring(self.propose(self.generation + 1), evaluate)
            self.select()
        return self.front()

    def state_dict(self) -> dict:
        """JSON-serialisable state; ``from_state`` continues the identical trajectory."""
        sp = self.space
        return {"version": STATE_VERSION, "seed": self.seed, "settings": asdict(self.settings),
                "space": {"n_blocks": sp.n_blocks, "bits": list(sp.bits), "ranks": list(sp.ranks),
                          "budget": sp.budget},
                "rng": self.rng.bit_generator.state, "generation": self.generation,
                "archive": [dict(r) for r in self.archive],
                **{name: [g.tolist() for g in getattr(self, name)] for name in GENOME_LISTS},
                "history": list(self.history), "hv_ref": self.hv_ref}

    @classmethod
    def from_state(cls, space: SearchSpace, imp_q: np.ndarray, imp_r: np.ndarray,
                   state: dict) -> EvolutionarySearch:
        """Rebuild a search from ``state_dict()`` output (after a JSON round trip)."""
        want = {"n_blocks": space.n_blocks, "bits": list(space.bits), "ranks": list(space.ranks),
                "budget": space.budget}
        if state.get("version") != STATE_VERSION or state.get("space") != want:
            raise ValueError(f"search state (version {state.get('version')}, space {state.get('space')}) "
                             f"does not match this search space {want}")
        search = cls(space, imp_q, imp_r, EvolutionSettings(**state["settings"]), state["seed"])
        search.rng.bit_generator.state = state["rng"]
        search.generation, search.history = int(state["generation"]), list(state["history"])
        search.hv_ref = None if state["hv_ref"] is None else list(state["hv_ref"])
        search.archive = [dict(r) for r in state["archive"]]
        for name in GENOME_LISTS:
            setattr(search, name, [np.array(g, dtype=np.int64) for g in state[name]])
        return search

    def _scores(self, fidelity: str) -> dict[bytes, float | None]:
        """Latest score per genome key at ``fidelity`` (insertion-ordered by first evaluation)."""
        out: dict[bytes, float | None] = {}
        for r in self.archive:
            if r["fidelity"] == fidelity:
                out[self.space.key(np.array(r["genome"]))] = r["score"]
        return out

    def _genome_of(self, key: bytes) -> Genome:
        return np.frombuffer(key, dtype=np.int8).astype(np.int64).reshape(2, -1)

    def _objectives(self, genomes: list[Genome], hf: dict) -> tuple[np.ndarray, np.ndarray]:
        F = np.array([[hf[self.space.key(g)], self.space.memory(g)] for g in genomes]).reshape(-1, 2)
        return F, np.maximum(0.0, F[:, 1] - self.space.budget)

    def _hf_points(self) -> np.ndarray:
        hf = self._scores("hf")
        pts = [(v, self.space.memory(self._genome_of(k)) / self.space.budget)
               for k, v in hf.items() if v is not None]
        pts = np.array(pts, dtype=float).reshape(-1, 2)
        return pts[pts[:, 1] <= 1 + 1e-12]

    def _freeze_ref(self) -> None:
        if self.hv_ref is not None:
            return
        pts = self._hf_points()
        if len(pts) == 0:
            return
        p_ref = self.settings.hv_ref_score
        if p_ref is None:
            lo, hi = float(pts[:, 0].min()), float(pts[:, 0].max())
            p_ref = lo - (0.1 * (hi - lo) if hi > lo else 0.1 * max(abs(lo), 1.0))
        self.hv_ref = [float(p_ref), 1.0 + self.settings.hv_memory_margin]

    def _tournament(self, rank: np.ndarray, crowd: np.ndarray) -> int:
        """Binary tournament: lower front rank wins, then larger crowding distance."""
        i, j = (int(x) for x in self.rng.integers(0, len(rank), 2))
        if rank[i] != rank[j]:
            return i if rank[i] < rank[j] else j
        return i if crowd[i] >= crowd[j] else j
