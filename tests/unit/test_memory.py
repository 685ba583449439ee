"""Memory model checked against numbers computed by hand from the published configs."""

import json

import pytest

from autoqra.errors import ConfigError, PlanError
from autoqra.memory import MemoryModel, ModelShape, resolve_budget
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


def test_qwen3_4b_mixed_plan_bytes():
    mm = MemoryModel(ModelShape.from_config(QWEN3_4B), "hqq", 128)
    bits = [2, 3, 4, 8] * 9
    ranks = [4, 8, 16] * 12
    W, L, G = 100_925_440, 57_344, 100_925_440 / 128 * 4
    per_bits = {2: W * 2 / 8, 3: W * 3.2 / 8, 4: W * 4 / 8, 8: W * 8 / 8}  # 3-bit packs 10 per int32
    expect = sum(per_bits[b] + G + L * r * 2 for b, r in zip(bits, ranks, strict=True))
    assert mm.plan_bytes(Plan(tuple(bits), tuple(ranks))) == pytest.approx(expect, rel=1e-12)


def test_16bit_blocks_carry_no_quant_metadata_and_qwen2_biases():
    s = ModelShape.from_config({**QWEN3_4B, "model_type": "qwen2", "num_hidden_layers": 2})
    assert s.attention_bias and s.fixed_params["biases"] == 2 * (4096 + 1024 + 1024)
    mm = MemoryModel(s, "hqq", 128)
    assert mm.block_cost(16, 4)["quant_meta"] == 0
    assert mm.block_cost(16, 4)["weights"] == 2 * s.block_weight_params


def test_bnb_nf4_and_int8_bytes():
    s = ModelShape.from_config(LLAMA3_8B)
    mm = MemoryModel(s, "bnb", 64)
    nf4 = mm.block_cost(4, 8)
    assert nf4["weights"] == s.block_weight_params / 2
    # one 8-bit absmax per 64 weights + fp32 second-level constants: ~0.127 bits/weight
    assert 0.12 < nf4["quant_meta"] * 8 / s.block_weight_params < 0.135
    int8 = mm.block_cost(8, 8)
    assert int8["quant_meta"] == 4 * sum(p.out_features for p in s.projections())


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
