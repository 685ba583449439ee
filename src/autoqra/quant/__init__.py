"""Quantized LoRA models from a plan: backends (hqq, bnb, none), the quantized-block cache,
``build(plan)`` with verification, and adapter export/loading."""

from autoqra.quant.build import BaseModel, BuiltModel, build, verify
from autoqra.quant.cache import QuantCache, base_id
from autoqra.quant.export import load, save_adapter

__all__ = ["BaseModel", "BuiltModel", "QuantCache", "base_id", "build", "load", "save_adapter", "verify"]
