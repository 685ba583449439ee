"""Quantized LoRA models from plans, on the micro model: bits, quantizers and ranks land where the
plan says, the cache returns identical tensors, the memory model is exact for every quantizer,
adapters export and load back."""

import pytest
import torch

from autoqra.errors import PlanError
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import PROJECTIONS, Plan, projection_module
from autoqra.quant import BaseModel, QuantCache, build, load, save_adapter, verify
from autoqra.quant.backends import layer_bits, layer_hqq_axis, layer_quantizer

MIXED = {2: "hqq", 3: "hqq", 4: "nf4", 8: "int8"}



@pytest.fixture(scope="module")
def base(micro_model_dir):
    d = micro_model_dir
    return BaseModel(d)


def _module(built, block, proj):
    return built.model.get_base_model().get_submodule(projection_module(block, proj))


@pytest.mark.parametrize("plan", [
    Plan((2, 3, 4, 8), (4, 8, 16, 8), group_size=32),
    Plan((16, 4, 16, 2), (16, 4, 8, 4), group_size=64),
    Plan((4, 8, 16, 4), (8, 8, 4, 16), ("nf4", "int8", "none", "nf4"), group_size=64),
    Plan.mapped((2, 4, 8, 3), (4, 8, 16, 8), MIXED, group_size=32, hqq_axis=1),
    Plan.uniform(4, 16, 8, "none"),
])
def test_bits_and_ranks_land_where_the_plan_says(base, tmp_path, plan):
    built = build(base.model_dir, plan, cache_dir=tmp_path, base=base)
    for block, (bits, rank, q) in enumerate(zip(plan.bits, plan.ranks, plan.quantizers, strict=True)):
        for proj in PROJECTIONS:
            mod = _module(built, block, proj)
            assert layer_bits(mod.get_base_layer()) == bits
            assert layer_quantizer(mod.get_base_layer()) == q
            assert layer_hqq_axis(mod.get_base_layer()) == (plan.hqq_axis if q == "hqq" else None)
            assert mod.r["default"] == rank and mod.lora_A["default"].weight.shape[0] == rank
            assert mod.scaling["default"] == pytest.approx(2.0)  # alpha = 2r
    expected_trainable = sum(r * 1216 for r in plan.ranks)  # micro: Σ(in+out) = 1216 per unit rank
    assert built.info["trainable_params"] == expected_trainable
    trainable = [n for n, p in built.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    ids = torch.randint(0, 500, (2, 12))
    out = built.model(input_ids=ids, labels=ids)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for n, p in built.model.named_parameters() if "lora_B" in n)


def test_cache_hit_returns_identical_weights_and_skips_quantization(base, tmp_path):
    plan = Plan((2, 3, 4, 8), (8, 8, 8, 8), group_size=32)
    first = build(base.model_dir, plan, cache_dir=tmp_path, base=base)
    assert first.info["cache_misses"] == 28 and first.info["cache_hits"] == 0
    second = build(base.model_dir, plan, cache_dir=tmp_path, base=base)
    assert second.info["cache_misses"] == 0 and second.info["cache_hits"] == 28
    for block in range(4):
        a = _module(first, block, "down_proj").get_base_layer()
        b = _module(second, block, "down_proj").get_base_layer()
        assert torch.equal(a.W_q, b.W_q) and torch.equal(a.dequantize(), b.dequantize())
    # a different base model gets its own cache namespace
    assert QuantCache(tmp_path, "other").path("hqq", 32, 0, 4, 0, "q_proj") != \
        QuantCache(tmp_path, base.base_id).path("hqq", 32, 0, 4, 0, "q_proj")
    # the quantizer, and for HQQ the group size and axis, are part of the key; bnb ignores both
    cache = QuantCache(tmp_path, base.base_id)
    paths = {cache.path(q, g, a, 4, 0, "q_proj") for q in ("hqq", "nf4") for g in (32, 64) for a in (0, 1)}
    assert len(paths) == 4 + 1
    # HQQ's metadata precision is part of the key too (format v2: exactly packed codes)
    assert cache.path("hqq", 32, 0, 4, 0, "q_proj", 8) != cache.path("hqq", 32, 0, 4, 0, "q_proj", 16)
    assert "-m8-b4-v2" in str(cache.path("hqq", 32, 0, 4, 0, "q_proj", 8))


def test_quantization_error_decreases_with_bits(base, tmp_path):
    dense = base.dense_weight(1, "gate_proj")
    errs = []
    for bits in (2, 3, 4, 8):
        built = build(base.model_dir, Plan.uniform(4, bits, 4, group_size=32), cache_dir=tmp_path, base=base)
        w = _module(built, 1, "gate_proj").get_base_layer().dequantize()
        errs.append((w.float() - dense).pow(2).mean().item())
    assert errs == sorted(errs, reverse=True) and errs[-1] < errs[0] / 100


def test_builds_do_not_touch_the_shared_base(base, tmp_path):
    before = {n: p.clone() for n, p in base.model.named_parameters() if not p.is_meta}
    built = build(base.model_dir, Plan.uniform(4, 16, 8, "none"), cache_dir=tmp_path, base=base)
    opt = torch.optim.SGD([p for p in built.model.parameters() if p.requires_grad], lr=1.0)
    ids = torch.randint(0, 500, (2, 12))
    built.model(input_ids=ids, labels=ids).loss.backward()
    opt.step()
    assert all(torch.equal(p, before[n]) for n, p in base.model.named_parameters() if not p.is_meta)


def test_verify_fails_loudly_on_mismatch(base, tmp_path):
    plan = Plan((4, 4, 4, 4), (8, 8, 8, 8), group_size=32)
    built = build(base.model_dir, plan, cache_dir=tmp_path, base=base)
    with pytest.raises(PlanError, match=r"model.layers.2.self_attn.q_proj: 4-bit, plan says 8"):
        verify(built.model, plan.replace(bits=[4, 4, 8, 4]), 2.0)
    with pytest.raises(PlanError, match=r"rank 8, plan says 16"):
        verify(built.model, plan.replace(ranks=[8, 16, 8, 8]), 2.0)
    with pytest.raises(PlanError, match=r"layers.1.mlp.up_proj: quantizer hqq, plan says nf4"):
        verify(built.model, plan.replace(quantizers=["hqq", "nf4", "hqq", "hqq"]), 2.0)
    with pytest.raises(PlanError, match=r"HQQ axis 0, plan says 1"):
        verify(built.model, plan.replace(hqq_axis=1), 2.0)
    with pytest.raises(PlanError, match=r"HQQ metadata in 16 bits, plan says 8"):
        verify(built.model, plan.replace(meta_bits=8), 2.0)


def test_plan_errors_before_work(base, tmp_path):
    with pytest.raises(PlanError, match="plan has 3 blocks, the model has 4"):
        build(base.model_dir, Plan.uniform(3, 4, 8), cache_dir=tmp_path, base=base)
    with pytest.raises(PlanError, match="quantizer 'none' cannot store 4-bit"):
        build(base.model_dir, Plan((4, 16, 16, 16), (8,) * 4, ("none",) * 4), cache_dir=tmp_path, base=base)
    assert not (tmp_path / "quant").exists()


@pytest.mark.parametrize("quantizer,bits,axis", [("hqq", b, a) for b in (2, 3, 4, 8) for a in (0, 1)]
                         + [("nf4", 4, 0), ("int8", 8, 0), ("none", 16, 0)])
def test_memory_model_is_exact_for_each_quantizer(base, tmp_path, quantizer, bits, axis):
    """Stored bytes (packed weights + quantization metadata) of the built model vs the memory model."""
    plan = Plan.uniform(4, bits, 8, quantizer, group_size=32, hqq_axis=axis)
    built = build(base.model_dir, plan, cache_dir=tmp_path, base=base)
    stored = built.info["stored_bytes_by_quantizer"][quantizer]
    cost = MemoryModel.for_plan(ModelShape.from_path(base.model_dir), plan).block_cost(bits, 8, quantizer)
    predicted = 4 * (cost["weights"] + cost["quant_meta"])
    if quantizer == "none":  # M(C) charges 16 bits; the CPU model keeps its dense weights in float32
        predicted *= base.dtype.itemsize / 2
    assert stored["weights"] + stored["quant_meta"] == pytest.approx(predicted, rel=0.01)
    assert stored["quant_meta"] == pytest.approx(4 * cost["quant_meta"], rel=0.01)


@pytest.mark.parametrize("plan", [Plan((2, 8, 16, 4), (4, 16, 8, 8), group_size=32),
                                  Plan.mapped((2, 8, 16, 4), (4, 16, 8, 8), MIXED, group_size=32, hqq_axis=1),
                                  Plan((3, 3, 8, 2), (8, 4, 4, 16), group_size=32, meta_bits=8)],  # packed 3-bit
                         ids=["hqq", "mixed-axis1", "hqq3-meta8"])
def test_export_and_load_round_trip(base, tmp_path, plan):
    built = build(base.model_dir, plan, cache_dir=tmp_path, base=base, seed=3)
    with torch.no_grad():  # make the adapter non-trivial (B starts at zero)
        for n, p in built.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    built.model.eval()
    ids = torch.randint(0, 500, (1, 10))
    with torch.no_grad():
        want = built.model(input_ids=ids).logits
    out = save_adapter(built, tmp_path / "adapter")
    assert (out / "adapter_model.safetensors").is_file() and (out / "plan.json").is_file()
    loaded = load(base, out / "plan.json", out, cache_dir=tmp_path)
    with torch.no_grad():
        got = loaded.model(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-5)
    with pytest.raises(PlanError, match="trained for plan"):
        load(base, plan.replace(ranks=[4, 4, 4, 4]), out, cache_dir=tmp_path)
    assert Plan.load(out / "plan.json") == plan  # the plan file round-trips with its quantizers
    with pytest.raises(PlanError, match="trained for plan"):
        load(base, plan.replace(hqq_axis=1 - plan.hqq_axis), out, cache_dir=tmp_path)
