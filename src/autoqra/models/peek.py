"""Read a model's HF config cheaply, without loading weights, so that the budget can be checked
against the model's real shapes before any job runs."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoqra.errors import ModelError


def _gguf_config(path: Path) -> dict[str, Any]:
    """The decoder config stored in a llama-architecture GGUF's metadata."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(name: str):
        f = reader.fields.get(name)
        if f is None:
            raise ModelError(f"{path}: GGUF metadata lacks '{name}'")
        return f.contents()

    arch = field("general.architecture")
    cfg = {
        "model_type": "llama" if arch == "llama" else arch,
        "num_hidden_layers": int(field(f"{arch}.block_count")),
        "hidden_size": int(field(f"{arch}.embedding_length")),
        "intermediate_size": int(field(f"{arch}.feed_forward_length")),
        "num_attention_heads": int(field(f"{arch}.attention.head_count")),
        "num_key_value_heads": int(field(f"{arch}.attention.head_count_kv")),
        "vocab_size": len(field("tokenizer.ggml.tokens")),
    }
    # GGUF drops a tied lm_head: no output.weight tensor means the embeddings are shared.
    cfg["tie_word_embeddings"] = not any(t.name == "output.weight" for t in reader.tensors)
    return cfg


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def peek_config(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """HF config dict of the model ``spec`` describes, or None if it cannot be known offline."""
    source = spec["source"]
    if source == "micro":
        from autoqra.models.micro import micro_settings

        return {"model_type": "llama", **micro_settings(spec.get("micro"))}
    if source == "smollm2_wheel":
        from autoqra.models.sources import smollm2_gguf_path

        return _gguf_config(smollm2_gguf_path())
    if source == "local":
        cfg_file = Path(spec["id"]) / "config.json"
        try:
            return json.loads(cfg_file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise ModelError(f"{cfg_file}: cannot read the model config ({e})") from None
    if source == "hub":
        try:  # only a cached copy: no download at validation time
            from transformers import AutoConfig

            return AutoConfig.from_pretrained(spec["id"], revision=spec.get("revision"),
                                              local_files_only=True).to_dict()
        except Exception:  # not cached: model_prepare downloads it, unless the hub is switched off
            if _hub_offline():
                raise ModelError(f"hub model {spec['id']!r} is not in the local Hugging Face cache and "
                                 "HF_HUB_OFFLINE is set, so it cannot be downloaded; expected a cached model id "
                                 "(download it once with `hf download ID`) or source 'local' with a "
                                 "model directory") from None
            return None
    raise ModelError(f"source '{source}' unknown")
