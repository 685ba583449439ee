"""Baseline plans (uniform, sequential, random), the method plan step and the random-search pick."""

import json

import numpy as np
import pytest

from autoqra.baselines import random_genomes, sequential_genome, uniform_plan
from autoqra.errors import ConfigError
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import Plan
from autoqra.search.space import SearchSpace

SMOL = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
MM = MemoryModel(ModelShape.from_config(SMOL), "hqq", 64)
BUDGET = MM.plan_bytes(Plan.uniform(30, 4, 8))
SPACE = SearchSpace.from_memory_model(MM, (2, 3, 4, 8), (4, 8, 16), BUDGET)


def test_uniform_plan_16_bit_is_plain_lora():
    p = uniform_plan(30, 16, 8, "hqq", 64)
    assert p.backend == "none" and set(p.bits) == {16} and set(p.ranks) == {8}
    q = uniform_plan(30, 4, 8, "bnb", 64)
    assert q.backend == "bnb" and set(q.bits) == {4}


def test_sequential_fills_the_budget_by_fidelity_prior():
    rng = np.random.default_rng(0)
    iq = rng.random(30)
    g = sequential_genome(SPACE, iq, 8)
    assert SPACE.feasible(g)
    assert set(g[1].tolist()) == {SPACE.ranks.index(8)}  # ranks never move
    bits = np.array([SPACE.bits[i] for i in g[0]])
    # More important blocks never get fewer bits than less important ones.
    order = np.argsort(iq)
    assert all(bits[order[i]] <= bits[order[i + 1]] for i in range(29))
    # A real mix (not uniform 4-bit), and the budget is spent: no further upgrade fits.
    assert len(set(bits.tolist())) > 1
    ir = SPACE.ranks.index(8)
    left = SPACE.budget - SPACE.memory(g)
    assert all(g[0, i] == 3 or SPACE.cost[i, g[0, i] + 1, ir] - SPACE.cost[i, g[0, i], ir] > left for i in range(30))
    # Equal priors: the allocation is as even as the budget allows (never two rungs apart).
    even = sequential_genome(SPACE, np.ones(30), 8)
    assert even[0].max() - even[0].min() <= 1


def test_sequential_reports_an_impossible_rank():
    small = SearchSpace.from_memory_model(MM, (2, 3, 4, 8), (4, 8, 16), MM.plan_bytes(Plan.uniform(30, 2, 4)))
    with pytest.raises(ConfigError, match="lower the rank"):
        sequential_genome(small, np.ones(30), 16)
    with pytest.raises(ConfigError, match="not on the rank ladder"):
        sequential_genome(SPACE, np.ones(30), 32)


def test_random_genomes_feasible_distinct_and_seeded():
    a = random_genomes(SPACE, 12, np.random.default_rng(3))
    b = random_genomes(SPACE, 12, np.random.default_rng(3))
    assert all(SPACE.feasible(g) for g in a)
    assert len({SPACE.key(g) for g in a}) == 12
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    # Uniform draws: every rung of both ladders shows up.
    assert set(np.concatenate([g[0] for g in a]).tolist()) == {0, 1, 2, 3}
    tight = SearchSpace.from_memory_model(MM, (2, 3, 4, 8), (4, 8, 16), SPACE.min_memory())
    with pytest.raises(ValueError, match="feasible plans"):
        random_genomes(tight, 2, np.random.default_rng(0), max_tries=200)


def test_random_search_picks_like_autoqra(tmp_path):
    """random_select: candidates are the top plans by AutoQRA's utility and by HF score, filled to
    the budget (a failed plan never); random_pick: the best mean score over the fresh seeds."""
    from autoqra.io import atomic_write_json
    from autoqra.pipeline import methods
    from autoqra.search.space import fill_to_budget, saturated

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(SMOL))
    atomic_write_json(tmp_path / "budget.json", {"plan_bytes": BUDGET})
    space_cfg = {"backend": "hqq", "group_size": 64, "bits": [2, 3, 4, 8], "ranks": [4, 8, 16]}
    refine = {"alpha": 0.6, "reevaluate_top_k": 2, "reevaluate_seeds": 2}
    budget = {"proposals": 6}
    cands = methods.random_propose(tmp_path / "m", space_cfg, tmp_path / "budget.json", budget, 0, tmp_path / "hf.json")
    mems = [SPACE.memory(np.array(c)) for c in cands]
    # Score = memory (more bytes, better) except one plan that is best on score at the lowest memory.
    scores = [m / 1e8 for m in mems]
    star = int(np.argmin(mems))
    scores[star] = max(scores) + 1.0
    failed = 0 if star else 1
    scores[failed] = None  # a failed evaluation is never picked
    with open(tmp_path / "shard.jsonl", "w") as fh:
        for i, s in enumerate(scores):
            fh.write(json.dumps({"index": i, "plan_hash": f"h{i}", "status": "ok" if s is not None else "failed",
                                 "score": s}) + "\n")
    doc = methods.random_select(tmp_path / "m", space_cfg, tmp_path / "budget.json", refine, tmp_path / "hf.json",
                                [tmp_path / "shard.jsonl"], 0, tmp_path / "pick.json")
    flat = np.full(30, 0.5)
    plans = [np.array(p["genome"]) for p in doc["plans"]]
    # the star is the best plan by utility and by score: the first candidate, filled to the budget
    assert np.array_equal(plans[0], fill_to_budget(SPACE, np.array(cands[star]), flat, flat))
    assert len(plans) == 2 and all(saturated(SPACE, g) for g in plans)
    assert doc["seeds"] == [1, 2, 1, 2] and doc["reevaluation_seeds"] == [1, 2]
    # fresh-seed scores: the second candidate is better on average
    with open(tmp_path / "pick.jsonl", "w") as fh:
        for i, s in enumerate([0.9, 0.1, 0.6, 0.5]):
            fh.write(json.dumps({"index": i, "plan_hash": f"p{i}", "status": "ok", "score": s}) + "\n")
    summary = methods.random_pick(tmp_path / "m", space_cfg, tmp_path / "budget.json", refine, tmp_path / "hf.json",
                                  [tmp_path / "shard.jsonl"], tmp_path / "pick.json", [tmp_path / "pick.jsonl"], 0,
                                  tmp_path / "plan.json", tmp_path / "summary.json")
    plan = Plan.load(tmp_path / "plan.json")
    assert SPACE.from_plan(plan).tolist() == plans[1].tolist()
    assert summary["final"]["hf_score"] == pytest.approx(0.55) and summary["final"]["hf_score_std"] > 0
    assert summary["evaluations"] == 6 and summary["failed"] == 1
    assert summary["best_utility"]["hf_score"] == pytest.approx(scores[star])
    assert summary["cost"]["hf_equivalents"] == 6 + 4


def test_method_plan_writes_meta_for_each_kind(tmp_path):
    from autoqra.io import atomic_write_json
    from autoqra.pipeline.methods import method_plan
    from autoqra.sensitivity import write_priors

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(SMOL))
    atomic_write_json(tmp_path / "budget.json", {"plan_bytes": BUDGET})
    space_cfg = {"backend": "hqq", "group_size": 64, "bits": [2, 3, 4, 8], "ranks": [4, 8, 16]}
    args = (tmp_path / "m", space_cfg, tmp_path / "budget.json")
    p = method_plan({"plan": "uniform", "bits": 16, "rank": 8, "backend": None}, *args, None, None,
                    tmp_path / "a.json", method="lora16")
    assert p.backend == "none" and p.meta["within_budget"] is False and p.meta["method"] == "lora16"
    p = method_plan({"plan": "uniform", "bits": 4, "rank": 8, "backend": None}, *args, None, None,
                    tmp_path / "b.json", method="hqq4")
    assert p.meta["memory_bytes"] == pytest.approx(BUDGET) and p.meta["within_budget"]
    rows = [{"block": i, "iq_raw": v, "iq_norm": v, "ir_raw": 0.5, "ir_norm": 0.5, "combined": v}
            for i, v in enumerate(np.linspace(0, 1, 30))]
    write_priors(rows, tmp_path / "priors.tsv")
    p = method_plan({"plan": "sequential", "rank": 8}, *args, tmp_path / "priors.tsv", None,
                    tmp_path / "c.json", method="sequential")
    assert p.meta["within_budget"] and p.bits[0] <= p.bits[-1] and set(p.ranks) == {8}
    with pytest.raises(ValueError, match="needs the plan its search wrote"):
        method_plan({"plan": "search", "variant": "autoqra"}, *args, None, None, tmp_path / "d.json", method="x")
    assert json.loads((tmp_path / "c.json").read_text())["meta"]["kind"] == "sequential"


def test_optuna_search_proposes_feasible_plans_deterministically():
    from autoqra.search.optuna_sampler import OptunaSearch

    def run(seed):
        opt, out = OptunaSearch(SPACE, "tpe", seed), []
        for i in range(12):
            proposed, g = opt.ask()
            assert SPACE.feasible(g) and proposed.shape == g.shape
            out.append(g)
            opt.tell(None if i == 3 else float(SPACE.memory(g)) / 1e8)  # a failed trial is allowed
        return out

    a, b = run(1), run(1)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert len({SPACE.key(g) for g in a}) > 6
    with pytest.raises(ValueError, match="unknown"):
        OptunaSearch(SPACE, "cmaes")
