"""The search as the paper means it (issue 15): a warm start that spends the budget, operators that
climb, ablations that switch off one thing, one hypervolume reference for every variant, the
noise-robust pick and equal-cost baseline searchers. No torch: synthetic objectives over the real
cost tables of SmolLM2-135M and Qwen3-4B."""

import json

import numpy as np
import pytest

from autoqra.memory import MemoryModel, ModelShape
from autoqra.pipeline.pick import pick_settings
from autoqra.plan import Plan
from autoqra.search.cost import (
    equal_cost_evaluations,
    evaluation_units,
    hf_equivalents,
    record_units,
)
from autoqra.search.evolution import EvolutionarySearch, EvolutionSettings
from autoqra.search.operators import (
    Operators,
    coupled_mutation,
    uncoupled_mutation,
    uniform_genomes,
    warm_start,
)
from autoqra.search.pareto import shared_hv_reference
from autoqra.search.pick import heldout_seed, pick_candidates, reevaluation_seeds, robust_pick
from autoqra.search.priors import normalise_priors
from autoqra.search.space import SearchSpace, fill_to_budget, repair_to_budget, saturated

SMOL = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
QWEN3_4B = {"model_type": "qwen3", "num_hidden_layers": 36, "hidden_size": 2560, "intermediate_size": 9728,
            "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
            "tie_word_embeddings": True}


def space_of(cfg: dict, group: int, bits: int = 4, rank: int = 8) -> SearchSpace:
    mm = MemoryModel(ModelShape.from_config(cfg), "hqq", group)
    n = mm.shape.n_blocks
    return SearchSpace.from_memory_model(mm, (2, 3, 4, 8), (4, 8, 16), mm.plan_bytes(Plan.uniform(n, bits, rank)))


SPACE, QWEN = space_of(SMOL, 64), space_of(QWEN3_4B, 128)


def toy_space(budget: float) -> SearchSpace:
    # bits (2, 4) cost 1 or 2, ranks (4, 8) cost 0 or 0.5, per block
    cost = np.broadcast_to(np.array([[1.0, 1.5], [2.0, 2.5]]), (4, 2, 2)).copy()
    return SearchSpace((2, 4), (4, 8), cost, budget)


def priors(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw sensitivities of three shapes, normalised the way the search reads them."""
    rng = np.random.default_rng(seed)
    if kind == "bulk_outliers":
        q, r = np.exp(rng.normal(0, 0.1, n)), np.exp(rng.normal(0, 0.1, n))
        q[[0, 1, n - 1]] *= 20
    elif kind == "uniform":
        q, r = rng.uniform(0.2, 3, n), rng.uniform(0.2, 3, n)
    else:
        x = np.linspace(0, 1, n)
        q, r = 0.4 + 2.6 * (2 * x - 1) ** 2, 0.5 + 1.5 * np.sin(np.pi * x)
    return normalise_priors(q), normalise_priors(r)


# ---- fill and saturation ----------------------------------------------------------------------

def test_fill_takes_the_most_importance_per_byte_while_it_fits():
    iq, ir = np.array([0.9, 0.1, 0.5, 0.2]), np.array([0.05, 0.05, 0.05, 0.8])
    low = np.zeros((2, 4), dtype=np.int64)  # 4 bytes
    g = fill_to_budget(toy_space(7.0), low, iq, ir)
    # per byte: rank of block 3 (0.8/0.5) > bits of block 0 (0.9/1) > bits of block 2 (0.5/1) > bits of
    # block 3 (0.2/1, no longer fits in the 0.5 left) > rank of block 0 (0.05/0.5, first of three ties)
    assert g.tolist() == [[1, 0, 1, 0], [1, 0, 0, 1]]
    assert toy_space(7.0).memory(g) == 7.0 and saturated(toy_space(7.0), g)
    assert not saturated(toy_space(7.0), low) and saturated(toy_space(10.0), np.ones((2, 4), dtype=np.int64))
    over = np.ones((2, 4), dtype=np.int64)
    assert np.array_equal(fill_to_budget(toy_space(7.0), over, iq, ir), over)  # over budget: repair's job
    assert not saturated(toy_space(7.0), over)
    # the mirror of repair: filling what repair took away gives the budget back
    top = np.ones((2, 4), dtype=np.int64)
    fixed = repair_to_budget(toy_space(8.5), top, iq, ir)
    assert saturated(toy_space(8.5), fill_to_budget(toy_space(8.5), fixed, iq, ir))


def test_prior_normalisations():
    x = np.array([1.0, 2.0, 2.0, 8.0])
    assert normalise_priors(x, "max").tolist() == [0.125, 0.25, 0.25, 1.0]
    assert normalise_priors(x, "minmax").tolist() == pytest.approx([0, 1 / 7, 1 / 7, 1])
    assert normalise_priors(x, "rank").tolist() == [0.25, 0.625, 0.625, 1.0]  # ties share their rank
    assert normalise_priors(np.ones(3), "minmax").tolist() == [0.5] * 3
    with pytest.raises(ValueError, match="expected one of"):
        normalise_priors(x, "zscore")


# ---- warm start ---------------------------------------------------------------------------------

def test_uniform_genomes_budget_plan_first_then_by_memory():
    plans = uniform_genomes(SPACE, 8)
    mems = [SPACE.memory(g) for g in plans]
    assert np.array_equal(plans[0], SPACE.uniform(4, 8)) and mems[0] == pytest.approx(SPACE.budget)
    assert mems[1:] == sorted(mems[1:], reverse=True) and all(SPACE.feasible(g) for g in plans)
    as_pairs = {(SPACE.bits[g[0, 0]], SPACE.ranks[g[1, 0]]) for g in plans}
    # every bit-width that fits at rank 8, and at its highest fitting rank (3 and 2 bits: rank 16)
    assert as_pairs == {(4, 8), (3, 8), (2, 8), (3, 16), (2, 16), (4, 4)} - {(4, 4)}
    assert all(SPACE.bits[g[0, 0]] != 2 for g in uniform_genomes(SPACE, 8, low_bit_cap=0.2))


@pytest.mark.parametrize("space", [SPACE, QWEN], ids=["smollm2", "qwen3-4b"])
@pytest.mark.parametrize("kind", ["bulk_outliers", "uniform", "smooth"])
def test_every_seeded_plan_is_within_one_upgrade_of_the_budget(space, kind):
    iq, ir = priors(kind, space.n_blocks)
    for n in (4, 40):
        pop = warm_start(space, iq, ir, n, np.random.default_rng(3), reference_rank=8)
        assert len(pop) == n and len({space.key(g) for g in pop}) == n
        uniform = {space.key(g) for g in uniform_genomes(space, 8)}
        seeded = [g for g in pop if space.key(g) not in uniform]
        assert all(space.feasible(g) for g in pop)
        assert seeded and all(saturated(space, g) for g in seeded)  # no single upgrade still fits
        assert min(space.memory(g) for g in seeded) / space.budget > 0.99
        # the budget's own plan is always there, right after the priors' allocation and the
        # interpolated seed (or as the allocation itself, where the priors choose it)
        assert any(np.array_equal(g, space.uniform(4, 8)) for g in pop[:3])
        assert len(uniform & {space.key(g) for g in pop}) == min(n // 2, len(uniform))


# ---- operators that climb, and the one-switch ablations ----------------------------------------

def _site_counts(mutate, g, n_runs=400):
    rng = np.random.default_rng(0)
    up, down, mems = np.zeros(SPACE.n_blocks), np.zeros(SPACE.n_blocks), []
    for _ in range(n_runs):
        h = mutate(g, rng)
        up += (h[0] > g[0]) | (h[1] > g[1])
        down += (h[0] < g[0]) | (h[1] < g[1])
        mems.append(SPACE.memory(h))
        assert SPACE.feasible(h)
    return up, down, np.array(mems)


def test_one_switch_ablations_change_one_thing_each():
    iq = np.r_[np.ones(5), np.full(25, 0.05)]
    ir = iq.copy()
    at_budget = SPACE.uniform(4, 8)
    below = at_budget.copy()
    below[0, 10:20] = 1  # ten 3-bit blocks: room for several upgrades
    ops = {name: Operators(**kw) for name, kw in {
        "method": {}, "no_coupling": {"coupled": False}, "no_importance": {"importance_guided": False}}.items()}

    def mutate(name, g):
        return _site_counts(lambda x, rng: ops[name].mutate(SPACE, x, iq, ir, rng), g)

    # w/o coupled operators keeps the importance-guided choice of site ...
    for name in ("method", "no_coupling"):
        up, _, _ = mutate(name, below)
        assert up[:5].sum() > 0.75 * up.sum(), name
    # ... w/o importance guidance draws sites uniformly (5 of 30 blocks: ~1/6 of the upgrades)
    up, _, _ = mutate("no_importance", below)
    assert up[:5].sum() < 0.35 * up.sum()
    # the method climbs without paying when there is room: one upgrade that fits, no downgrade ...
    one = Operators(mutation_rate=1e-9)  # exactly one move per mutation
    up, down, mems = _site_counts(lambda x, rng: one.mutate(SPACE, x, iq, ir, rng), below)
    assert up.sum() == 400 and down.sum() == 0 and (mems > SPACE.memory(below)).all()
    # ... and pairs an upgrade with a compensating cut at the budget; so does the unguided variant
    for name in ("method", "no_importance"):
        up, down, mems = mutate(name, at_budget)
        assert down.sum() > 0.5 * up.sum() and abs(mems.mean() - SPACE.budget) < 0.02 * SPACE.budget, name
    # the uncoupled ablation makes unpaired ±1 moves: at room, about half of them are cuts
    _, down, _ = mutate("no_coupling", below)
    assert down.sum() > 100
    # coupled crossover keeps (bits, rank) pairs, uncoupled mixes them: the other half of the switch
    a, b = np.zeros((2, 30), dtype=np.int64), np.ones((2, 30), dtype=np.int64)
    rng = np.random.default_rng(1)
    assert (ops["no_importance"].crossover(a, b, rng)[0] == ops["no_importance"].crossover(a, b, rng)[0]).any()
    c = ops["method"].crossover(a, b, rng)
    u = ops["no_coupling"].crossover(a, b, rng)
    assert (c[0] == c[1]).all() and (u[0] != u[1]).any()


def test_mutation_functions_keyword_switches():
    iq = np.r_[np.ones(5), np.full(25, 0.05)]
    g = SPACE.uniform(4, 8)
    g[0, 10:20] = 1
    flat_up, _, _ = _site_counts(lambda x, rng: coupled_mutation(SPACE, x, iq, iq, rng, guided=False), g)
    up, _, _ = _site_counts(lambda x, rng: uncoupled_mutation(SPACE, x, iq, iq, rng, gamma=1.5), g)
    assert flat_up[:5].sum() < 0.35 * flat_up.sum() and up[:5].sum() > 0.75 * up.sum()


# ---- one hypervolume reference ---------------------------------------------------------------

class Objective:
    """Separable synthetic quality over SmolLM2's table: damage ×4 smaller per bit, log-rank gains."""

    def __init__(self, space: SearchSpace, seed: int = 0):
        rng = np.random.default_rng(seed)
        n = space.n_blocks
        self.w, self.v = np.exp(rng.normal(0, 0.8, n)), np.exp(rng.normal(0, 0.8, n))
        d, h = 4.0 ** -(np.array(space.bits) - 2.0), np.log2(np.array(space.ranks) / 4.0) / 2
        self.table = (-self.w[:, None, None] * d[None, :, None] + 0.1 * self.v[:, None, None] * h) / n
        self.space = space
        self.imp_q, self.imp_r = normalise_priors(self.w), normalise_priors(self.v)

    def __call__(self, genomes, fidelity):
        noise = 0.002 if fidelity == "lf" else 0.0
        return [float(self.table[np.arange(self.space.n_blocks), g[0], g[1]].sum()) + noise for g in genomes]


def test_the_hypervolume_reference_is_shared_by_every_variant():
    obj = Objective(SPACE)
    ref = shared_hv_reference(obj([SPACE.uniform(2, 4), SPACE.uniform(4, 8)], "hf"))
    lo, hi = obj([SPACE.uniform(2, 4)], "hf")[0], obj([SPACE.uniform(4, 8)], "hf")[0]
    assert ref == pytest.approx(lo - 0.1 * (hi - lo))
    refs, hvs = {}, {}
    for name, switch in {"autoqra": {}, "no_warm_start": {"warm_start": False}, "no_coupling": {"coupled": False},
                         "no_importance": {"importance_guided": False}}.items():
        s = EvolutionarySearch(SPACE, obj.imp_q, obj.imp_r,
                               EvolutionSettings(generations=2, hv_ref_score=ref, **switch), seed=1)
        s.run(obj)
        refs[name], hvs[name] = tuple(s.hv_ref), s.history
        restored = EvolutionarySearch.from_state(SPACE, obj.imp_q, obj.imp_r,
                                                 json.loads(json.dumps(s.state_dict())))
        assert restored.hv_ref == s.hv_ref
    assert set(refs.values()) == {(ref, 1.01)}
    # with one reference the variants' numbers compare: the warm start's front starts higher
    assert hvs["autoqra"][0] > hvs["no_warm_start"][0] > 0
    with pytest.raises(ValueError, match="failed"):
        shared_hv_reference([None, float("nan")])


def test_pipeline_contexts_of_all_variants_read_one_reference(tmp_path):
    from autoqra.io import atomic_write_json
    from autoqra.pipeline import search

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(SMOL))
    atomic_write_json(tmp_path / "budget.json", {"plan_bytes": SPACE.budget, "spec": {"type": "uniform", "bits": 4,
                                                                                      "rank": 8}})
    space_cfg = {"backend": "hqq", "group_size": 64, "bits": [2, 3, 4, 8], "ranks": [4, 8, 16]}
    obj = Objective(SPACE)

    class Evaluator:  # the HF fidelity of the synthetic objective, as evaluation records
        def evaluate(self, plan, fidelity, seed):
            return {"plan_hash": plan.hash, "status": "ok", "cached": False,
                    "score": obj([SPACE.from_plan(plan)], fidelity)[0]}

    doc = search.reference(SPACE, Evaluator(), 0, 8, tmp_path / "hv.json")
    assert [p["genome"] for p in doc["plans"]] == [SPACE.uniform(2, 4).tolist(), SPACE.uniform(4, 8).tolist()]
    settings = {}
    for name, variant in {"autoqra": {}, "no_warm_start": {"warm_start": False}}.items():
        ctx = search.SearchContext(tmp_path / "m", space_cfg, tmp_path / "budget.json", None,
                                   {"population": 4, "generations": 1, "promote": 2}, variant, 0, tmp_path / "hv.json")
        s = ctx.new()
        init = s.initial_population()
        for fid in s.initial_fidelities:
            s.tell(init, fid, obj(init, fid))
        s.select()
        settings[name] = (ctx.settings.hv_ref_score, ctx.settings.reference_rank, tuple(s.hv_ref))
    assert settings["autoqra"] == settings["no_warm_start"] == (doc["score"], 8, (doc["score"], 1.01))
    fixed = search.reference(SPACE, None, 0, 8, tmp_path / "fixed.json", fixed_score=-3.5)
    assert fixed["score"] == -3.5 and fixed["plans"] == []

    class Failing(Evaluator):  # the smallest plan fails: the next uniform plan that fits replaces it
        def __init__(self, bad):
            self.bad = bad

        def evaluate(self, plan, fidelity, seed):
            rec = super().evaluate(plan, fidelity, seed)
            return {**rec, "status": "failed", "score": None, "reason": "nan_loss"} if self.bad(plan) else rec

    smallest = SPACE.to_plan(SPACE.uniform(2, 4)).hash
    doc = search.reference(SPACE, Failing(lambda p: p.hash == smallest), 0, 8, tmp_path / "hv2.json")
    assert [r["status"] for r in doc["plans"]] == ["failed", "ok", "ok"]
    assert doc["score"] == pytest.approx(shared_hv_reference([r["score"] for r in doc["plans"][1:]]))
    # every evaluation fails: no shared score, each variant falls back to its own (the search then
    # stops on its own failed generation, which names the reasons)
    doc = search.reference(SPACE, Failing(lambda p: True), 0, 8, tmp_path / "hv3.json")
    assert doc["score"] is None and len(doc["plans"]) == len(uniform_genomes(SPACE, 8)) + 1
    ctx = search.SearchContext(tmp_path / "m", space_cfg, tmp_path / "budget.json", None,
                               {"population": 4, "generations": 1, "promote": 2}, {}, 0, tmp_path / "hv3.json")
    assert ctx.settings.hv_ref_score is None


# ---- the noise-robust pick ----------------------------------------------------------------------

def test_pick_candidates_interleave_rankings_fill_and_deduplicate():
    obj = Objective(SPACE)
    iq, ir = obj.imp_q, obj.imp_r
    rng = np.random.default_rng(1)  # a draw whose smallest plan is not also the best-scored one
    genomes = [repair_to_budget(SPACE, np.stack([rng.integers(0, 4, 30), rng.integers(0, 3, 30)]), iq, ir)
               for _ in range(12)]
    genomes.append(SPACE.uniform(8, 16))  # infeasible: never a candidate
    scores = obj(genomes, "hf")
    util = [-SPACE.memory(g) for g in genomes]  # a ranking that prefers small plans
    cands = pick_candidates(SPACE, genomes, [util, scores], 3, iq, ir)
    first_u = int(np.argmax(util[:12]))
    first_s = int(np.argmax(scores[:12]))
    assert first_u != first_s
    assert np.array_equal(cands[0], fill_to_budget(SPACE, genomes[first_u], iq, ir))
    assert np.array_equal(cands[1], fill_to_budget(SPACE, genomes[first_s], iq, ir))
    assert len(cands) == 3 and len({SPACE.key(c) for c in cands}) == 3
    assert all(saturated(SPACE, c) for c in cands)
    raw = pick_candidates(SPACE, genomes, [scores], 2, iq, ir, fill=False)
    assert [SPACE.key(c) for c in raw] == [SPACE.key(genomes[i]) for i in np.argsort(scores[:12])[::-1][:2]]
    # two plans that fill into the same plan give one candidate; the next-ranked plan takes the slot
    twin = pick_candidates(SPACE, [SPACE.uniform(4, 8), SPACE.uniform(4, 8), SPACE.uniform(3, 8)],
                           [[3.0, 2.0, 1.0]], 2, iq, ir)
    assert len(twin) == 2 and np.array_equal(twin[0], SPACE.uniform(4, 8))


def test_robust_pick_by_mean_and_the_seeds_it_uses():
    best, means, stds = robust_pick([[1.0, 3.0], [2.5, 2.4], [None, 9.0], [None, None]])
    assert best == 2 and means[:3] == pytest.approx([2.0, 2.45, 9.0]) and means[3] == -np.inf
    assert stds[0] == pytest.approx(np.sqrt(2)) and stds[2] == 0.0
    assert robust_pick([[1.0], [1.0]])[0] == 0  # ties: the better-ranked candidate
    with pytest.raises(ValueError, match="no candidate"):
        robust_pick([[None]])
    assert reevaluation_seeds(0, 2) == [1, 2] and heldout_seed(0, 2) == 3 and heldout_seed(5, 1) == 7
    assert reevaluation_seeds(0, 2, 1000) == [1001, 1002] and heldout_seed(0, 2, 1000) == 1003
    # the pipeline's pick seeds never meet the final fine-tuning seeds (0-4 in the study)
    k, seeds = pick_settings({"reevaluate_top_k": 2, "reevaluate_seeds": 2}, 0)
    assert k == 2 and seeds == [1001, 1002] and not set(seeds) & set(range(5))
    assert pick_settings({"reevaluate_seeds": 1, "pick_seed_offset": 0}, 3)[1] == [4]


def test_pick_phase_and_choice_from_records():
    from autoqra.pipeline.pick import (
        FINAL,
        STAGE1,
        candidate_phase,
        choose,
        cost_curve,
        pick_records,
    )

    obj = Objective(SPACE)
    iq, ir = obj.imp_q, obj.imp_r
    genomes = [SPACE.uniform(4, 8), SPACE.uniform(3, 16), SPACE.uniform(2, 16), SPACE.uniform(3, 8)]
    scores = obj(genomes, "hf")
    stage1 = [True, True, False, False]
    doc = candidate_phase(SPACE, genomes, scores, scores, 2, [1, 2], iq, ir, stage1)
    assert doc["candidates"] == [p["genome"] for p in doc["plans"] for _ in (1, 2)]
    assert doc["seeds"] == [1, 2] * len(doc["plans"])
    assert all(p["within_one_upgrade"] for p in doc["plans"])
    assert {s for p in doc["plans"] for s in p["sets"]} == {FINAL, STAGE1}
    # the noisy re-evaluations: the first plan wins on seed 1 but loses on the mean
    recs = {}
    for i, (g, s) in enumerate(zip(doc["candidates"], doc["seeds"], strict=True)):
        recs[i] = {"status": "ok", "score": obj([np.array(g)], "hf")[0] + (0.5 if (i, s) == (0, 1) else 0.0)
                   - (0.4 if i < 2 else 0.0), "fidelity": "hf", "steps": 5, "memory_bytes": SPACE.budget,
                   "settings": {"train": {"batch_size": 4, "grad_accum": 1}, "eval": {"max_examples": 20}}}
    pick = choose(SPACE, doc, recs, lambda s, m: s)
    assert pick["index"] != 0 and pick["mean_score"] == pytest.approx(np.mean(pick["candidates"][pick["index"]]["scores"]))
    assert pick["std_score"] >= 0 and pick["within_one_upgrade"]
    assert len(pick_records(doc, recs, FINAL)) == 2 * sum(FINAL in p["sets"] for p in doc["plans"])
    curve = cost_curve([recs[0], recs[1]], 20, evaluation_units(5, 4, 20), SPACE.budget, then=[recs[2]])
    assert [c["cost"] for c in curve] == pytest.approx([1, 2, 3])
    assert curve[-1]["best_score"] == max(recs[0]["score"], recs[1]["score"])  # the pick adds cost only


# ---- cost in HF-equivalents and equal-cost baselines ---------------------------------------------

def record(fidelity, steps, batch=4, accum=1, max_examples=20):
    return {"fidelity": fidelity, "steps": steps, "status": "ok",
            "settings": {"train": {"batch_size": batch, "grad_accum": accum}, "eval": {"max_examples": max_examples},
                         "fidelity": {"steps": steps}}}


def test_cost_counts_lf_by_its_work():
    # the default config: LF 2 steps, HF 5 steps, batch 4, 20 validation examples
    assert record_units(record("lf", 2)) == 3 * 2 * 4 + 20
    cost = hf_equivalents([record("lf", 2)] * 12 + [record("hf", 5)] * 10)
    assert cost["evaluations"] == {"lf": 12, "hf": 10}
    assert cost["hf_equivalents"] == pytest.approx(10 + 12 * 44 / 80)
    # the paper's fidelities: an LF evaluation is ~8 % of an HF one; 520 LF add ~28 % to 152 HF
    lf, hf = evaluation_units(16, 16, 500), evaluation_units(311, 16, 500)
    assert lf / hf == pytest.approx(0.082, abs=0.002)
    assert 520 * lf / hf / 152 == pytest.approx(0.28, abs=0.01)
    # a failed run on a data-fraction fidelity has no step count: it costs its fidelity's median
    failed = {"fidelity": "lf", "steps": None, "status": "failed", "settings": {"train": {}, "eval": {}}}
    assert record_units(failed) is None
    assert hf_equivalents([record("lf", 2), failed, record("hf", 5)])["hf_equivalents"] == pytest.approx(1 + 2 * 44 / 80)
    assert equal_cost_evaluations(20.99) == 20 and equal_cost_evaluations(21.0) == 21
    with pytest.raises(ValueError, match="no HF record"):
        hf_equivalents([record("lf", 2)])


class CountingEvaluator:
    """HF scores of a synthetic objective, as evaluator records; counts every evaluation."""

    def __init__(self, space):
        self.obj, self.calls = Objective(space), []

    def evaluate(self, plan, fidelity, seed):
        self.calls.append((plan.hash, fidelity, seed))
        g = self.obj.space.from_plan(plan)
        return {"plan_hash": plan.hash, "status": "ok", "reason": None, "cached": False, "seed": seed,
                "score": self.obj([g], fidelity)[0] + 1e-4 * seed, "memory_bytes": self.obj.space.memory(g),
                "train_seconds": 1.0, "eval_seconds": 0.1, "build_seconds": 0.1}


def test_random_and_optuna_searchers_spend_autoqra_recorded_cost(tmp_path):
    from autoqra.io import atomic_write_json, atomic_write_jsonl
    from autoqra.pipeline import methods, search

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(SMOL))
    atomic_write_json(tmp_path / "budget.json", {"plan_bytes": SPACE.budget})
    space_cfg = {"backend": "hqq", "group_size": 64, "bits": [2, 3, 4, 8], "ranks": [4, 8, 16]}
    refine = {"reevaluate_top_k": 2, "reevaluate_seeds": 2, "alpha": 0.6}
    # AutoQRA's recorded cost: 12 LF (0.55 HF each) + 10 HF + its pick's 4 re-evaluations
    spent = hf_equivalents([record("lf", 2)] * 12 + [record("hf", 5)] * 14)["hf_equivalents"]
    atomic_write_json(tmp_path / "history.json", {"cost": {"total": {"hf_equivalents": spent}}})
    budget = methods.equal_cost_budget(None, tmp_path / "history.json", refine, 0)
    assert budget["total"] == int(spent) == 20 and budget["proposals"] == 20 - 4
    assert methods.equal_cost_budget(9, None, refine, 0)["proposals"] == 5  # a count set in the config
    ev = CountingEvaluator(SPACE)
    m = tmp_path / "m"
    cands = methods.random_propose(m, space_cfg, tmp_path / "budget.json", budget, 0, tmp_path / "hf.json")
    assert len(cands) == 16
    recs = search.evaluate(SPACE, tmp_path / "hf.json", 0, 1, ev, 0, tmp_path / "shard.jsonl")
    atomic_write_jsonl(tmp_path / "shard.jsonl", recs)
    doc = methods.random_select(m, space_cfg, tmp_path / "budget.json", refine, tmp_path / "hf.json",
                                [tmp_path / "shard.jsonl"], 0, tmp_path / "pick.json")
    search.evaluate(SPACE, tmp_path / "pick.json", 0, 1, ev, 0, tmp_path / "pick-shard.jsonl")
    summary = methods.random_pick(m, space_cfg, tmp_path / "budget.json", refine, tmp_path / "hf.json",
                                  [tmp_path / "shard.jsonl"], tmp_path / "pick.json", [tmp_path / "pick-shard.jsonl"],
                                  0, tmp_path / "plan.json", tmp_path / "summary.json")
    assert len(ev.calls) == summary["cost"]["hf_equivalents"] == budget["total"] == 20
    assert {s for _, _, s in ev.calls[16:]} == {1001, 1002} and len(doc["plans"]) == 2  # the pick: fresh seeds
    assert summary["final"]["within_one_upgrade"] and Plan.load(tmp_path / "plan.json").meta["origin"] == "random_search"
    ev = CountingEvaluator(SPACE)
    opt = methods.optuna_search(m, space_cfg, tmp_path / "budget.json", ev, budget, "random", 0,
                                tmp_path / "optuna.json", refine)
    assert opt["cost"]["hf_equivalents"] == budget["total"] == 20
    assert len(ev.calls) == 20 + 1 and ev.calls[-1][2] == heldout_seed(0, 2, 1000)  # + one held-out score
    assert opt["final"]["heldout_seed"] == 1003 and opt["final"]["heldout_hf_score"] is not None
