"""Exactly packed HQQ codes (autoqra.quant.packed): packing round trip, bit-identity with HQQ's own
layer, 8-bit metadata, LoRA gradients through peft, merge, bf16 compute, and the memory model
against the bytes really stored for every rung, group size, metadata precision and quantizer."""

import math

import pytest
import torch
from hqq.core.quantize import BaseQuantizeConfig, HQQLinear

from autoqra.memory import ModelShape, hqq_meta_bytes, weight_bytes
from autoqra.plan import PROJECTIONS, Plan, projection_module
from autoqra.quant import BaseModel, build, save_adapter
from autoqra.quant.backends import dequantized_weight, make_layer, quantize, stored_bytes
from autoqra.quant.packed import (
    PackedLinear,
    pack_codes,
    packed_nbytes,
    packed_state,
    unpack_codes,
    with_meta_bits,
)


@pytest.fixture(scope="module")
def base(micro_model_dir):
    d = micro_model_dir
    return BaseModel(d, keep_dense=True)  # the tests read the dense projections


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("n", [1, 8, 1003])
def test_pack_round_trip_pads_at_most_one_word(bits, n):
    codes = torch.randint(0, 1 << bits, (n,), generator=torch.Generator().manual_seed(n), dtype=torch.uint8)
    packed = pack_codes(codes, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_nbytes(n, bits)
    assert packed.numel() == {2: math.ceil(n / 4), 3: 3 * math.ceil(n / 8), 4: math.ceil(n / 2), 8: n}[bits]
    assert torch.equal(unpack_codes(packed, bits, n), codes)
    with pytest.raises(ValueError, match="outside"):
        pack_codes(torch.tensor([1 << bits]), bits)


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("axis", [0, 1])
def test_same_codes_and_weights_as_hqq(bits, axis):
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(bits))
    lin = torch.nn.Linear(64, 48, bias=False)
    lin.weight.data.copy_(w)
    ref = HQQLinear(lin, BaseQuantizeConfig(nbits=bits, group_size=32, axis=axis), compute_dtype=torch.float32,
                    device="cpu", del_orig=False)
    for k in ("scale", "zero"):  # what the memory model charges: fp16 metadata
        ref.meta[k] = ref.meta[k].half()
    layer = PackedLinear(packed_state(w, bits, 32, axis))
    n = w.numel()
    hqq_codes = ref.unpack(dtype=torch.float32)[: (32 if axis == 0 else n // 32)].reshape(-1)
    assert torch.equal(unpack_codes(layer.W_q, bits, n).float(), hqq_codes)
    assert torch.equal(layer.dequantize(), ref.dequantize())
    x = torch.randn(3, 64)
    assert torch.equal(layer(x), ref(x))
    assert layer.W_q.numel() == n * bits // 8  # 3-bit: 8 codes in 3 bytes, no padding here


@pytest.mark.parametrize("bits", [2, 3])
def test_8bit_metadata_keeps_codes_and_error(bits):
    w = torch.randn(64, 320, generator=torch.Generator().manual_seed(0)) * 0.02  # 320 groups: 2 metadata blocks
    s16 = packed_state(w, bits, 64, 0)
    s8 = with_meta_bits(s16, 8)
    assert torch.equal(s8["W_q"], s16["W_q"]) and s8["scale_q"].dtype == torch.uint8
    assert stored_bytes(PackedLinear(s8))["quant_meta"] == 320 * 2 + 2 * 8 == hqq_meta_bytes(320, 8)
    mse16 = (PackedLinear(s16).dequantize() - w).pow(2).mean()
    mse8 = (PackedLinear(s8).dequantize() - w).pow(2).mean()
    assert mse8 / mse16 < 1.01
    assert torch.equal(PackedLinear(packed_state(w, bits, 64, 0, meta_bits=8)).dequantize(),
                       PackedLinear(s8).dequantize())


def test_bf16_compute_matches_fp32_reference():
    """Metadata is dequantized in float32 and only the weight is cast (issue #24 item 4)."""
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1)) * 0.05
    for mb in (16, 8):
        layer = PackedLinear(packed_state(w, 8, 64, 0, meta_bits=mb))
        ref = layer.dequantize(torch.float32)
        got = layer.dequantize(torch.bfloat16)
        assert got.dtype == torch.bfloat16
        assert torch.equal(got, ref.to(torch.bfloat16))  # one rounding, at the end
        x = torch.randn(4, 128)
        assert torch.allclose(layer(x.bfloat16()).float(), layer(x), rtol=0.02, atol=0.02)


def _peft(layer: torch.nn.Module, r: int = 4):
    from peft import LoraConfig, get_peft_model

    from autoqra.quant.packed_lora import register

    net = torch.nn.Sequential()
    net.add_module("proj", layer)
    net.register_parameter("frozen", torch.nn.Parameter(torch.zeros(1), requires_grad=False))  # peft needs one
    return get_peft_model(net, register(LoraConfig(r=r, lora_alpha=2 * r, target_modules=["proj"])))


def test_lora_gradients_flow_through_a_packed_layer():
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(2))
    layer = PackedLinear(packed_state(w, 3, 32, 0))
    model = _peft(layer)
    wrapped = model.base_model.model.proj
    assert type(wrapped).__name__ == "PackedLoraLinear" and wrapped.get_base_layer() is layer
    with torch.no_grad():
        wrapped.lora_B["default"].weight.normal_(0, 0.1)
    x = torch.randn(5, 64, requires_grad=True)
    model(x).pow(2).sum().backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    # the same computation with the dense dequantized weight gives the same gradients
    dense = layer.dequantize().clone()
    a, b = (wrapped.lora_A["default"].weight.detach().clone().requires_grad_(),
            wrapped.lora_B["default"].weight.detach().clone().requires_grad_())
    x2 = x.detach().clone().requires_grad_()
    (x2 @ dense.T + (x2 @ a.T) @ b.T * 2.0).pow(2).sum().backward()
    assert torch.allclose(x.grad, x2.grad, atol=1e-4)
    assert torch.allclose(wrapped.lora_A["default"].weight.grad, a.grad, atol=1e-4)
    assert torch.allclose(wrapped.lora_B["default"].weight.grad, b.grad, atol=1e-4)


def test_merge_requantizes_at_the_same_storage():
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(3)) * 0.05
    layer = PackedLinear(packed_state(w, 4, 32, 0, meta_bits=8))
    model = _peft(layer)
    with torch.no_grad():
        model.base_model.model.proj.lora_B["default"].weight.normal_(0, 0.01)
    x = torch.randn(6, 64)
    with torch.no_grad():
        want = model(x)
        merged = model.merge_and_unload()
        got = merged(x)
    assert isinstance(merged.proj, PackedLinear) and merged.proj.meta_bits == 8 and merged.proj.bits == 4
    assert stored_bytes(merged.proj) == stored_bytes(layer)
    assert (got - want).abs().max() < 0.1 * want.abs().max()  # one 4-bit re-quantization


def test_dequantized_weight_covers_every_quantizer():
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(4)) * 0.05
    for q, bits in (("hqq", 3), ("nf4", 4), ("int8", 8)):
        layer = make_layer(quantize(w, q, bits, 64, 0), q, bits, "cpu", torch.float32)
        d = dequantized_weight(layer)
        assert d.shape == w.shape and d.dtype == torch.float32
        x = torch.randn(2, 128)
        with torch.no_grad():
            assert torch.allclose(layer(x), x @ d.T, atol=2e-2 if q == "int8" else 1e-4)
        rel = float((d - w).pow(2).mean() / w.pow(2).mean())  # relative weight MSE of the rung
        assert rel < {"hqq": 0.06, "nf4": 0.02, "int8": 1e-3}[q], (q, rel)
    dense = torch.nn.Linear(128, 64)
    assert torch.equal(dequantized_weight(dense), dense.weight)


CASES = ([("hqq", b, g, m) for b in (2, 3, 4, 8) for g in (32, 64, 128) for m in (16, 8)]
         + [("nf4", 4, 64, 16), ("int8", 8, 64, 16), ("none", 16, 64, 16)])


@pytest.mark.parametrize("quantizer,bits,group,meta_bits", CASES)
def test_memory_model_equals_stored_bytes(base, quantizer, bits, group, meta_bits):
    """0 bytes off, projection by projection, for every rung, group size, metadata precision and quantizer."""
    shape = ModelShape.from_path(base.model_dir)
    for proj, ps in zip(PROJECTIONS, shape.projections(), strict=True):
        dense = base.model.get_submodule(projection_module(0, proj))
        if quantizer == "none":
            stored = stored_bytes(dense)
            assert stored["weights"] == ps.numel * dense.weight.element_size()
            assert weight_bytes(ps, 16, "none", group) == (2.0 * ps.numel, 0.0)  # charged at 16 bit
            continue
        state = quantize(dense.weight.detach(), quantizer, bits, group, 0, meta_bits)
        stored = stored_bytes(make_layer(state, quantizer, bits, "cpu", torch.float32))
        want = weight_bytes(ps, bits, quantizer, group, 0, meta_bits)
        assert (stored["weights"], stored["quant_meta"]) == want, proj


def test_a_packed_3bit_rung_builds_and_shares_codes_across_metadata(base, tmp_path):
    """The build puts PackedLinear at the plan's bits and metadata (the save/load round trip of this
    plan is test_quant.py::test_export_and_load_round_trip[hqq3-meta8])."""
    plan = Plan((3, 3, 8, 2), (8, 4, 4, 16), group_size=32, meta_bits=8)
    built = build(base.model_dir, plan, cache_dir=tmp_path, base=base, seed=5)
    layer = built.model.get_base_model().get_submodule(projection_module(0, "q_proj")).get_base_layer()
    assert isinstance(layer, PackedLinear) and (layer.bits, layer.meta_bits) == (3, 8)
    out = save_adapter(built, tmp_path / "adapter")
    assert Plan.load(out / "plan.json") == plan and Plan.load(out / "plan.json").meta_bits == 8
    # 8-bit metadata reused the 16-bit entry's codes: one HQQ run per projection, two cache entries
    again = build(base.model_dir, plan.replace(meta_bits=16), cache_dir=tmp_path, base=base)
    assert again.info["cache_misses"] == 0
