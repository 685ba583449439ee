"""A dense copy of a fine-tuned quantized LoRA model, for scoring.

Every LoRA-wrapped projection becomes a plain ``nn.Linear`` whose weight is the base layer's
dequantized weight plus the merged adapter (``W_deq + scaling·B·A``). Up to float rounding this is
the function the quantized PeftModel computes (HQQ and NF4 dequantize and then multiply anyway),
but it runs as ordinary dense matmuls: no per-forward dequantization, no adapter branch.
Exception: bitsandbytes int8 with ``threshold=0`` also rounds the *activations* to int8 in its own
forward; the dense copy does not, so an int8 block differs by that rounding (tests/unit/test_dense.py
states the tolerance per quantizer).

``dequantized_weight(layer)`` dispatches on the layer's class name through ``DEQUANTIZERS``; a new
quantized layer class is added there, or gets picked up by its own ``dequantize()`` method.
The dense copy is for evaluation only: it costs fp32 memory for every projection.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch


def _hqq(layer: Any) -> torch.Tensor:
    return layer.dequantize()


def _nf4(layer: Any) -> torch.Tensor:
    import bitsandbytes.functional as F

    w = layer.weight
    data, state = w.data, w.quant_state
    if getattr(state, "packing_format_for_cpu", False):  # bnb's CPU repack after an eval forward: undo a copy
        data, state = F._convert_weight_packed_for_cpu_inverse(data.clone(), copy.deepcopy(state))
    return F.dequantize_4bit(data, state, quant_type=state.quant_type)


def _int8(layer: Any) -> torch.Tensor:
    w = layer.weight
    scb = w.SCB if getattr(w, "SCB", None) is not None else layer.state.SCB
    return w.data.float() * (scb.float().view(-1, 1) / 127.0)


def _dense(layer: torch.nn.Linear) -> torch.Tensor:
    return layer.weight


DEQUANTIZERS: dict[str, Callable[[Any], torch.Tensor]] = {
    "HQQLinear": _hqq,
    "Linear4bit": _nf4,
    "Linear8bitLt": _int8,
}


def dequantized_weight(layer: torch.nn.Module) -> torch.Tensor:
    """The (out, in) weight a base layer stands for, dequantized (a dense layer's own weight)."""
    name = type(layer).__name__
    if name in DEQUANTIZERS:
        w = DEQUANTIZERS[name](layer)
    elif callable(getattr(layer, "dequantize", None)):
        w = layer.dequantize()
    elif isinstance(layer, torch.nn.Linear):
        w = _dense(layer)
    else:
        raise TypeError(f"dequantized_weight: no dequantizer for layer type {name}; add one to "
                        f"autoqra.quant.dense.DEQUANTIZERS or give the class a dequantize() method")
    return w.detach()


def _merged_linear(lora_layer: Any, dtype: torch.dtype) -> torch.nn.Linear:
    base = lora_layer.get_base_layer()
    w = dequantized_weight(base).to(dtype)
    out_f, in_f = w.shape
    for name in lora_layer.active_adapters:
        if name in lora_layer.lora_A:
            w = w + lora_layer.get_delta_weight(name).to(dtype)
    bias = getattr(base, "bias", None)
    lin = torch.nn.Linear(in_f, out_f, bias=bias is not None, device=w.device, dtype=dtype)
    with torch.no_grad():
        lin.weight.copy_(w)  # a new tensor: a 16-bit block's base weight is shared with the base model
        if bias is not None:
            lin.bias.copy_(bias.detach().to(dtype))
    lin.requires_grad_(False)
    return lin


@torch.no_grad()
def dense_model(peft_model: Any, dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The transformers model inside ``peft_model`` with every LoRA-wrapped layer replaced by a merged
    dense ``nn.Linear`` (in eval mode). ``peft_model`` is consumed: use it no more afterwards."""
    from peft.tuners.lora import LoraLayer

    model = peft_model.get_base_model()
    if dtype is None:
        dtype = next(p.dtype for p in model.parameters() if p.is_floating_point())
    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]
    if not targets:
        raise ValueError("dense_model: the model has no LoRA layers (expected a peft LoRA model)")
    for path, mod in targets:
        parent_path, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent_path), name, _merged_linear(mod, dtype))
    for flag in ("is_loaded_in_4bit", "is_loaded_in_8bit", "is_quantized"):
        if getattr(model, flag, False):
            setattr(model, flag, False)
    model.eval()
    return model
