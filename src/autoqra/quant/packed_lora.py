"""peft's LoRA around :class:`~autoqra.quant.packed.PackedLinear`.

peft 0.21 dispatches HQQ by ``isinstance(base, HQQLinear)``; a PackedLinear is not one, so it is
registered as a custom module (``LoraConfig._register_custom_module``, see :func:`register`), which
peft's dispatcher tries first. This module imports peft: import it lazily.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from peft.tuners.lora.layer import LoraLayer
from peft.tuners.tuners_utils import check_adapters_to_merge

from autoqra.quant.packed import PackedLinear, packed_state


class PackedLoraLinear(torch.nn.Module, LoraLayer):
    """LoRA on a frozen packed layer: ``base(x) + B(A(dropout(x))) * scaling``.

    ``merge`` dequantizes the packed weight (float32), adds the LoRA delta and re-quantizes the sum
    with HQQ at the layer's bits, group size, axis and metadata precision, so a merged model keeps the
    plan's storage (and memory); the merge is therefore lossy by one re-quantization, as peft's own
    HQQ merge is. ``unmerge`` subtracts the delta the same way. For an exact dense weight use
    :func:`autoqra.quant.backends.dequantized_weight` on the base layer plus :meth:`get_delta_weight`.
    """

    def __init__(self, base_layer: torch.nn.Module, adapter_name: str, config: Any, r: int = 0,
                 lora_alpha: int = 1, **kwargs: Any) -> None:
        if config.lora_bias:
            raise ValueError(f"{type(self).__name__} does not support lora_bias")
        if config.use_dora:
            raise ValueError(f"{type(self).__name__} does not support DoRA")
        super().__init__()
        LoraLayer.__init__(self, base_layer)
        self.fan_in_fan_out = False
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, r, lora_alpha=lora_alpha, config=config)

    def _get_in_out_features(self, module: torch.nn.Module) -> tuple[int, int]:
        return module.in_features, module.out_features

    def get_delta_weight(self, adapter: str) -> torch.Tensor:
        """The dense (out, in) LoRA update ``B @ A * scaling``."""
        return (self.lora_B[adapter].weight @ self.lora_A[adapter].weight) * self.scaling[adapter]

    def _requantized(self, w: torch.Tensor) -> PackedLinear:
        old = self.get_base_layer()
        state = packed_state(w, old.bits, old.group_size, old.axis, old.meta_bits)
        new = PackedLinear(state, device=old.W_q.device, compute_dtype=old.compute_dtype)
        new.bias = old.bias
        return new

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        """Dequantize, add the active adapters' deltas, re-quantize (see the class docstring)."""
        adapter_names = check_adapters_to_merge(self, adapter_names)
        for name in adapter_names:
            if name not in self.lora_A:
                continue
            w = self.get_base_layer().dequantize(torch.float32) + self.get_delta_weight(name).float()
            if safe_merge and not torch.isfinite(w).all():
                raise ValueError(f"NaNs in the merged weights of adapter {name}")
            self.base_layer = self._requantized(w)
            self.merged_adapters.append(name)

    def unmerge(self) -> None:
        if not self.merged:
            warnings.warn("Already unmerged. Nothing to do.", stacklevel=2)
            return
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            if name in self.lora_A:
                w = self.get_base_layer().dequantize(torch.float32) - self.get_delta_weight(name).float()
                self.base_layer = self._requantized(w)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self._check_forward_args(x, *args, **kwargs)
        if kwargs.pop("adapter_names", None) is not None:
            raise ValueError(f"{type(self).__name__} does not support mixed-adapter batches")
        if self.disable_adapters and self.merged:
            self.unmerge()
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters or self.merged:
            return result
        for name in self.active_adapters:
            if name not in self.lora_A:
                continue
            lora_a, lora_b = self.lora_A[name], self.lora_B[name]
            xa = self._cast_input_dtype(x, lora_a.weight.dtype)
            delta = lora_b(lora_a(self.lora_dropout[name](xa))) * self.scaling[name]
            result = result + delta.to(result.dtype)
        return result

    def __repr__(self) -> str:
        return "lora." + super().__repr__()


def register(config: Any) -> Any:
    """Let peft wrap PackedLinear layers with :class:`PackedLoraLinear` under ``config`` (a LoraConfig)."""
    config._register_custom_module({PackedLinear: PackedLoraLinear})
    return config
