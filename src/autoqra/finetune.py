"""Final fine-tuning of one method's plan (rule finetune): build the quantized LoRA model, train it
at the final fidelity (paper: the full training set for one epoch), save the adapter in peft format
and a record of what it cost, memory in three plainly different senses:

- ``memory_analytic_bytes``: the paper's M(C) (projections as stored + LoRA charged at 2 bytes);
- ``memory_measured_bytes``: the bytes the built model's projections (weights + quantization
  metadata) and LoRA adapters (at their real dtype, float32) really hold;
- ``peak_train_bytes``: the training peak (CUDA: max allocated; CPU: held tensors + saved
  activations), beside ``peak_train_predicted_bytes`` from :func:`autoqra.train_memory.predict_training_peak`.

Also trainable parameters, time, throughput and the learning-rate schedule.
"""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path
from typing import Any

from autoqra.io import atomic_write_json, read_json
from autoqra.manifest import build_manifest
from autoqra.memory import MemoryModel, ModelShape
from autoqra.plan import Plan
from autoqra.train import Fidelity, TrainSettings
from autoqra.train_memory import predict_training_peak


def plan_stats(plan: Plan) -> dict[str, float]:
    """Average bits (parameter-weighted is the memory model's job; this is the per-block mean) and rank."""
    return {"avg_bits": sum(plan.bits) / len(plan.bits), "avg_rank": sum(plan.ranks) / len(plan.ranks)}


def stored_bits_per_weight(mm: MemoryModel, plan: Plan) -> float:
    """Bits per weight the plan's block projections store, metadata included, from the memory model
    (8 x (packed weights + quantization metadata) / weights; 16 for dense blocks): what the tables
    print beside the plan's nominal average bits."""
    parts = mm.breakdown(plan)["plan_parts"]
    return 8.0 * (parts["weights"] + parts["quant_meta"]) / (plan.n_blocks * mm.shape.block_weight_params)


def measured_plan_bytes(built: Any) -> dict[str, int]:
    """Bytes the plan-controlled part really occupies in the built model: stored (packed) projection
    weights + quantization metadata (from ``verify``) + LoRA adapter tensors at their real dtype."""
    by_bits = built.info["stored_bytes_by_bits"]
    weights = sum(v["weights"] for v in by_bits.values())
    meta = sum(v["quant_meta"] for v in by_bits.values())
    lora = sum(p.numel() * p.element_size() for n, p in built.model.named_parameters() if "lora_" in n)
    return {"weights": int(weights), "quant_meta": int(meta), "lora": int(lora), "total": int(weights + meta + lora)}


def finetune(model_dir: str | os.PathLike, data_dir: str | os.PathLike, plan: Plan, *,
             cache_dir: str | os.PathLike, fidelity: Fidelity, train: TrainSettings, seed: int,
             out_dir: str | os.PathLike, method: str, lora_dropout: float = 0.05, alpha_per_rank: float = 2.0,
             device: str | None = None, manifest_config: dict | None = None, untrained: bool = False) -> dict[str, Any]:
    """Train ``plan`` for ``fidelity``; write ``out_dir/adapter`` (peft) and return the record.

    ``untrained``: no training at all (the untuned-base reference): the adapter is saved as
    initialised (LoRA B = 0, so the model computes exactly what the base model computes)."""
    import torch

    from autoqra.data import load_split
    from autoqra.quant import BaseModel, build, save_adapter
    from autoqra.train import tokenize_records, train_lora

    t0 = time.perf_counter()
    base = BaseModel(model_dir, device=device)
    records = load_split(data_dir, "train")
    built = build(model_dir, plan, cache_dir=cache_dir, lora_dropout=lora_dropout, alpha_per_rank=alpha_per_rank,
                  device=device, seed=seed, base=base)
    examples = tokenize_records(built.tokenizer, records, train.max_seq_len)
    if untrained:
        from autoqra.train import TrainResult

        n_trainable = sum(p.numel() for p in built.model.parameters() if p.requires_grad)
        res = TrainResult(steps=0, train_seconds=0.0, tokens=0, tokens_per_s=0.0, loss_history=[],
                          final_loss=float("nan"), peak_memory_bytes=0, device=built.info["device"],
                          trainable_params=n_trainable, n_examples=0)
    else:
        res = train_lora(built.model, built.tokenizer, examples, fidelity, train, seed)
    shape = ModelShape.from_path(model_dir)
    mm = MemoryModel.for_plan(shape, plan)
    analytic = mm.plan_bytes(plan)
    measured = measured_plan_bytes(built)
    on_cuda = res.device.startswith("cuda")
    predicted = None if untrained else predict_training_peak(
        shape, plan, **res.extra["widest_batch"], lora_dropout=lora_dropout > 0, dense_bytes=base.dtype.itemsize,
        act_bytes=2 if on_cuda else base.dtype.itemsize, grad_checkpointing=train.grad_checkpointing)
    extra = res.extra  # empty for the untrained reference: no peak, no schedule
    record = {
        "method": method, "seed": seed, "plan_hash": plan.hash, "plan": plan.to_dict(), **plan_stats(plan),
        "bits_per_weight_stored": stored_bits_per_weight(mm, plan),
        "quantizers": plan.quantizer_label, "memory_analytic_bytes": analytic, "fixed_bytes": mm.fixed_bytes,
        "memory_analytic_total_bytes": analytic + mm.fixed_bytes, "memory_measured_bytes": measured["total"],
        "memory_measured": measured, "peak_train_bytes": res.peak_memory_bytes,
        "peak_train_predicted_bytes": predicted and predicted["total"], "peak_train_predicted": predicted,
        "peak_train_measured": {"held_tensors": extra.get("held_tensor_bytes"),
                                "saved_activations": extra.get("saved_activation_bytes")},
        "peak_kind": "cuda_max_allocated" if on_cuda else "cpu_held_tensors+saved_activations",
        "lr_schedule": extra.get("lr_schedule"), "warmup_steps": extra.get("warmup_steps"),
        "lr_history": extra.get("lr_history"),
        "compute_dtype": str(base.dtype).removeprefix("torch."), "trainable_params": res.trainable_params,
        "train_seconds": res.train_seconds, "tokens_per_s": res.tokens_per_s, "tokens": res.tokens,
        "steps": res.steps, "n_examples": res.n_examples, "final_loss": res.final_loss,
        "loss_history": res.loss_history, "device": res.device, "build_seconds": built.info["build_seconds"],
        "fidelity": None if untrained else fidelity.key(), "train_settings": train.key(), "untrained": untrained,
    }
    adapter = save_adapter(built, Path(out_dir) / "adapter", extra={"method": method, "seed": seed})
    record["adapter"] = str(adapter)
    record["wall_seconds"] = time.perf_counter() - t0
    atomic_write_json(Path(out_dir) / "train.json",
                      {**record, "manifest": build_manifest("finetune", manifest_config, seed)})
    del built
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return record


def run_code_sha() -> str:
    """Identity of the package code that can change a run (:func:`autoqra.manifest.code_sha` over every
    module but report/ and forecast/, which only read results): a changed training loop, quantizer or
    scorer never reuses a stored run."""
    from autoqra.manifest import code_sha

    pkg = Path(__file__).resolve().parent
    parts = sorted(p.name for p in pkg.iterdir()
                   if p.suffix == ".py" or (p.is_dir() and p.name not in ("report", "forecast", "__pycache__")))
    return code_sha(*parts)


def run_environment(device: str | None = None) -> dict[str, Any]:
    """What a run's numbers depend on besides its inputs: device type, compute threads, library
    versions and the package's code (the shared-run key, :mod:`autoqra.runstore`)."""
    import torch

    from autoqra.models.layout import default_device
    from autoqra.runstore import library_versions

    return {"device": torch.device(device or default_device()).type, "threads": torch.get_num_threads(),
            "libraries": library_versions(), "code_sha": run_code_sha()}


def finetune_identity(model_dir: str | os.PathLike, data_dir: str | os.PathLike, plan: Plan, *, fidelity: Fidelity,
                      train: TrainSettings, seed: int, lora_dropout: float, alpha_per_rank: float,
                      device: str | None = None, untrained: bool = False) -> dict[str, Any]:
    """Everything the final fine-tuning's result depends on; its hash is the shared-run key."""
    from autoqra.models.sources import sha256_file
    from autoqra.quant.cache import base_sha

    return {"plan_hash": plan.hash, "seed": int(seed), "base_sha256": base_sha(model_dir),
            "train_sha256": sha256_file(Path(data_dir) / "train.jsonl"),
            "fidelity": None if untrained else fidelity.key(), "train_settings": train.key(),
            "lora_dropout": lora_dropout, "alpha_per_rank": alpha_per_rank, "untrained": bool(untrained),
            **run_environment(device)}


def finetune_shared(model_dir: str | os.PathLike, data_dir: str | os.PathLike, plan: Plan, *,
                    cache_dir: str | os.PathLike, out_dir: str | os.PathLike, method: str, seed: int,
                    fidelity: Fidelity, train: TrainSettings, lora_dropout: float = 0.05,
                    alpha_per_rank: float = 2.0, device: str | None = None, manifest_config: dict | None = None,
                    untrained: bool = False) -> dict[str, Any]:
    """:func:`finetune`, computed once per identical run (:mod:`autoqra.runstore`): a method whose plan
    another method already trained on this seed (same settings, data, base, device and code) gets a
    copy of that run's adapter and record, with ``shared_from`` naming the job that computed it.
    Returns the record this job wrote, with ``share`` (``shared``, ``key``, ``origin``, ``wait_seconds``)."""
    from autoqra.runstore import RunStore, retag_json

    out = Path(out_dir)
    identity = finetune_identity(model_dir, data_dir, plan, fidelity=fidelity, train=train, seed=seed,
                                 lora_dropout=lora_dropout, alpha_per_rank=alpha_per_rank, device=device,
                                 untrained=untrained)

    def produce() -> None:
        finetune(model_dir, data_dir, plan, cache_dir=cache_dir, fidelity=fidelity, train=train, seed=seed,
                 out_dir=out, method=method, lora_dropout=lora_dropout, alpha_per_rank=alpha_per_rank,
                 device=device, manifest_config=manifest_config, untrained=untrained)

    retag = retag_json({"method": method, "seed": int(seed)})

    def retag_run(name: str, path: Path, origin: dict) -> None:
        retag(name, path, origin)
        if name == "adapter":  # the adapter carries this job's plan file (same hash, this method's meta)
            plan.save(path / "plan.json")
        else:
            atomic_write_json(path, {**read_json(path), "plan": plan.to_dict(), "adapter": str(out / "adapter")})

    share = RunStore(cache_dir).run(
        "finetune", identity, {"adapter": out / "adapter", "train.json": out / "train.json"}, produce,
        origin={"method": method, "seed": int(seed), "out_dir": str(out), "plan_hash": plan.hash}, retag=retag_run)
    return {**read_json(out / "train.json"), "share": share}
