"""Adapter export in standard peft format (plus the plan) and ``load(base, plan, adapter)``,
which rebuilds the quantized model from the cache and loads the trained adapter."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from autoqra.errors import PlanError
from autoqra.io import atomic_dir, atomic_write_json
from autoqra.manifest import write_manifest
from autoqra.plan import Plan
from autoqra.quant.build import BaseModel, BuiltModel, build


def save_adapter(built: BuiltModel, out_dir: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``adapter_model.safetensors`` + ``adapter_config.json`` (peft) and ``plan.json``."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:  # out only ever holds a complete adapter
        built.model.save_pretrained(str(tmp))
        _canonical_adapter_config(tmp / "adapter_config.json")
        built.plan.save(tmp / "plan.json")
        write_manifest(tmp / "manifest.json", "adapter", seed=None,
                       extra={"plan_hash": built.plan.hash, "build": built.info, **(extra or {})})
    return out


def _canonical_adapter_config(path: Path) -> None:
    """peft keeps target_modules as a set and writes it in hash order, which differs between
    processes: sort it so that the same training gives the same file."""
    cfg = json.loads(path.read_text())
    if isinstance(cfg.get("target_modules"), list):
        cfg["target_modules"] = sorted(cfg["target_modules"])
    atomic_write_json(path, cfg)


def load(base: str | os.PathLike | BaseModel, plan: Plan | str | os.PathLike, adapter: str | os.PathLike,
         *, cache_dir: str | os.PathLike, device: str | None = None) -> BuiltModel:
    """Rebuild the plan's quantized model and load the adapter's trained weights (eval mode)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    source = "plan" if isinstance(plan, Plan) else str(plan)
    plan = plan if isinstance(plan, Plan) else Plan.load(plan)
    adapter = Path(adapter)
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise PlanError(f"{adapter}: no adapter_model.safetensors (expected a peft adapter directory)")
    base_obj = base if isinstance(base, BaseModel) else BaseModel(base, device=device)
    plan.check(n_blocks=base_obj.n_blocks, source=source)  # the model's shape first: the clearer message
    stored_plan = adapter / "plan.json"
    if stored_plan.is_file() and Plan.load(stored_plan).hash != plan.hash:
        raise PlanError(f"{adapter}: adapter was trained for plan {Plan.load(stored_plan).hash}, not {plan.hash}")
    alpha = _alpha_per_rank(adapter)
    built = build(base_obj.model_dir, plan, cache_dir=cache_dir, lora_dropout=0.0, alpha_per_rank=alpha,
                  base=base_obj)
    state = load_file(str(weights), device=base_obj.device)
    result = set_peft_model_state_dict(built.model, state)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    missing = [k for k in getattr(result, "missing_keys", []) or [] if "lora_" in k]
    if unexpected or missing:
        raise PlanError(f"{adapter}: adapter does not fit the plan (missing {missing[:3]}, unexpected {unexpected[:3]})")
    built.model.eval()
    return built


def _alpha_per_rank(adapter: Path) -> Any:
    import json

    cfg = json.loads((adapter / "adapter_config.json").read_text())
    return cfg["lora_alpha"] / cfg["r"]
