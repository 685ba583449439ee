"""Model shapes for the forecast: the real config where it can be read offline (micro, the SmolLM2
wheel, a local directory, a cached hub id, a prepared ``results/models/<name>/hf``), else a small
table of public configs of the paper's hub models. No download, ever."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoqra.errors import ConfigError, ModelError
from autoqra.memory import ModelShape

# From the models' public config.json files (hidden, intermediate, layers, heads, kv heads, head dim, vocab).
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "meta-llama/Meta-Llama-3-8B": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336,
                                   "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
                                   "head_dim": 128, "vocab_size": 128256, "tie_word_embeddings": False},
    "meta-llama/Llama-3.2-1B": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
                                "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8,
                                "head_dim": 64, "vocab_size": 128256, "tie_word_embeddings": True},
    "Qwen/Qwen3-4B": {"model_type": "qwen3", "hidden_size": 2560, "intermediate_size": 9728,
                      "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                      "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True},
    "Qwen/Qwen3-1.7B": {"model_type": "qwen3", "hidden_size": 2048, "intermediate_size": 6144,
                        "num_hidden_layers": 28, "num_attention_heads": 16, "num_key_value_heads": 8,
                        "head_dim": 128, "vocab_size": 151936, "tie_word_embeddings": True},
}
KNOWN_SHAPES["meta-llama/Llama-3.1-8B"] = KNOWN_SHAPES["meta-llama/Meta-Llama-3-8B"]
KNOWN_SHAPES["meta-llama/Meta-Llama-3.1-8B"] = KNOWN_SHAPES["meta-llama/Meta-Llama-3-8B"]
KNOWN_SHAPES["meta-llama/Llama-3.2-1B-Instruct"] = KNOWN_SHAPES["meta-llama/Llama-3.2-1B"]


def model_shape(name: str, spec: Mapping[str, Any], workdir: str | Path = ".") -> tuple[ModelShape, str]:
    """(shape, where it came from) of config model ``name``; ConfigError naming ``models.<name>``."""
    key = f"models.{name}"
    prepared = Path(workdir) / "results" / "models" / name / "hf" / "config.json"
    if prepared.is_file():
        return ModelShape.from_path(prepared), str(prepared)
    cfg = None
    try:
        from autoqra.models.peek import peek_config

        cfg = peek_config(spec)
    except ModelError:
        cfg = None  # a hub id not in the local cache: the table below, else the error
    if cfg is not None:
        return ModelShape.from_config(cfg, source=key), f"{spec['source']} model config"
    mid = spec.get("id")
    if mid in KNOWN_SHAPES:
        return ModelShape.from_config(KNOWN_SHAPES[mid], source=key), f"autoqra.forecast.shapes table ({mid} public config.json)"
    raise ConfigError(f"config key '{key}.id': the shape of {mid!r} is unknown offline (not in the local Hugging "
                      f"Face cache, not prepared under results/models/{name}, not in the table of "
                      f"{sorted(KNOWN_SHAPES)}); download its config once (`hf download {mid} config.json`) "
                      f"or run `snakemake --until prefetch` first")


def total_params(shape: ModelShape) -> int:
    """All parameters (blocks' projections, embeddings, lm_head, norms, biases)."""
    return shape.n_blocks * shape.block_weight_params + sum(shape.fixed_params.values())


def compute_params(shape: ModelShape) -> int:
    """Parameters a token's forward multiplies by (N in 2·N FLOPs/token): the projections and the
    lm_head (tied or not); the embedding lookup costs no FLOPs."""
    return shape.n_blocks * shape.block_weight_params + shape.vocab_size * shape.hidden_size
