"""Quantizers. Each turns a dense weight into a dict of tensors (what the cache stores) and a dict
of tensors back into a frozen layer that peft can wrap with LoRA.

- ``hqq``: HQQ 2/3/4/8-bit codes from HQQ's optimiser, group-wise along ``axis``, stored exactly packed
  with fp16 or 8-bit scale and zero (``meta_bits``) in a :class:`~autoqra.quant.packed.PackedLinear`;
- ``nf4``: bitsandbytes NF4 with double quantization (QLoRA), 4 bits;
- ``int8``: bitsandbytes int8 weights in LLM.int8's layout (int8 codes, one fp32 absmax per output row), 8 bits,
  computed weight-only: the codes are dequantized to the compute dtype for the matmul and the activations are
  not quantized (bitsandbytes' own ``Linear8bitLt`` forward quantizes them too: W8A8 at ``threshold=0``);
- ``none``: the dense layer is kept (16-bit blocks).

hqq and bitsandbytes are imported lazily so the package imports without them.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import torch


def hqq_quantize(weight: torch.Tensor, bits: int, group_size: int, axis: int,
                 meta_bits: int = 16) -> dict[str, torch.Tensor]:
    """HQQ-quantize a (out, in) weight on its device with HQQ's optimiser; the codes are stored
    exactly packed (:mod:`autoqra.quant.packed`), with ``meta_bits``-bit scale and zero."""
    from autoqra.memory import ProjectionShape, hqq_layout_error
    from autoqra.quant.packed import packed_state

    err = hqq_layout_error(ProjectionShape("weight", weight.shape[1], weight.shape[0]), bits, group_size, axis)
    if err:
        raise ValueError(err)
    return packed_state(weight, bits, group_size, axis, meta_bits)


def hqq_layer(state: dict[str, torch.Tensor], device: str, compute_dtype: torch.dtype) -> torch.nn.Module:
    """Rebuild a frozen :class:`~autoqra.quant.packed.PackedLinear` from a cached state."""
    from autoqra.quant.packed import PackedLinear

    return PackedLinear(state, device=device, compute_dtype=compute_dtype)


def bnb_quantize(weight: torch.Tensor, bits: int, blocksize: int = 64) -> dict[str, torch.Tensor]:
    """NF4 (bits=4, double-quantized) or int8 (bits=8) weights plus their statistics."""
    import bitsandbytes as bnb

    w = weight.detach().float().contiguous()
    if bits == 4:
        p = bnb.nn.Params4bit(data=w, requires_grad=False, quant_type="nf4", compress_statistics=True,
                              blocksize=blocksize).to(str(weight.device))
        stats = p.quant_state.as_dict(packed=True)
        out = {f"qs.{k}": v for k, v in stats.items()}
        out["weight"] = p.data
        out["shape"] = torch.tensor(list(weight.shape))
        return {k: v.detach().cpu().contiguous() for k, v in out.items()}
    if bits == 8:
        # Not Int8Params.to(): it quantizes only when the data moves from the CPU, so a weight already
        # on the GPU came back unquantized (SCB None). This is what it calls, on any device.
        codes, scb, _ = bnb.functional.int8_vectorwise_quant(w.to(torch.float16))
        return {"weight": codes.cpu().contiguous(), "SCB": scb.cpu().contiguous(),
                "shape": torch.tensor(list(weight.shape))}
    raise ValueError(f"bitsandbytes stores 4 (NF4) or 8 (int8) bits, not {bits}")


def bnb_layer(state: dict[str, torch.Tensor], bits: int, device: str, compute_dtype: torch.dtype) -> torch.nn.Module:
    """Rebuild a frozen bnb Linear4bit / Linear8bitLt from a cached state."""
    import bitsandbytes as bnb

    out_f, in_f = (int(x) for x in state["shape"].tolist())
    if bits == 4:
        stats = {k[3:]: v.clone() for k, v in state.items() if k.startswith("qs.")}
        layer = bnb.nn.Linear4bit(in_f, out_f, bias=False, compute_dtype=compute_dtype, quant_type="nf4",
                                  device="meta")
        layer.weight = bnb.nn.Params4bit.from_prequantized(data=state["weight"].clone(), quantized_stats=stats,
                                                            requires_grad=False, device=device)
        # bitsandbytes (0.50.2) repacks an NF4 weight in place at its first eval-mode forward on a CPU with
        # AVX512-BF16. The repacked layer passes no gradient to its input (LoRA training after an evaluation is
        # silently wrong) and bnb's inverse is lossy (absmax goes through bf16): a layer that may train never
        # enters it. Scoring-only processes may opt in with enable_cpu_inference_kernel.
        layer.support_avx512bf16_for_cpu = False
        return layer
    layer = int8_linear_class()(in_f, out_f, bias=False, has_fp16_weights=False, threshold=0.0, device="meta")
    w = bnb.nn.Int8Params(state["weight"].clone().to(device), requires_grad=False, has_fp16_weights=False)
    w.CB, w.SCB = w.data, state["SCB"].clone().to(device)
    layer.weight = w
    return layer


def int8_dequantize(codes: torch.Tensor, scb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The dense weight of int8 codes with per-row absmax ``scb`` (LLM.int8's ``codes·absmax/127``)."""
    return codes.to(dtype) * (scb.to(dtype) / 127.0).unsqueeze(1)


class _Int8WeightOnlyMatmul(torch.autograd.Function):
    """``x @ dequant(W).T + b`` that keeps only the int8 codes for backward (not a dense copy of W)."""

    @staticmethod
    def forward(ctx, x, codes, scb, bias):
        ctx.save_for_backward(codes, scb)
        ctx.x_dtype = x.dtype
        return torch.nn.functional.linear(x, int8_dequantize(codes, scb, x.dtype), bias)

    @staticmethod
    def backward(ctx, grad):
        codes, scb = ctx.saved_tensors
        grad_x = grad @ int8_dequantize(codes, scb, grad.dtype) if ctx.needs_input_grad[0] else None
        grad_b = grad.reshape(-1, grad.shape[-1]).sum(0) if ctx.needs_input_grad[3] else None
        return None if grad_x is None else grad_x.to(ctx.x_dtype), None, None, grad_b


@functools.cache
def int8_linear_class() -> type:
    """``Int8WeightOnlyLinear``: a bnb ``Linear8bitLt`` (so peft wraps it with its 8-bit LoRA layer)
    whose forward is weight-only on every device, in training and in evaluation alike; the codes and
    scales stay on ``weight`` (bnb's own forward moves them to ``state``)."""
    import bitsandbytes as bnb

    class Int8WeightOnlyLinear(bnb.nn.Linear8bitLt):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return _Int8WeightOnlyMatmul.apply(x, self.weight.data, int8_row_scales(self), self.bias)

    return Int8WeightOnlyLinear


def quantize(weight: torch.Tensor, quantizer: str, bits: int, group_size: int, axis: int,
             meta_bits: int = 16) -> dict[str, torch.Tensor]:
    """The stored state of ``weight`` quantized by ``quantizer`` at ``bits`` (``meta_bits``: HQQ's
    scale/zero precision)."""
    from autoqra.plan import check_quantizer

    check_quantizer(quantizer, bits, where="quantize")
    if quantizer == "hqq":
        return hqq_quantize(weight, bits, group_size, axis, meta_bits)
    if quantizer in ("nf4", "int8"):
        return bnb_quantize(weight, bits)
    raise ValueError(f"quantizer {quantizer!r} does not quantize")


def make_layer(state: dict[str, torch.Tensor], quantizer: str, bits: int, device: str,
               compute_dtype: torch.dtype) -> torch.nn.Module:
    if quantizer == "hqq":
        return hqq_layer(state, device, compute_dtype)
    return bnb_layer(state, bits, device, compute_dtype)


INT8_LAYERS = ("Linear8bitLt", "Int8WeightOnlyLinear")  # bnb's own and autoqra's weight-only subclass
LAYER_QUANTIZERS = {"PackedLinear": "hqq", "HQQLinear": "hqq", "Linear4bit": "nf4", **dict.fromkeys(INT8_LAYERS, "int8")}


def layer_quantizer(layer: torch.nn.Module) -> str:
    """The quantizer a layer's weights are stored with ("none" for dense layers)."""
    name = type(layer).__name__
    if name in LAYER_QUANTIZERS:
        return LAYER_QUANTIZERS[name]
    if isinstance(layer, torch.nn.Linear):
        return "none"
    raise TypeError(f"unexpected base layer type {name}")


def layer_hqq_axis(layer: torch.nn.Module) -> int | None:
    """The grouping axis of an HQQ layer (None for other layers)."""
    name = type(layer).__name__
    if name == "PackedLinear":
        return layer.axis
    return int(layer.meta["axis"]) if name == "HQQLinear" else None


def layer_meta_bits(layer: torch.nn.Module) -> int | None:
    """The scale/zero precision of an HQQ layer (None for other layers)."""
    name = type(layer).__name__
    if name == "PackedLinear":
        return layer.meta_bits
    return 16 if name == "HQQLinear" else None


def layer_bits(layer: torch.nn.Module) -> int:
    """The bit-width a layer really stores its weights in (16 for dense layers)."""
    name = type(layer).__name__
    if name == "PackedLinear":
        return layer.bits
    if name == "HQQLinear":
        return int(layer.meta["nbits"])
    if name == "Linear4bit":
        return 4
    if name in INT8_LAYERS:
        return 8
    if isinstance(layer, torch.nn.Linear):
        return 16
    raise TypeError(f"unexpected base layer type {name}")


def stored_bytes(layer: torch.nn.Module) -> dict[str, Any]:
    """Bytes a projection's weights really occupy in their stored format: packed weights and quantization
    metadata, whatever ran on the layer before (bnb's CPU repack and int8 forwards move its state)."""
    name = type(layer).__name__
    if name == "PackedLinear":
        return layer.stored_bytes()
    if name == "HQQLinear":
        w = layer.W_q.numel() * layer.W_q.element_size()
        m = sum(layer.meta[k].numel() * 2 for k in ("scale", "zero"))  # stored in 16 bit
        return {"weights": w, "quant_meta": m}
    if name == "Linear4bit":
        return _nf4_stored_bytes(layer.weight)
    if name in INT8_LAYERS:
        return {"weights": layer.weight.numel(), "quant_meta": int8_row_scales(layer).numel() * 4}
    return {"weights": layer.weight.numel() * layer.weight.element_size(), "quant_meta": 0}


def _nf4_stored_state(weight: Any) -> tuple[torch.Tensor, Any]:
    """(codes, QuantState) of an NF4 weight in the stored format; a weight bnb repacked for its CPU kernel is
    converted back by bnb's inverse on a copy (the layer is untouched)."""
    if not nf4_cpu_packed(weight):
        return weight.data, weight.quant_state
    from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse

    return _convert_weight_packed_for_cpu_inverse(weight.data.clone(), copy.copy(weight.quant_state))


def _nf4_stored_bytes(weight: Any) -> dict[str, int]:
    data, qs = _nf4_stored_state(weight)
    state2 = getattr(qs, "state2", None)  # bnb's QuantState raises AttributeError once state2 is gone
    # per-block constants; the 16- and 256-entry code tables are shared
    meta = sum(t.numel() * t.element_size() for t in (qs.absmax, getattr(state2, "absmax", None), qs.offset)
               if isinstance(t, torch.Tensor))
    return {"weights": data.numel() * data.element_size(), "quant_meta": meta}


def int8_row_scales(layer: torch.nn.Module) -> torch.Tensor:
    """A bnb Linear8bitLt's per-row scales: on the weight until its first forward, then in ``layer.state``."""
    scb = getattr(layer.weight, "SCB", None)
    scb = scb if scb is not None else getattr(getattr(layer, "state", None), "SCB", None)
    if scb is None:
        raise TypeError(f"{type(layer).__name__} holds no int8 row scales (SCB): is it quantized?")
    return scb


def nf4_cpu_packed(obj: Any) -> bool:
    """Whether a bnb Linear4bit (or its weight) is in bitsandbytes' CPU inference layout."""
    weight = getattr(obj, "weight", obj)
    return bool(getattr(getattr(weight, "quant_state", None), "packing_format_for_cpu", False))


def bnb_nf4_layers(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(name, layer) of every bitsandbytes Linear4bit in ``model`` (not peft's LoRA wrappers of the same name)."""
    return [(n, m) for n, m in model.named_modules()
            if type(m).__name__ == "Linear4bit" and type(m).__module__.startswith("bitsandbytes")]


def enable_cpu_inference_kernel(model: torch.nn.Module) -> int:
    """Scoring-only processes: let bitsandbytes repack this model's NF4 layers for its CPU inference kernel
    at their next eval-mode forward (where the CPU has AVX512-BF16). The model must never train afterwards:
    :func:`keep_training_layout` (called by ``train_lora``) refuses it. Returns the number of layers switched.

    Not used by the pipeline: on SmolLM2-135M (benchmarks/results/nf4_cpu_kernel_cpu.json, one thread) the
    kernel made batched scoring slower (0.70x validation loss, 0.79x general text) and only batch-1 greedy
    generation faster (2.2x), and it moves losses by +0.001-0.002 nats/token, differently on CPUs without it."""
    layers = [m for _, m in bnb_nf4_layers(model)]
    if layers:
        from bitsandbytes.functional import has_avx512bf16

        for m in layers:
            m.support_avx512bf16_for_cpu = bool(has_avx512bf16())
            m.autoqra_scoring_only = True
    return len(layers)


def keep_training_layout(model: torch.nn.Module) -> int:
    """Before training: keep every NF4 layer of ``model`` out of bitsandbytes' CPU inference layout from now on
    (layers built by autoqra already are; a bnb model from elsewhere is switched). ValueError if a layer is in that
    layout already or was prepared for scoring only: it passes no gradient to its input, and bnb's inverse
    conversion does not restore the stored weights (absmax went through bf16). Returns the layers switched."""
    layers = bnb_nf4_layers(model)
    bad = [n for n, m in layers if nf4_cpu_packed(m) or getattr(m, "autoqra_scoring_only", False)]
    if bad:
        raise ValueError(f"{len(bad)} NF4 layer(s) (first: {bad[0]}) are in bitsandbytes' CPU inference layout "
                         "(or prepared for it by enable_cpu_inference_kernel), which passes no gradient to the "
                         "layer's input: this model is for scoring only; build it again to train")
    switched = [m for _, m in layers if getattr(m, "support_avx512bf16_for_cpu", False)]
    for m in switched:
        m.support_avx512bf16_for_cpu = False
    return len(switched)


def dequantized_weight(layer: torch.nn.Module, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The dense (out, in) weight a frozen base layer computes with: packed HQQ, HQQLinear, NF4,
    int8 or dense (peft LoRA wrappers are unwrapped to their base layer; the adapter is not added)."""
    if hasattr(layer, "get_base_layer"):
        layer = layer.get_base_layer()
    name = type(layer).__name__
    with torch.no_grad():
        if name in ("PackedLinear", "HQQLinear"):
            w = layer.dequantize()
        elif name == "Linear4bit":
            import bitsandbytes as bnb

            w = bnb.functional.dequantize_4bit(*_nf4_stored_state(layer.weight))
        elif name in INT8_LAYERS:
            w = int8_dequantize(layer.weight.data, int8_row_scales(layer), torch.float32)
        elif isinstance(layer, torch.nn.Linear):
            w = layer.weight
        else:
            raise TypeError(f"dequantized_weight: no dequantizer for layer type {name} (expected packed HQQ, "
                            "HQQLinear, Linear4bit, Linear8bitLt/Int8WeightOnlyLinear or nn.Linear)")
    return w.detach().to(dtype)
