"""Memory model checked against numbers computed by hand from the published configs."""

import json

import pytest

from autoqra.errors import ConfigError, PlanError
from autoqra.memory import (
    MemoryModel,
    ModelShape,
    ProjectionShape,
    hqq_layout_error,
    resolve_budget,
    weight_bytes,
)
from autoqra.plan import Ladders, Plan

LLAMA3_8B = {  # meta-llama/Meta-Llama-3-8B config.json (relevant keys)
    "model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
}
QWEN3_4B = {  # Qwen/Qwen3-4B config.json (relevant keys)
    "model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
    "tie_word_embeddings": True, "attention_bias": False,
}


SMOLLM2_135M = {  # HuggingFaceTB/SmolLM2-135M-Instruct config.json (relevant keys): the default model
    "model_type": "llama", "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
    "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152,
    "tie_word_embeddings": True, "attention_bias": False, "mlp_bias": False,
}


def test_llama3_8b_shapes_gqa():
    s = ModelShape.from_config(LLAMA3_8B)
    shapes = {p.name: (p.in_features, p.out_features) for p in s.projections()}
    assert shapes["q_proj"] == (4096, 4096)
    assert shapes["k_proj"] == (4096, 1024)  # 8 kv heads x 128
    assert shapes["v_proj"] == (4096, 1024)
    assert shapes["down_proj"] == (14336, 4096)
    # 2*4096^2 + 2*4096*1024 + 3*4096*14336
    assert s.block_weight_params == 218_103_808
    # (4096+4096)*2 + (4096+1024)*2 + (4096+14336)*3
    assert s.lora_params_per_rank == 81_920
    fixed = s.fixed_params
    assert fixed["embed_tokens"] == fixed["lm_head"] == 525_336_576
    assert fixed["norms"] == 32 * 2 * 4096 + 4096
    # the whole model has the published 8.03B parameters
    assert 32 * s.block_weight_params + sum(fixed.values()) == 8_030_261_248


def test_llama3_8b_uniform_4bit_rank8_bytes():
    mm = MemoryModel(ModelShape.from_config(LLAMA3_8B), "hqq", 128)
    c = mm.block_cost(4, 8)
    assert c["weights"] == 218_103_808 / 2
    assert c["quant_meta"] == 218_103_808 / 128 * 4     # fp16 scale + fp16 zero per group
    assert c["lora"] == 81_920 * 8 * 2
    assert mm.plan_bytes(Plan.uniform(32, 4, 8)) == 32 * (109_051_904 + 6_815_744 + 1_310_720)
    assert mm.fixed_bytes == 2 * 1_050_939_392


def test_qwen3_4b_shapes_head_dim_and_tied_embeddings():
    s = ModelShape.from_config(QWEN3_4B)
    shapes = {p.name: (p.in_features, p.out_features) for p in s.projections()}
    assert shapes["q_proj"] == (2560, 4096)  # head_dim 128 x 32 heads != hidden 2560
    assert shapes["o_proj"] == (4096, 2560)
    assert shapes["k_proj"] == (2560, 1024)
    assert s.block_weight_params == 100_925_440
    assert s.lora_params_per_rank == 57_344
    fixed = s.fixed_params
    assert fixed["lm_head"] == 0  # tied
    assert fixed["norms"] == 36 * (2 * 2560 + 2 * 128) + 2560  # includes q_norm/k_norm
    assert 36 * s.block_weight_params + sum(fixed.values()) == 4_022_468_096


@pytest.mark.parametrize("axis", [0, 1])
def test_qwen3_4b_mixed_plan_bytes(axis):
    mm = MemoryModel(ModelShape.from_config(QWEN3_4B), "hqq", 128, hqq_axis=axis)
    bits = [2, 3, 4, 8] * 9
    ranks = [4, 8, 16] * 12
    W, L, G = 100_925_440, 57_344, 100_925_440 / 128 * 4
    # codes are packed exactly whatever the axis (3-bit: 8 codes in 3 bytes)
    per_bits = {b: W * b / 8 for b in (2, 3, 4, 8)}
    expect = sum(per_bits[b] + G + L * r * 2 for b, r in zip(bits, ranks, strict=True))
    plan = Plan(tuple(bits), tuple(ranks), hqq_axis=axis)
    assert mm.plan_bytes(plan) == pytest.approx(expect, rel=1e-12)


def test_hqq_packing_on_smollm2_shapes_and_layouts_hqq_cannot_store():
    q = ProjectionShape("q_proj", 576, 576)  # 331,776 weights, 5184 groups of 64
    for axis in (0, 1):  # 3-bit: 8 codes in 3 bytes = 3 bits, + 2 fp16 per group of 64 = 0.5
        w, m = weight_bytes(q, 3, "hqq", 64, axis)
        assert (w, m) == (q.numel * 3 / 8, 5184 * 4) and 8 * (w + m) / q.numel == 3.5
    # 8-bit metadata: 2 bytes per group + 8 bytes per block of 256 groups (21 blocks): 3.2541 bits
    w, m = weight_bytes(q, 3, "hqq", 64, 0, meta_bits=8)
    assert m == 5184 * 2 + 21 * 8 and 8 * (w + m) / q.numel == pytest.approx(3.2541, abs=1e-4)
    assert weight_bytes(q, 2, "hqq", 64, 0) == (q.numel / 4, 5184 * 4)
    assert weight_bytes(ProjectionShape("odd", 3, 3), 3, "hqq", 9, 0) == (6, 4)  # 9 codes: one partial word
    assert hqq_layout_error(q, 4, 64, 0) is None
    assert "not a multiple of group size 128" in hqq_layout_error(ProjectionShape("k", 576, 101), 4, 128, 0)
    assert hqq_layout_error(ProjectionShape("x", 96, 32), 4, 1024, 1) is None  # flat packing: any row count
    with pytest.raises(PlanError, match="quantizer 'nf4' cannot store 3-bit"):
        weight_bytes(q, 3, "nf4", 64)
    with pytest.raises(ConfigError, match="search_space.meta_bits"):
        weight_bytes(q, 3, "hqq", 64, 0, meta_bits=4)


def test_16bit_blocks_carry_no_quant_metadata_and_qwen2_biases():
    s = ModelShape.from_config({**QWEN3_4B, "model_type": "qwen2", "num_hidden_layers": 2})
    assert s.attention_bias and s.fixed_params["biases"] == 2 * (4096 + 1024 + 1024)
    mm = MemoryModel(s, "hqq", 128)
    assert mm.block_cost(16, 4)["quant_meta"] == 0
    assert mm.block_cost(16, 4)["weights"] == 2 * s.block_weight_params


def test_bnb_nf4_and_int8_bytes():
    s = ModelShape.from_config(LLAMA3_8B)
    mm = MemoryModel(s, "bnb", 64)  # an old backend name still reads as its map (nf4 at 4, int8 at 8)
    nf4 = mm.block_cost(4, 8)
    assert nf4 == MemoryModel(s, {4: "nf4"}, 128).block_cost(4, 8) == mm.block_cost(4, 8, "nf4")
    assert nf4["weights"] == s.block_weight_params / 2
    # one 8-bit absmax per 64 weights + fp32 second-level constants: ~0.127 bits/weight
    assert 0.12 < nf4["quant_meta"] * 8 / s.block_weight_params < 0.135
    q = ProjectionShape("q_proj", 4096, 4096)
    assert weight_bytes(q, 4, "nf4", 128)[1] == 262_144 + 1024 * 4 + 4  # absmax, nested absmax, offset
    int8 = mm.block_cost(8, 8)
    assert int8["quant_meta"] == 4 * sum(p.out_features for p in s.projections())


def test_a_quantizer_map_prices_each_rung_with_its_quantizer():
    s = ModelShape.from_config(LLAMA3_8B)
    mm = MemoryModel(s, {4: "nf4", 8: "int8"}, 128)
    plan = Plan.mapped((2, 4, 8, 16) * 8, (8,) * 32, mm.quantizers)
    hqq = MemoryModel(s, "hqq", 128)
    want = 8 * sum(c["total"] for c in (hqq.block_cost(2, 8), mm.block_cost(4, 8, "nf4"),
                                         mm.block_cost(8, 8, "int8"), hqq.block_cost(16, 8)))
    assert mm.plan_bytes(plan) == want
    assert hqq.plan_bytes(plan) == want  # a plan is priced by its own quantizers, whatever the map
    assert mm.block_cost(4, 8)["total"] < hqq.block_cost(4, 8)["total"]  # NF4: 4.13 bits, HQQ g128: 4.25
    budget = resolve_budget({"type": "uniform", "bits": 4, "rank": 8}, mm, Ladders((2, 3, 4, 8), (4, 8, 16)))
    assert budget.plan_bytes == mm.plan_bytes(Plan.uniform(32, 4, 8, "nf4")) and "(nf4)" in budget.description


def test_monotone_in_bits_and_rank():
    mm = MemoryModel(ModelShape.from_config(QWEN3_4B))
    costs = [mm.block_cost(b, 8)["total"] for b in (2, 3, 4, 8, 16)]
    assert costs == sorted(costs)
    assert mm.block_cost(4, 4)["total"] < mm.block_cost(4, 16)["total"]


def test_budgets():
    mm = MemoryModel(ModelShape.from_config(LLAMA3_8B))
    ladders = Ladders((2, 3, 4, 8), (4, 8, 16))
    b = resolve_budget({"type": "uniform", "bits": 4, "rank": 8}, mm, ladders)
    assert b.plan_bytes == mm.plan_bytes(Plan.uniform(32, 4, 8))
    assert b.fits(mm.plan_bytes(Plan.uniform(32, 4, 8)))
    assert not b.fits(mm.plan_bytes(Plan.uniform(32, 4, 16)))
    # a uniform budget may name its quantizer: uniform 4-bit HQQ instead of the map's NF4
    h = resolve_budget({"type": "uniform", "bits": 4, "rank": 8, "quantizer": "hqq"}, MemoryModel(mm.shape, "hqq"), ladders)
    n = resolve_budget({"type": "uniform", "bits": 4, "rank": 8, "quantizer": "nf4"}, MemoryModel(mm.shape, "hqq"), ladders)
    assert h.plan_bytes != n.plan_bytes and "(nf4)" in n.description
    assert n.plan_bytes == mm.plan_bytes(mm.uniform(4, 8, "nf4"))
    g = resolve_budget({"type": "gb", "value": 6.0}, mm, ladders)
    assert g.plan_bytes == pytest.approx(6e9 - mm.fixed_bytes)
    by = resolve_budget({"type": "bytes", "value": 6e9}, mm, ladders)
    assert by.plan_bytes == g.plan_bytes
    with pytest.raises(ConfigError, match="below the smallest possible plan"):
        resolve_budget({"type": "gb", "value": 3.0}, mm, ladders)  # fixed part alone is 2.1 GB
    with pytest.raises(ConfigError, match="below the smallest possible plan"):
        resolve_budget({"type": "uniform", "bits": 2, "rank": 4}, mm, Ladders((3, 4), (4,)))


def test_breakdown_and_from_path(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_4B))
    s = ModelShape.from_path(tmp_path)
    assert s == ModelShape.from_path(tmp_path / "config.json")
    mm = MemoryModel(s)
    bd = mm.breakdown(Plan.uniform(36, 4, 8))
    assert len(bd["blocks"]) == 36
    assert bd["total_bytes"] == bd["plan_bytes"] + bd["fixed_bytes"]
    assert bd["trainable_params"] == 36 * 57_344 * 8
    with pytest.raises(PlanError, match="35 blocks, the model has 36"):
        mm.breakdown(Plan.uniform(35, 4, 8))


def test_between_budget_and_the_study_b3_bytes():
    """The committed study's b3 (105,551,676 bytes) is exactly 'halfway between uniform 2- and 4-bit' on
    SmolLM2, the budget config/study.yaml now names as such."""
    import yaml

    from autoqra.config import REPO_ROOT

    study = yaml.safe_load((REPO_ROOT / "config/study.yaml").read_text())
    space = study["search_space"]
    mm = MemoryModel(ModelShape.from_config(SMOLLM2_135M), space["quantizers"], space["group_size"], space["hqq_axis"])
    ladders = Ladders(tuple(space["bits"]), tuple(space["ranks"]))
    lo, hi = (resolve_budget({"type": "uniform", "bits": b, "rank": 8}, mm, ladders).plan_bytes for b in (2, 4))
    assert (lo, hi) == (38_062_080, 59_654_520) and mm.fixed_bytes == 56_693_376
    half = resolve_budget({"type": "between", "low_bits": 2, "high_bits": 4, "rank": 8}, mm, ladders)
    assert half.plan_bytes == (lo + hi) / 2 == resolve_budget(study["study"]["budgets"]["b3"], mm, ladders).plan_bytes
    assert resolve_budget({"type": "bytes", "value": 105_551_676}, mm, ladders).plan_bytes == half.plan_bytes
    assert half.description == "0.5 of the way from uniform 2-bit (hqq) to uniform 4-bit (nf4) at rank 8"
    quarter = resolve_budget({"type": "between", "low_bits": 2, "high_bits": 4, "fraction": 0.25}, mm, ladders)
    assert quarter.plan_bytes == lo + (hi - lo) / 4
    with pytest.raises(ConfigError, match="low_bits < high_bits"):
        resolve_budget({"type": "between", "low_bits": 4, "high_bits": 2}, mm, ladders)
