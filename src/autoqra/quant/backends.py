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
            w = self.weight
            scb = w.SCB if w.SCB is not None else self.state.SCB
            return _Int8WeightOnlyMatmul.apply(x, w.data, scb, self.bias)

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


LAYER_QUANTIZERS = {"PackedLinear": "hqq", "HQQLinear": "hqq", "Linear4bit": "nf4", "Linear8bitLt": "int8",
                    "Int8WeightOnlyLinear": "int8"}


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
    if name in ("Linear8bitLt", "Int8WeightOnlyLinear"):
        return 8
    if isinstance(layer, torch.nn.Linear):
        return 16
    raise TypeError(f"unexpected base layer type {name}")


def stored_bytes(layer: torch.nn.Module) -> dict[str, Any]:
    """Bytes a projection's weights really occupy: packed weights and quantization metadata."""
    name = type(layer).__name__
    if name == "PackedLinear":
        return layer.stored_bytes()
    if name == "HQQLinear":
        w = layer.W_q.numel() * layer.W_q.element_size()
        m = sum(layer.meta[k].numel() * 2 for k in ("scale", "zero"))  # stored in 16 bit
        return {"weights": w, "quant_meta": m}
    if name == "Linear4bit":
        qs = layer.weight.quant_state  # per-block constants; the 16- and 256-entry code tables are shared
        meta = sum(t.numel() * t.element_size() for t in (qs.absmax, qs.state2.absmax, qs.offset)
                   if isinstance(t, torch.Tensor))
        return {"weights": layer.weight.numel() * layer.weight.element_size(), "quant_meta": meta}
    if name in ("Linear8bitLt", "Int8WeightOnlyLinear"):
        scb = layer.weight.SCB if layer.weight.SCB is not None else layer.state.SCB
        return {"weights": layer.weight.numel(), "quant_meta": scb.numel() * 4}
    return {"weights": layer.weight.numel() * layer.weight.element_size(), "quant_meta": 0}


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

            w = bnb.functional.dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        elif name in ("Linear8bitLt", "Int8WeightOnlyLinear"):
            scb = layer.weight.SCB if layer.weight.SCB is not None else layer.state.SCB
            w = int8_dequantize(layer.weight.data, scb, torch.float32)
        elif isinstance(layer, torch.nn.Linear):
            w = layer.weight
        else:
            raise TypeError(f"unexpected base layer type {name}")
    return w.detach().to(dtype)
