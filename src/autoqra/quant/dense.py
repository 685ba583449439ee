"""A dense copy of a fine-tuned quantized LoRA model, for scoring.

Every LoRA-wrapped projection becomes a plain ``nn.Linear`` whose weight is the base layer's
dequantized weight plus the merged adapter (``W_deq + scaling·B·A``). Up to float rounding this is
the function the quantized PeftModel computes (packed HQQ, NF4 and the weight-only int8 layer all
dequantize and then multiply), but it runs as ordinary dense matmuls: no per-forward
dequantization, no adapter branch. The base weights come from
:func:`autoqra.quant.backends.dequantized_weight`, the one place that knows every layer type
(tests/unit/test_dense.py states the tolerance per quantizer).
The dense copy is for evaluation only: it costs fp32 memory for every projection.
"""

from __future__ import annotations

from typing import Any

import torch

from autoqra.quant.backends import dequantized_weight


def _merged_linear(lora_layer: Any, dtype: torch.dtype) -> torch.nn.Linear:
    base = lora_layer.get_base_layer()
    w = dequantized_weight(base, dtype)
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
