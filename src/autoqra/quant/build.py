"""``build(plan) → PeftModel``: a base model whose projections carry the plan's bits (from the
quantized-block cache) and LoRA adapters with the plan's ranks, verified module by module.

peft silently ignores a ``rank_pattern`` key that matches nothing, so after building we check
every projection's stored bit-width, rank and scaling against the plan and fail loudly.
"""

from __future__ import annotations

import copy
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from autoqra.errors import PlanError
from autoqra.plan import PROJECTIONS, Plan, projection_module
from autoqra.quant.backends import (
    layer_bits,
    layer_hqq_axis,
    layer_meta_bits,
    layer_quantizer,
    make_layer,
    quantize,
    stored_bytes,
)
from autoqra.quant.cache import QuantCache, base_id


class BaseModel:
    """A base model loaded once (frozen) and shared by every build of a process."""

    def __init__(self, model_dir: str | os.PathLike, device: str | None = None, dtype: Any = None):
        from autoqra.models import load_model

        self.model_dir = Path(model_dir)
        self.model, self.tokenizer = load_model(model_dir, dtype=dtype, device=device)
        self.model.requires_grad_(False)
        self.device = str(next(self.model.parameters()).device)
        self.dtype = next(self.model.parameters()).dtype
        self.base_id = base_id(model_dir)
        self.n_blocks = int(self.model.config.num_hidden_layers)


@dataclass
class BuiltModel:
    model: Any  # peft.PeftModel
    tokenizer: Any
    plan: Plan
    info: dict = field(default_factory=dict)


def _lora_config(plan: Plan, alpha_per_rank: float, dropout: float):
    from peft import LoraConfig

    from autoqra.quant.packed_lora import register

    r0 = plan.ranks[0]
    return register(LoraConfig(r=r0, lora_alpha=alpha_per_rank * r0, lora_dropout=dropout, bias="none",
                      target_modules=list(PROJECTIONS), rank_pattern=plan.rank_pattern(),
                      alpha_pattern=plan.alpha_pattern(alpha_per_rank), task_type="CAUSAL_LM"))


def quantize_base(base: BaseModel, plan: Plan, cache: QuantCache) -> Any:
    """A structural copy of the base model with every projection replaced per the plan.

    Frozen tensors are shared with the base (never modified: only adapters train), so a build
    costs the quantized layers, not a copy of the model.
    """
    memo = {id(t): t for t in [*base.model.parameters(), *base.model.buffers()]}
    model = copy.deepcopy(base.model, memo)
    compute, g, axis, mb = base.dtype, plan.group_size, plan.hqq_axis, plan.meta_bits
    for block, (bits, q) in enumerate(zip(plan.bits, plan.quantizers, strict=True)):
        if q == "none":
            continue
        for proj in PROJECTIONS:
            path = projection_module(block, proj)
            parent_path, name = path.rsplit(".", 1)
            dense = model.get_submodule(path)
            state = _cached_state(cache, dense.weight, q, g, axis, bits, block, proj, mb)
            layer = make_layer(state, q, bits, base.device, compute)
            if dense.bias is not None:
                layer.bias = dense.bias
            setattr(model.get_submodule(parent_path), name, layer)
    # peft/transformers consult these flags for k-bit (bitsandbytes) models
    if "nf4" in plan.quantizers:
        model.is_loaded_in_4bit = True
    if "int8" in plan.quantizers:
        model.is_loaded_in_8bit = True
    return model


def _cached_state(cache: QuantCache, weight: torch.Tensor, q: str, g: int, axis: int, bits: int, block: int,
                  proj: str, meta_bits: int) -> dict[str, torch.Tensor]:
    """The cached state of one projection; 8-bit HQQ metadata is derived from the 16-bit entry (same
    codes, so HQQ's optimiser runs once per (block, bits) whatever the metadata precision)."""
    from autoqra.quant.packed import with_meta_bits

    def make16():
        return quantize(weight.detach(), q, bits, g, axis)

    if q != "hqq" or meta_bits == 16:
        return cache.get_or_create(q, g, axis, bits, block, proj, make16)
    return cache.get_or_create(q, g, axis, bits, block, proj, meta_bits=meta_bits, make=lambda: with_meta_bits(
        cache.get_or_create(q, g, axis, bits, block, proj, make16), meta_bits))


def verify(model: Any, plan: Plan, alpha_per_rank: float) -> dict[str, Any]:
    """Check bits, quantizer (and HQQ axis), rank and LoRA scaling of every projection; PlanError on
    any mismatch. Returns the stored bytes per bit-width and per quantizer."""
    inner = model.get_base_model()
    wrong: list[str] = []
    by_bits: dict[int, dict[str, int]] = {}
    by_quantizer: dict[str, dict[str, int]] = {}
    for block, (bits, rank, q) in enumerate(zip(plan.bits, plan.ranks, plan.quantizers, strict=True)):
        for proj in PROJECTIONS:
            path = projection_module(block, proj)
            mod = inner.get_submodule(path)
            if not hasattr(mod, "lora_A") or "default" not in mod.lora_A:
                wrong.append(f"{path}: no LoRA adapter")
                continue
            base_layer = mod.get_base_layer()
            got_bits, got_rank = layer_bits(base_layer), mod.r["default"]
            scale = mod.scaling["default"]
            if got_bits != bits:
                wrong.append(f"{path}: {got_bits}-bit, plan says {bits}")
            if layer_quantizer(base_layer) != q:
                wrong.append(f"{path}: quantizer {layer_quantizer(base_layer)}, plan says {q}")
            elif q == "hqq" and layer_hqq_axis(base_layer) != plan.hqq_axis:
                wrong.append(f"{path}: HQQ axis {layer_hqq_axis(base_layer)}, plan says {plan.hqq_axis}")
            elif q == "hqq" and layer_meta_bits(base_layer) != plan.meta_bits:
                wrong.append(f"{path}: HQQ metadata in {layer_meta_bits(base_layer)} bits, plan says {plan.meta_bits}")
            if got_rank != rank or mod.lora_A["default"].out_features != rank:
                wrong.append(f"{path}: rank {got_rank}, plan says {rank}")
            if abs(scale - alpha_per_rank) > 1e-6:  # α = alpha_per_rank·r ⇒ scaling α/r is constant
                wrong.append(f"{path}: LoRA scaling {scale}, expected {alpha_per_rank}")
            sb = stored_bytes(base_layer)
            for acc in (by_bits.setdefault(bits, {"weights": 0, "quant_meta": 0, "params": 0}),
                        by_quantizer.setdefault(q, {"weights": 0, "quant_meta": 0, "params": 0})):
                acc["weights"] += sb["weights"]
                acc["quant_meta"] += sb["quant_meta"]
                acc["params"] += _numel(base_layer)
    if wrong:
        raise PlanError("built model does not match the plan:\n  " + "\n  ".join(wrong[:20])
                        + (f"\n  ... and {len(wrong) - 20} more" if len(wrong) > 20 else ""))
    return {"stored_bytes_by_bits": by_bits, "stored_bytes_by_quantizer": by_quantizer}


def _numel(layer: Any) -> int:
    if type(layer).__name__ == "PackedLinear":
        return layer.in_features * layer.out_features
    if type(layer).__name__ == "HQQLinear":
        return int(layer.meta["shape"][0] * layer.meta["shape"][1])
    return int(layer.in_features * layer.out_features)


def build(model_dir: str | os.PathLike, plan: Plan, *, cache_dir: str | os.PathLike,
          lora_dropout: float = 0.05, alpha_per_rank: float = 2.0, device: str | None = None,
          seed: int = 0, base: BaseModel | None = None) -> BuiltModel:
    """Quantize (from cache) and attach LoRA per ``plan``; the result is verified against the plan."""
    from peft import get_peft_model

    t0 = time.perf_counter()
    base = base or BaseModel(model_dir, device=device)
    plan.check(n_blocks=base.n_blocks)
    cache = QuantCache(cache_dir, base.base_id)
    model = quantize_base(base, plan, cache)
    t_quant = time.perf_counter() - t0
    torch.manual_seed(seed)  # LoRA A init
    peft_model = get_peft_model(model, _lora_config(plan, alpha_per_rank, lora_dropout))
    checks = verify(peft_model, plan, alpha_per_rank)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    info = {"base_id": base.base_id, "plan_hash": plan.hash, "device": base.device,
            "build_seconds": time.perf_counter() - t0, "quantize_seconds": t_quant,
            "cache_hits": cache.hits, "cache_misses": cache.misses, "trainable_params": trainable, **checks}
    return BuiltModel(peft_model, base.tokenizer, plan, info)
