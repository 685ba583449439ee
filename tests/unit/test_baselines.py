"""Baseline plans (uniform, sequential, random), the method plan step and the random-search pick."""

import json

import numpy as np
import pytest

from autoqra.baselines import FeasibleCounter, random_genomes, sequential_genome, uniform_plan
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
    assert set(p.quantizers) == {"none"} and set(p.bits) == {16} and set(p.ranks) == {8}
    q = uniform_plan(30, 4, 8, "nf4", 64)
    assert set(q.quantizers) == {"nf4"} and set(q.bits) == {4}


def test_uniform_qlora_nf4_is_in_autoqras_space_under_the_default_map(tmp_path):
    """The default config's quantizer map puts the QLoRA baseline inside the search space, at the budget."""
    import yaml

    from autoqra.config import REPO_ROOT, validate_schema
    from autoqra.io import atomic_write_json
    from autoqra.memory import budget_report
    from autoqra.pipeline.common import search_space
    from autoqra.pipeline.methods import method_plan

    cfg = validate_schema(yaml.safe_load((REPO_ROOT / "config" / "config.yaml").read_text()))
    space_cfg, spec = cfg["search_space"], cfg["methods"]["qlora_nf4"]
    assert spec["quantizer"] == "nf4" and spec["bits"] == 4
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(SMOL))
    info, _ = budget_report(ModelShape.from_config(SMOL), space_cfg, cfg["budget"])
    atomic_write_json(tmp_path / "budget.json", info)
    space = search_space(tmp_path / "m", space_cfg, tmp_path / "budget.json")
    plan = method_plan(spec, tmp_path / "m", space_cfg, tmp_path / "budget.json", None, None,
                       tmp_path / "qlora.json", method="qlora_nf4")
    assert set(plan.quantizers) == {"nf4"} and plan.meta["in_search_space"] and plan.meta["within_budget"]
    g = space.from_plan(plan)
    assert (g == space.uniform(4, spec["rank"])).all() and space.feasible(g) and space.to_plan(g) == plan
    # the HQQ 4-bit baseline is not a point of that space (its 4-bit rung is NF4)
    hqq4_spec = {"plan": "uniform", "bits": 4, "rank": 8, "quantizer": "hqq"}  # as in config/study.yaml
    hqq4 = method_plan(hqq4_spec, tmp_path / "m", space_cfg, tmp_path / "budget.json", None, None,
                       tmp_path / "hqq4.json", method="hqq4")
    assert not hqq4.meta["in_search_space"] and not space.contains(hqq4)


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


def _damage(space, g, iq_raw):
    """The sequential baseline's own damage model, Σ I_q(ℓ)·4^-(b_ℓ - b_min), in I_q's units (nats)."""
    b = np.array([space.bits[i] for i in g[0]])
    return float((iq_raw * 4.0 ** -(b - space.bits[0])).sum())


def test_sequential_uses_raw_iq_in_its_damage_models_units():
    """With a flat-bulk prior, min-max normalisation charges the least sensitive block nothing and
    the allocation ends worse under the damage model than the one from the raw I_q."""
    raw = np.full(30, 0.05)  # JSD in nats: a flat bulk ...
    raw[[3, 14, 25]] = 0.2   # ... and three sensitive blocks
    norm = (raw - raw.min()) / np.ptp(raw)  # the bulk becomes 0: "no damage at any width"
    g_raw, g_norm = sequential_genome(SPACE, raw, 8), sequential_genome(SPACE, norm, 8)
    assert SPACE.feasible(g_raw) and SPACE.feasible(g_norm)
    d_raw, d_norm = _damage(SPACE, g_raw, raw), _damage(SPACE, g_norm, raw)
    assert d_raw < 0.8 * d_norm, (d_raw, d_norm)
    # the normalised prior spends the budget on 8-bit for the sensitive blocks and starves the bulk
    assert g_norm[0, [3, 14, 25]].min() == 3 and g_norm[0].min() < g_raw[0].min()
    with pytest.raises(ValueError, match="raw I_q values >= 0"):
        sequential_genome(SPACE, raw - 1.0, 8)


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


def test_counted_draws_are_uniform_over_the_feasible_plans():
    """On a space small enough to enumerate (4 blocks, unequal costs, 3 x 2 options each: 1296 plans),
    the counter's draws, after the exact feasibility check, hit every feasible plan about equally often
    and nothing else; its count bounds the feasible set from above."""
    import itertools

    rng = np.random.default_rng(0)
    cost = rng.uniform(1.0, 10.0, (4, 3, 2)) * np.array([1.0, 2.0, 3.0])[None, :, None]
    space = SearchSpace((2, 4, 8), (4, 8), cost, budget=40.0)
    plans = [np.array(list(zip(*opts, strict=True))) for opts in
             itertools.product(itertools.product(range(3), range(2)), repeat=4)]
    feasible = {space.key(g) for g in plans if space.feasible(g)}
    assert 50 < len(feasible) < 1000  # the budget binds
    counter = FeasibleCounter(space, bins=64)
    assert len(feasible) <= counter.count_estimate() < 1.3 * len(feasible)
    hits: dict[bytes, int] = {}
    for _ in range(40 * len(feasible)):
        g = counter.draw(rng)
        if space.feasible(g):
            hits[space.key(g)] = hits.get(space.key(g), 0) + 1
    assert set(hits) == feasible
    counts = np.array(list(hits.values()))
    chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum()  # ~ chi2(df = |F| - 1) if uniform
    df = len(feasible) - 1
    assert abs(chi2 - df) < 5 * np.sqrt(2 * df)


def test_random_search_in_a_tight_budget():
    """Where rejection from the ladders accepts ~nothing (the study's b3 on SmolLM2 accepted 1 in 10^5),
    the counted draws still give distinct feasible plans, with low bits but every rung present."""
    lo, hi = (MM.plan_bytes(Plan.uniform(30, b, 8)) for b in (2, 4))
    tight = SearchSpace.from_memory_model(MM, (2, 3, 4, 8), (4, 8, 16), (lo + hi) / 2)
    gs = random_genomes(tight, 16, np.random.default_rng(0))
    assert len({tight.key(g) for g in gs}) == 16 and all(tight.feasible(g) for g in gs)
    assert set(np.concatenate([g[0] for g in gs]).tolist()) == {0, 1, 2, 3}
    assert all(tight.memory(g) > 0.9 * tight.budget for g in gs)  # uniform on F: most plans sit near the budget
    assert all((x == y).all() for x, y in zip(gs, random_genomes(tight, 16, np.random.default_rng(0)), strict=True))


def test_random_search_picks_like_autoqra(tmp_path):
    """random_select: candidates are the top plans by AutoQRA's utility and by HF score, filled to
    the budget (a failed plan never); random_pick: the best mean score over the fresh seeds."""
    from autoqra.io import atomic_write_json
    from autoqra.pipeline import methods
    from autoqra.search.space import fill_to_budget, saturated

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps(SMOL))
    atomic_write_json(tmp_path / "budget.json", {"plan_bytes": BUDGET})
    space_cfg = {"quantizers": {}, "hqq_axis": 0, "group_size": 64, "bits": [2, 3, 4, 8], "ranks": [4, 8, 16]}
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
    # pick seeds far from the final fine-tuning seeds (refine.pick_seed_offset, default 1000)
    assert doc["seeds"] == [1001, 1002, 1001, 1002] and doc["reevaluation_seeds"] == [1001, 1002]
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
    space_cfg = {"quantizers": {}, "hqq_axis": 0, "group_size": 64, "bits": [2, 3, 4, 8], "ranks": [4, 8, 16]}
    args = (tmp_path / "m", space_cfg, tmp_path / "budget.json")
    p = method_plan({"plan": "uniform", "bits": 16, "rank": 8, "quantizer": None}, *args, None, None,
                    tmp_path / "a.json", method="lora16")
    assert p.quantizers == ("none",) * 30 and p.meta["within_budget"] is False and p.meta["method"] == "lora16"
    p = method_plan({"plan": "uniform", "bits": 4, "rank": 8, "quantizer": None}, *args, None, None,
                    tmp_path / "b.json", method="hqq4")
    assert p.meta["memory_bytes"] == pytest.approx(BUDGET) and p.meta["within_budget"]
    assert p.quantizers == ("hqq",) * 30 and p.meta["in_search_space"]
    # raw I_q: a flat bulk with three sensitive blocks (normalisation zeroes the bulk)
    raw = np.where(np.isin(np.arange(30), [3, 14, 29]), 0.2, 0.05)
    norm = (raw - raw.min()) / (raw.max() - raw.min())
    rows = [{"block": i, "iq_raw": r, "iq_norm": v, "ir_raw": 0.5, "ir_norm": 0.5, "combined": v}
            for i, (r, v) in enumerate(zip(raw, norm, strict=True))]
    write_priors(rows, tmp_path / "priors.tsv")
    p = method_plan({"plan": "sequential", "rank": 8}, *args, tmp_path / "priors.tsv", None,
                    tmp_path / "c.json", method="sequential")
    assert p.meta["within_budget"] and p.bits[0] <= p.bits[-1] and set(p.ranks) == {8}
    assert p.meta["in_search_space"]
    # the step feeds the raw I_q (the normalised prior would give another allocation)
    assert SPACE.from_plan(p).tolist() == sequential_genome(SPACE, raw, 8).tolist()
    assert SPACE.from_plan(p).tolist() != sequential_genome(SPACE, norm, 8).tolist()
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
