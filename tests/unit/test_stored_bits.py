"""Stored bits per weight (incl. quantization metadata) that Tables 1 and 3 print beside nominal bits."""

from __future__ import annotations

import pytest

from autoqra.finetune import stored_bits_per_weight
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import Plan

SMOLLM2 = {"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 576, "intermediate_size": 1536,
           "num_attention_heads": 9, "num_key_value_heads": 3, "vocab_size": 49152, "tie_word_embeddings": True}


def test_stored_bits_count_metadata_not_nominal_bits():
    shape = ModelShape.from_config(SMOLLM2)
    mm = MemoryModel(shape, {4: "nf4", 8: "int8"}, group_size=64, hqq_axis=0)
    # HQQ 2/4-bit at group 64: bits + one fp16 scale and zero per 64 weights
    assert stored_bits_per_weight(mm, Plan.uniform(4, 2, 8, "hqq", 64, 0)) == pytest.approx(2.5)
    assert stored_bits_per_weight(mm, Plan.uniform(4, 4, 8, "hqq", 64, 0)) == pytest.approx(4.5)
    assert 4.12 < stored_bits_per_weight(mm, Plan.uniform(4, 4, 8, "nf4", 64, 0)) < 4.13  # 8-bit absmax per 64 + DQ
    assert 8.04 < stored_bits_per_weight(mm, Plan.uniform(4, 8, 8, "int8", 64, 0)) < 8.05  # fp32 scale per row
    assert stored_bits_per_weight(mm, Plan.uniform(4, 16, 8, "none", 64, 0)) == 16.0
    # 3-bit codes packed exactly (8 in 3 bytes); 8-bit scale/zero + an fp16 offset/step per 256 groups
    assert stored_bits_per_weight(mm, Plan.uniform(4, 3, 8, "hqq", 64, 0)) == pytest.approx(3.5)
    m8 = MemoryModel(shape, {4: "nf4"}, group_size=64, hqq_axis=0, meta_bits=8)
    plan8 = Plan.uniform(4, 3, 8, "hqq", 64, 0, meta_bits=8)
    assert 3.25 < stored_bits_per_weight(m8, plan8) < 3.26
    assert stored_bits_per_weight(MemoryModel.for_plan(shape, plan8), plan8) == stored_bits_per_weight(m8, plan8)
    # weighted by parameters (equal blocks here), whatever the ranks
    mixed = Plan.mapped([2, 2, 16, 16], [4, 16, 8, 8], {16: "none"}, 64, 0)
    assert stored_bits_per_weight(mm, mixed) == pytest.approx((2.5 + 16) / 2)
