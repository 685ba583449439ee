"""Fair rivals (issue #23): the oracle is the exact optimum of the additive damage model, the random
search's pool holds the uniform plans that fit, Stage 0 is charged to AutoQRA's cost."""

import itertools
import json

import numpy as np
import pytest

from autoqra.baselines import block_damages, oracle_genome, plan_damage, plan_distance
from autoqra.errors import ConfigError
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import Plan
from autoqra.search.cost import charge_stage0, hf_equivalents, stage0_units
from autoqra.search.space import SearchSpace

SMOL = {"model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
        "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}
QMAP = {2: "hqq", 3: "hqq", 4: "nf4", 8: "hqq"}
# measured uniform-model damages (nats/token, benchmarks/results/quantizer_bench.json, damage_heldout)
DAMAGE = {2: 8.4546, 3: 1.3350, 4: 0.2594, 8: 0.0021}


def smol_space(budget_plan: Plan | None = None, budget: float | None = None) -> SearchSpace:
    mm = MemoryModel(ModelShape.from_config(SMOL), QMAP, 64, 0)
    b = budget if budget is not None else mm.plan_bytes(budget_plan or Plan.mapped((4,) * 30, (8,) * 30, QMAP, 64, 0))
    return SearchSpace.from_memory_model(mm, (2, 3, 4, 8), (4, 8, 16), b)


def test_oracle_is_the_exact_optimum_by_brute_force():
    rng = np.random.default_rng(0)
    n = 6
    cost = np.stack([np.array([[1.0, 1.1, 1.2], [1.5, 1.6, 1.7], [2.0, 2.1, 2.2], [4.0, 4.1, 4.2]])
                     * (1 + 0.3 * rng.random()) for _ in range(n)])
    table = rng.random((n, 4)) * np.array([8.0, 1.3, 0.3, 0.0])
    for budget in (9.5, 12.3, 16.0, 30.0):
        space = SearchSpace((2, 3, 4, 8), (4, 8, 16), cost, budget)
        g, info = oracle_genome(space, table, 8)
        assert space.feasible(g) and (g[1] == 1).all() and info["exact"]
        best = min(sum(table[i, c] for i, c in enumerate(combo))
                   for combo in itertools.product(range(4), repeat=n)
                   if sum(cost[i, c, 1] for i, c in enumerate(combo)) <= budget)
        assert plan_damage(table, g) == pytest.approx(best, abs=1e-12)
        assert info["lower_bound"] <= info["damage"] + 1e-12


def test_oracle_on_smollm2_uniform_nf4_below_4_bits_mixed():
    # an 11.8:1 sensitivity spread (SmolLM2's measured max/min raw I_q), monotone over depth
    iq = np.linspace(1.0, 11.8, 30)
    table = block_damages(iq, DAMAGE, (2, 3, 4, 8))
    assert table.sum(axis=0) == pytest.approx([DAMAGE[b] for b in (2, 3, 4, 8)])  # uniform plans: measured
    space = smol_space()
    g, info = oracle_genome(space, table, 8)
    # at the uniform-NF4 budget the optimum is uniform NF4 (DESIGN §3: no mixed plan can win at b4)
    assert (g[0] == 2).all() and info["exact"] and info["damage"] == pytest.approx(DAMAGE[4])
    # halfway between uniform 2- and 4-bit: a mixed plan, far better than every uniform plan that fits
    mm = MemoryModel(ModelShape.from_config(SMOL), QMAP, 64, 0)
    lo, hi = (mm.plan_bytes(Plan.mapped((b,) * 30, (8,) * 30, QMAP, 64, 0)) for b in (2, 4))
    tight = smol_space(budget=(lo + hi) / 2)
    g2, info2 = oracle_genome(tight, table, 8)
    assert tight.feasible(g2) and len(set(g2[0].tolist())) > 1
    assert info2["damage"] < DAMAGE[2] / 2
    assert plan_distance(g, g2)["bits"] > 0 and plan_distance(g, g)["blocks"] == 0
    with pytest.raises(ConfigError, match="rank"):
        oracle_genome(space, table, 32)
    with pytest.raises(ConfigError, match="damages"):
        block_damages(iq, {2: 1.0}, (2, 3, 4, 8))


def test_oracle_reads_rung_damages_from_the_quantizer_bench():
    from autoqra.pipeline.oracle import DEFAULT_BENCH, bench_rung_damages, rung_damages

    space = smol_space()
    dmg = bench_rung_damages(DEFAULT_BENCH, space)
    rows = {r["key"]: r["damage_heldout"] for r in json.loads(DEFAULT_BENCH.read_text())["rows"]}
    assert dmg == {2: rows["hqq-g64-m16-b2"], 3: rows["hqq-g64-m16-b3"], 4: rows["nf4-b4"], 8: rows["hqq-g64-m16-b8"]}
    assert dmg[2] > 5 * dmg[3] > 5 * dmg[4] > 5 * dmg[8]  # the measured ladder: each rung far less damage
    assert rung_damages({"damages": {"2": 9, "3": 2, "4": 1, "8": 0}}, space) == ({2: 9.0, 3: 2.0, 4: 1.0, 8: 0.0},
                                                                                  "config")
    other = SearchSpace(space.bits, space.ranks, space.cost, space.budget, {**QMAP, 3: "pack"}, 64, 0)
    with pytest.raises(ConfigError, match="damages"):
        bench_rung_damages(DEFAULT_BENCH, other)


def test_random_pool_holds_the_uniform_plans_that_fit():
    from autoqra.pipeline.methods import random_pool
    from autoqra.search.operators import uniform_genomes

    space = smol_space()
    pool = random_pool(space, 12, np.random.default_rng(0), 8)
    uniforms = uniform_genomes(space, 8)
    assert len(uniforms) >= 3 and np.array_equal(pool[0], space.uniform(4, 8))  # the budget's own plan first
    keys = [space.key(g) for g in pool]
    assert len(set(keys)) == 12 and {space.key(g) for g in uniforms} <= set(keys)
    assert all(space.feasible(g) for g in pool)


def test_stage0_is_charged_in_hf_equivalents():
    sens = {"n_calib": 8, "calib_len": 64, "plasticity": "grad_norm", "grad_batches": 4, "batch_size": 4}
    s0 = stage0_units(sens, 30, 64)
    assert s0["fidelity"] == 8 * 31 and s0["plasticity"] == 3 * 4 * 4
    # longer calibration sequences cost more; loss_drop trains per block
    assert stage0_units({**sens, "calib_len": 128}, 30, 64)["fidelity"] == 2 * 8 * 31
    assert stage0_units({**sens, "plasticity": "loss_drop"}, 30, 64)["plasticity"] > 30 * 3 * 10 * 4
    rec = {"fidelity": "hf", "steps": 5, "status": "ok",
           "settings": {"train": {"batch_size": 4, "grad_accum": 1}, "eval": {"max_examples": 20}}}
    cost = {"total": hf_equivalents([rec] * 10)}
    charged = charge_stage0(cost, s0)
    assert cost["total"]["hf_unit"] == 3 * 5 * 4 + 20
    assert charged["stage0"]["hf_equivalents"] == pytest.approx(296 / 80)
    assert charged["total"]["hf_equivalents"] == pytest.approx(10 + 296 / 80) and charged["total"]["stage0_charged"]


def test_equal_cost_random_search_gets_autoqra_stage0(tmp_path):
    from autoqra.io import atomic_write_json
    from autoqra.pipeline import methods

    rec = {"fidelity": "hf", "steps": 5, "status": "ok",
           "settings": {"train": {"batch_size": 4, "grad_accum": 1}, "eval": {"max_examples": 20}}}
    s0 = stage0_units({"n_calib": 8, "calib_len": 64, "grad_batches": 4, "batch_size": 4}, 30, 64)
    cost = charge_stage0({"total": hf_equivalents([rec] * 14)}, s0)
    atomic_write_json(tmp_path / "history.json", {"cost": cost})
    refine = {"reevaluate_top_k": 2, "reevaluate_seeds": 2}
    budget = methods.equal_cost_budget(None, tmp_path / "history.json", refine, 0)
    assert budget["total"] == 17 and budget["proposals"] == 17 - 4  # 14 + 3.7 Stage-0 HF-equivalents
    assert json.loads((tmp_path / "history.json").read_text())["cost"]["stage0"]["units"] == 296


def test_oracle_method_config_is_validated():
    import yaml

    from autoqra.config import REPO_ROOT, validate_config

    cfg = yaml.safe_load((REPO_ROOT / "config" / "micro.yaml").read_text())
    bits = cfg.get("search_space", {}).get("bits", [2, 3, 4, 8])
    ok = {**cfg, "methods": {**cfg["methods"], "oracle": {"plan": "oracle", "damages": {b: 1.0 / b for b in bits}}}}
    assert validate_config(ok, base_dir=REPO_ROOT)["methods"]["oracle"]["plan"] == "oracle"
    bad = {**cfg, "methods": {**cfg["methods"], "oracle": {"plan": "oracle", "damages": {2: 1.0}}}}
    with pytest.raises(ConfigError, match="oracle.damages"):
        validate_config(bad, base_dir=REPO_ROOT)
