"""Stage-2 trust-region BO on a synthetic objective over a realistic (SmolLM2-135M-shaped) cost table."""

import json

import numpy as np
import pytest

from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import Plan
from autoqra.search.space import SearchSpace, repair_to_budget
from autoqra.search.trust_region import (
    TrustRegionSearch,
    TrustRegionSettings,
    atomic_moves,
    edit_distance,
    plan_features,
    trust_region_candidates,
)

N = 8  # blocks kept from the 30-block table, for speed
SMOL = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
        "tie_word_embeddings": True}


@pytest.fixture(scope="module")
def space() -> SearchSpace:
    mm = MemoryModel(ModelShape.from_config(SMOL), "hqq", 64)
    full = SearchSpace.from_memory_model(mm, (2, 3, 4, 8), (4, 8, 16), mm.plan_bytes(Plan.uniform(30, 4, 8)))
    # budget = uniform 4-bit rank 8 over the kept blocks, as the full-model default
    return SearchSpace(full.bits, full.ranks, full.cost[:N].copy(), full.budget * N / 30)


IMP_Q, IMP_R = np.linspace(1, 0, N), np.linspace(0, 1, N)
# Score: saturating in each rung, steep only in block 0's bits and block 1's rank. The utility
# optimum G_STAR (4-bit at block 0, rank 16 at block 1, the rest lowest) lies two edits from B0.
W = np.full((2, N), 0.01)
W[0, 0] = W[1, 1] = 3.0
TARGET = np.array([[2] + [3] * (N - 1), [2] * N])
G_STAR = np.zeros((2, N), dtype=np.int64)
G_STAR[0, 0] = G_STAR[1, 1] = 2
B0 = G_STAR.copy()
B0[0, 0] -= 1
B0[1, 1] -= 1


def score(g) -> float:
    return float((W * np.minimum(g, TARGET)).sum())


def stage1_archive(space: SearchSpace, seed: int = 100) -> list:
    """B0, the smallest and the budget-filling uniform plan, plus random repaired plans dominated by B0."""
    rng = np.random.default_rng(seed)
    plans = [B0, space.uniform(2, 4), space.uniform(4, 8)]
    while len(plans) < 10:
        g = repair_to_budget(space, np.stack([rng.integers(0, 4, N), rng.integers(0, 3, N)]), IMP_Q, IMP_R)
        if score(g) < score(B0) and space.memory(g) > space.memory(B0):
            plans.append(g)
    return [(g, score(g), space.memory(g)) for g in plans]


def make(space, seed=0, **kw) -> TrustRegionSearch:
    kw.setdefault("gp_maxiter", 50)  # fewer L-BFGS steps: keeps the suite fast
    return TrustRegionSearch(space, IMP_Q, IMP_R, TrustRegionSettings(**kw), seed, stage1_archive(space))


def top_incumbents(s: TrustRegionSearch, u: int) -> list:
    """Independent recomputation: best-u distinct feasible scored observations by utility."""
    pairs = enumerate(zip(s.genomes, s.scores, strict=True))
    rows = [(s.utility(sc, s.space.memory(g)), i, g) for i, (g, sc) in pairs
            if sc is not None and s.space.feasible(g)]
    out = []
    for _, _, g in sorted(rows, key=lambda r: (-r[0], r[1])):
        if not any((g == h).all() for h in out):
            out.append(g)
    return out[:u]


def run(s: TrustRegionSearch, log: list | None = None) -> list:
    """Drive ask/tell to the end; returns the asked batches (as lists)."""
    asked = []
    while batch := s.ask():
        if log is not None:
            log.append((s.history[-1]["radius"], top_incumbents(s, s.settings.incumbents), batch))
        asked.append([g.tolist() for g in batch])
        s.tell(batch, [score(g) for g in batch])
    return asked


@pytest.fixture(scope="module")
def finished(space):
    s, log = make(space), []
    u0 = s.best()[3]
    asked = run(s, log)
    return s, log, asked, u0


def test_premise_optimum_two_edits_from_best_initial(space):
    s = make(space)
    g0, _, _, u0 = s.best()
    assert (g0 == B0).all() and edit_distance(B0, G_STAR) == 2
    # utility is additive over coordinates here (hqq cost = bits part + rank part, budget slack),
    # so the global optimum is the per-coordinate argmax
    assert space.feasible(G_STAR)
    u_star = s.utility(score(G_STAR), space.memory(G_STAR))
    for row in (0, 1):
        for ell in range(N):
            for k in range(space.cost.shape[1 + row]):
                g = G_STAR.copy()
                g[row, ell] = k
                if k != G_STAR[row, ell]:
                    assert s.utility(score(g), space.memory(g)) < u_star
    assert u_star > u0 + 0.3


def test_search_beats_best_initial_plan(finished, space):
    s, _, asked, u0 = finished
    g, sc, mem, u = s.best()
    assert u > u0 + 0.3  # strictly better: at or next to the optimum (0.72 vs 0.36)
    assert edit_distance(g, G_STAR) <= 1 and space.feasible(g)
    assert sc == score(g) and mem == space.memory(g)
    assert s.should_stop() == (True, "iteration_budget") and len(asked) == 4 and s.ask() == []


def test_asked_plans_feasible_new_and_inside_trust_region(finished, space):
    s, log, _, _ = finished
    seen = {space.key(g) for g, _, _ in stage1_archive(space)}
    for radius, incs, batch in log:
        assert len(batch) == s.settings.q
        for g in batch:
            assert space.feasible(g)
            assert min(edit_distance(g, h) for h in incs) <= radius
            assert space.key(g) not in seen
            seen.add(space.key(g))


def test_candidates_enumerate_radius_one_and_respect_radius(space):
    rng = np.random.default_rng(0)
    exclude = {space.key(B0)}
    one = trust_region_candidates(space, [B0], 1, 1000, IMP_Q, IMP_R, rng, exclude)
    keys = {space.key(g) for g in one}
    direct = atomic_moves(space, B0)
    assert len(direct) == 18  # two coordinates on rung 1 (up or down), fourteen on rung 0 (up only)
    for row, ell, d in direct:
        h = B0.copy()
        h[row, ell] += d
        if space.feasible(h):  # B0 has slack: every single move fits, so all must be offered
            assert space.key(h) in keys
    assert len(one) == len(keys) == len(direct)
    inc2 = space.uniform(4, 8)  # on the budget: upgrades need repair, which may leave the region
    three = trust_region_candidates(space, [B0, inc2], 3, 64, IMP_Q, IMP_R, rng, exclude)
    assert 0 < len(three) <= 64 and len({space.key(g) for g in three}) == len(three)
    assert any(min(edit_distance(g, B0), edit_distance(g, inc2)) >= 2 for g in three)
    for g in three:
        assert space.feasible(g) and min(edit_distance(g, B0), edit_distance(g, inc2)) <= 3
        assert space.key(g) not in exclude


def test_radius_follows_turbo_rule(space):
    s = make(space, iterations=100, init_radius=2, min_radius=1, max_radius=6,
             success_tolerance=2, failure_tolerance=2)
    g, radii, top = space.uniform(2, 4), [], 10.0
    for step in "SSSSSSFFSFSFFFF":
        if step == "S":
            top += 1.0
        s.tell([g], [top if step == "S" else None])
        radii.append(s.radius)
        if step != "F":
            assert s.should_stop() == (False, "")
    assert radii == [2, 4, 4, 6, 6, 6, 6, 3, 3, 3, 3, 3, 1, 1, 0]
    assert s.should_stop() == (True, "trust_region_collapsed") and s.ask() == []
    assert [h["success"] for h in s.history] == [c == "S" for c in "SSSSSSFFSFSFFFF"]


def test_improvement_below_threshold_is_a_failure(space):
    s = make(space, iterations=10, success_threshold=1e-3, failure_tolerance=1)
    g, sc, mem, u = s.best()
    tiny = sc + 0.5e-3 * s.norm["p_span"] / s.settings.alpha  # utility +0.5e-3
    s.tell([g], [tiny])
    assert s.best()[3] > u and not s.history[-1]["success"] and s.radius == 1


def test_failed_evaluations_count_as_failures(space):
    s = make(space, iterations=3, failure_tolerance=1)
    before = s.best()
    batch = s.ask()
    s.tell(batch, [None, float("nan")])
    assert s.history[-1]["n_failed"] == 2 and not s.history[-1]["success"]
    assert s.radius == 1 and s.scores[-2:] == [None, None]
    assert s.best()[3] == before[3]
    nxt = s.ask()  # the GP is refitted without the failed points
    assert len(nxt) == 2 and all(space.key(g) not in {space.key(h) for h in batch} for g in nxt)


def test_stops_when_expected_improvement_is_small(space):
    s = make(space, ei_tol=10.0)  # no plan can improve the utility by 10
    assert s.ask() == []
    assert s.should_stop() == (True, "max_ei_below_tol")
    assert 0 < s.history[-1]["max_ei"] < 10.0 and s.history[-1]["n_candidates"] > 0


def test_same_seed_and_resume_give_identical_trajectory(finished, space):
    _, _, asked_a, _ = finished
    s = make(space)
    asked_b = []
    for t in range(4):
        batch = s.ask()
        if t == 1:  # resume between propose and update: the pending batch survives
            s = TrustRegionSearch.from_state(space, json.loads(json.dumps(s.state_dict())))
            assert [g.tolist() for g in s.ask()] == [g.tolist() for g in batch]
        asked_b.append([g.tolist() for g in batch])
        s.tell(batch, [score(g) for g in batch])
        s = TrustRegionSearch.from_state(space, json.loads(json.dumps(s.state_dict())))
    assert asked_b == asked_a
    assert json.dumps(s.state_dict()) == json.dumps(finished[0].state_dict())
    assert s.norm == make(space).norm  # normalisation fixed at start


def test_from_state_rejects_other_space(finished, space):
    other = SearchSpace(space.bits, space.ranks, space.cost, space.budget * 0.9)
    with pytest.raises(ValueError, match="budget"):
        TrustRegionSearch.from_state(other, finished[0].state_dict())


def test_settings_and_inputs_validated(space):
    with pytest.raises(ValueError, match="alpha"):
        TrustRegionSettings(alpha=1.5)
    with pytest.raises(ValueError, match="init_radius"):
        TrustRegionSettings(init_radius=9)
    with pytest.raises(ValueError, match="feasible"):
        TrustRegionSearch(space, IMP_Q, IMP_R, observations=[(B0, None, 0.0)])


def test_features_in_unit_interval(space):
    f = plan_features(space, B0, IMP_Q, IMP_R)
    assert f.shape == (2 * N + 3,) and f.min() >= 0 and f.max() <= 1
    assert plan_features(space, space.uniform(2, 4), IMP_Q, IMP_R)[-1] == 0.0
