"""AutoQRA: joint mixed-precision quantization and LoRA-rank search for efficient LLM fine-tuning.

Importing the package is cheap (no torch); heavy modules are imported where used.
"""

from autoqra.errors import AutoQRAError, ConfigError, DatasetError, ModelError, PlanError

__version__ = "0.1.0"

__all__ = ["AutoQRAError", "ConfigError", "DatasetError", "ModelError", "PlanError", "__version__", "load"]


def __getattr__(name: str):
    """``autoqra.load(base, plan, adapter, cache_dir=...)``: rebuild a fine-tuned quantized model
    (imported lazily so ``import autoqra`` stays torch-free)."""
    if name == "load":
        from autoqra.quant.export import load

        return load
    raise AttributeError(f"module 'autoqra' has no attribute {name!r}")
