"""AutoQRA: joint mixed-precision quantization and LoRA-rank search for efficient LLM fine-tuning.

Importing the package is cheap (no torch); heavy modules are imported where used.
"""

from autoqra.errors import AutoQRAError, ConfigError, DatasetError, ModelError, PlanError

__version__ = "0.1.0"

__all__ = ["AutoQRAError", "ConfigError", "DatasetError", "ModelError", "PlanError", "__version__"]
