"""prepare_model: provision the base model as a plain HF directory with a manifest, atomically."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoqra.errors import ModelError
from autoqra.io import atomic_dir, read_json
from autoqra.manifest import write_manifest
from autoqra.models.layout import count_block_params
from autoqra.models.micro import build_micro, micro_settings
from autoqra.models.sources import (
    check_local_dir,
    load_hub,
    load_local,
    load_smollm2_wheel,
    sha256_file,
    smollm2_gguf_path,
)

SOURCES = ("micro", "smollm2_wheel", "hub", "local")
DTYPES = ("float32", "bfloat16", "float16")
STAGE = "model_prepare"


def check_model_spec(spec: Mapping[str, Any]) -> None:
    """Validate a ``model`` config entry without loading anything; ModelError names the bad key."""
    if not isinstance(spec, Mapping):
        raise ModelError(f"model must be a mapping with key 'source', got {type(spec).__name__}")
    source = spec.get("source")
    if source not in SOURCES:
        raise ModelError(f"model.source: unknown value {source!r}; allowed: {', '.join(SOURCES)}")
    dtype = spec.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise ModelError(f"model.dtype: unknown value {dtype!r}; allowed: {', '.join(DTYPES)}")
    if source == "micro":
        micro_settings(spec.get("micro"))
    elif source == "smollm2_wheel":
        smollm2_gguf_path()
    elif source == "hub":
        model_id = spec.get("id")
        if not isinstance(model_id, str) or not model_id.strip():
            raise ModelError("model.id must be a non-empty hub id (e.g. 'Qwen/Qwen3-4B') when "
                             "model.source is 'hub'")
    else:
        check_local_dir(spec.get("id"))


def prepare_model(spec: Mapping[str, Any], out_dir: str | os.PathLike, seed: int) -> dict[str, Any]:
    """Write the base model of ``spec`` to ``out_dir`` (HF files + manifest.json) and return the manifest."""
    check_model_spec(spec)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    model, tokenizer, info = _load(spec, seed)
    # Everything goes into a hidden sibling first; out_dir only ever holds a complete model.
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        extra = _describe(model, tmp, info, source=spec["source"])
        extra["build_seconds"] = round(time.perf_counter() - started, 3)
        inputs = {"gguf": info["gguf_file"]} if "gguf_file" in info else {}
        write_manifest(tmp / "manifest.json", STAGE, config=dict(spec), seed=seed, inputs=inputs,
                       extra=extra)
    return read_json(out_dir / "manifest.json")


def _load(spec: Mapping[str, Any], seed: int) -> tuple[Any, Any, dict[str, Any]]:
    source = spec["source"]
    dtype = spec.get("dtype") or "float32"
    if source == "micro":
        from autoqra.data.synthetic import tokenizer_corpus

        model, tokenizer = build_micro(spec.get("micro"), seed, tokenizer_corpus(seed))
        return model, tokenizer, {"id": None, "revision": None,
                                  "micro": micro_settings(spec.get("micro"))}
    if source == "smollm2_wheel":
        return load_smollm2_wheel()
    if source == "hub":
        return load_hub(spec["id"], spec.get("revision"), dtype)
    return load_local(spec["id"], dtype)


def _describe(model: Any, saved: Path, info: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Manifest fields: provenance, checksums, architecture and the parameter counts per block."""
    cfg = model.config
    counts = count_block_params(model)
    n_params = sum(p.numel() for p in model.parameters())
    if counts["total"] != n_params:  # a layout we misread would silently skew the memory model
        raise ModelError(f"parameter accounting mismatch: {counts['total']} counted vs {n_params} in model")
    tokenizer_json = saved / "tokenizer.json"
    return {
        "source": source,
        **dict(info),
        "weights_sha256": {p.name: sha256_file(p) for p in sorted(saved.glob("*.safetensors"))},
        "tokenizer_sha256": sha256_file(tokenizer_json) if tokenizer_json.is_file() else None,
        "architecture": (getattr(cfg, "architectures", None) or [type(model).__name__])[0],
        "model_type": cfg.model_type,
        "num_layers": int(cfg.num_hidden_layers),
        "hidden_size": int(cfg.hidden_size),
        "intermediate_size": int(cfg.intermediate_size),
        "num_attention_heads": int(cfg.num_attention_heads),
        "num_key_value_heads": int(getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads),
        "vocab_size": int(cfg.vocab_size),
        "tie_word_embeddings": bool(getattr(cfg, "tie_word_embeddings", False)),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
        "total_params": counts["total"],
        "projection_params": counts["projections_total"],
        "fixed_params": counts["fixed"],
        "blocks": counts["blocks"],
    }


