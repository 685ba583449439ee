"""Where the 7 quantized projections live in a Llama-style CausalLM, their sizes, and loading.

The memory model and the quantizer address blocks by these paths, so they are defined once here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from autoqra.errors import ModelError
from autoqra.plan import PROJECTIONS, projection_module

_BLOCK_PREFIX = re.compile(r"^model\.layers\.(\d+)\.")
# The projection layout is defined once, in autoqra.plan (plans address modules by these paths).
projection_path = projection_module


def num_blocks(model: Any) -> int:
    """Number of transformer blocks of a loaded CausalLM."""
    return int(model.config.num_hidden_layers)


def count_block_params(model: Any) -> dict[str, Any]:
    """Per-block projection weight counts and shapes, and the fixed (never quantized) parameter part.

    Projection counts are weight elements only: biases stay in 16 bit with the norms and embeddings,
    exactly as the memory model charges them.
    """
    proj_ids: set[int] = set()
    blocks: list[dict[str, Any]] = []
    for block in range(num_blocks(model)):
        counts: dict[str, int] = {}
        shapes: dict[str, list[int]] = {}
        for proj in PROJECTIONS:
            path = projection_path(block, proj)
            try:
                weight = model.get_submodule(path).weight
            except AttributeError as exc:
                raise ModelError(
                    f"model {type(model).__name__} has no module {path!r}; expected a Llama-style "
                    "layout (Llama, Qwen2, Qwen3, Mistral)") from exc
            proj_ids.add(id(weight))
            counts[proj] = int(weight.numel())
            shapes[proj] = [int(d) for d in weight.shape]  # [out_features, in_features]
        blocks.append({"block": block, **counts, "total": sum(counts.values()), "shapes": shapes})

    fixed = {"embeddings": 0, "lm_head": 0, "norms": 0, "biases": 0, "other": 0}
    # named_parameters() lists a tied lm_head once (as the embedding), so it is never double counted.
    for name, param in model.named_parameters():
        if id(param) in proj_ids:
            continue
        fixed[_fixed_kind(name)] += int(param.numel())
    fixed["total"] = sum(fixed.values())
    projections_total = sum(b["total"] for b in blocks)
    return {"blocks": blocks, "projections_total": projections_total, "fixed": fixed,
            "total": projections_total + fixed["total"]}


def _fixed_kind(name: str) -> str:
    if name.endswith(".bias"):
        return "biases"
    if "embed" in name:
        return "embeddings"
    if name.startswith("lm_head"):
        return "lm_head"
    if "norm" in name:
        return "norms"
    return "other"


def load_config(model_dir_or_config_json: str | os.PathLike) -> dict[str, Any]:
    """config.json of a prepared model as a dict (accepts the directory or the file)."""
    path = Path(model_dir_or_config_json)
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ModelError(f"model config not found: {path} (expected a model directory with config.json)")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def default_device() -> str:
    """'cuda' when a GPU is visible, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: Any, device: str) -> Any:
    """A torch dtype from a name or dtype; default float32 on CPU (bf16 matmul is slow there), bf16 on CUDA."""
    import torch

    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if isinstance(dtype, str):
        value = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(value, torch.dtype):
            raise ModelError(f"unknown dtype {dtype!r}; expected e.g. 'float32', 'bfloat16', 'float16'")
        return value
    return dtype


def load_model(model_dir: str | os.PathLike, dtype: Any = None, device: str | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) from a prepared model directory, in eval mode on ``device``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    load_config(model_dir)  # fails with a ModelError naming the path before transformers does
    device = device or default_device()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=resolve_dtype(dtype, device))
    model.to(device)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return model, tokenizer
