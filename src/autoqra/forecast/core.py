"""``autoqra forecast``: device-hours, memory, disk and wall time of a config, before any job runs.

Per phase (autoqra.forecast.stages): seconds per job on the device (autoqra.forecast.devices),
peak device memory per job (the training-peak predictor, autoqra.train_memory, on the largest plan
the phase can train), host memory, disk. Wall time at N devices ≈ max(the long serial path with
each phase's jobs N at a time, device-hours / N).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from autoqra.errors import ConfigError
from autoqra.forecast.devices import DEFAULT_RESULTS_DIR as RESULTS_DIR
from autoqra.forecast.devices import DEVICE_NAMES, GB, Device, get_device, largest_device
from autoqra.forecast.shapes import compute_params, model_shape, total_params
from autoqra.forecast.stages import model_phases
from autoqra.forecast.work import Phase, seq_tokens

SAFETY_NOTE = "GPU peaks: predictor + 1 GB CUDA context, x1.10 allocator slack (assumed)"
HOST_OVERHEAD = {"cpu": 1.5 * GB, "gpu": 3.0 * GB}  # interpreter, torch, tokenizer, data (assumed)
BOOKKEEPING_S = 8.0  # a local propose/promote/select job between two phases (host CPU seconds, assumed)


@contextmanager
def _hub_lookup_allowed():
    """Validation peeks at cached hub configs only (local_files_only); HF_HUB_OFFLINE would turn an
    uncached id into an error before the forecast's table of shapes can answer."""
    old = os.environ.pop("HF_HUB_OFFLINE", None)
    try:
        yield
    finally:
        if old is not None:
            os.environ["HF_HUB_OFFLINE"] = old


def load_forecast_config(path: str | os.PathLike, base_dir: str | os.PathLike = ".") -> dict:
    from autoqra.config import load_config

    with _hub_lookup_allowed():
        return load_config(path, base_dir=base_dir)


def _plan_for(kind: str, cfg: Mapping, shape) -> Any:
    from autoqra.memory import space_memory_model

    space, bud = cfg["search_space"], cfg["budget"]
    mm = space_memory_model(shape, space)
    r_max = max(space["ranks"])
    if kind in ("16bit", "lm_eval") and any(m["plan"] == "uniform" and int(m["bits"]) == 16
                                            for m in cfg["methods"].values()):
        return mm.uniform(16, r_max, "none")
    if kind == "stage0":
        return mm.uniform(16, int(cfg["sensitivity"].get("r_max", 16)), "none")
    return mm.uniform(int(bud.get("bits", 4)), r_max)


def peak_bytes(phase: Phase, cfg: Mapping, shape, dev: Device) -> float:
    """Predicted peak device memory of one job of ``phase``."""
    from autoqra.train_memory import predict_training_peak

    plan = _plan_for(phase.plan, cfg, shape)
    nb = 4 if dev.kind == "cpu" else 2
    seq = int(cfg["data"]["max_seq_len"])
    if phase.plan == "stage0":
        s = cfg["sensitivity"]
        seq, batch, ckpt = min(seq, int(s.get("max_seq_len", 256))), int(s.get("batch_size", 4)), s.get("grad_checkpointing")
    else:
        batch = int(cfg["finetune"].get("batch_size", cfg["training"]["batch_size"]) if phase.rule == "finetune"
                    else cfg["training"]["batch_size"])
        ckpt = cfg["training"].get("grad_checkpointing", False)
    pred = predict_training_peak(shape, plan, batch_size=batch, seq_len=seq, logit_len=seq,
                                 lora_dropout=float(cfg["search_space"]["lora_dropout"]) > 0, dense_bytes=nb,
                                 act_bytes=nb, grad_checkpointing=bool(ckpt))
    peak = pred["total"]
    if phase.plan == "lm_eval":
        peak = pred["weights"] + pred["lora"] + 2 * 4.0 * int(cfg["lm_eval"]["batch_size"]) * 512 * shape.vocab_size
        if cfg["lm_eval"].get("shared_context", True):  # SharedContextLM's stored prompts (capped)
            peak += lm_eval_context_store(cfg, shape, nb)
    if phase.plan == "stage0":  # Stage 0's own analytic footprint (autoqra.sensitivity.footprint, CUDA overhead included)
        return stage0_peak(cfg, shape, dev)
    if dev.kind == "gpu":
        peak = (peak + 1 * GB) * 1.10
    return peak


def lm_eval_context_store(cfg: Mapping, shape, dtype_bytes: float) -> float:
    """Bytes of keys/values SharedContextLM keeps for the test prompts, bounded by data.max_seq_len
    tokens per prompt and by its cap (autoqra.lmeval.CONTEXT_STORE_BYTES)."""
    from autoqra.lmeval import CONTEXT_STORE_BYTES

    per_token = 2 * shape.n_blocks * shape.n_kv_heads * shape.head_dim * dtype_bytes
    tokens = int(cfg["data"]["n_test"]) * int(cfg["data"].get("max_seq_len") or 512)
    return min(float(CONTEXT_STORE_BYTES), per_token * tokens)


def stage0_peak(cfg: Mapping, shape, dev: Device) -> float:
    """Peak bytes of the sensitivity job, as Stage 0 itself estimates it before it starts."""
    from autoqra.plan import quantizer_map
    from autoqra.sensitivity.footprint import stage0_footprint
    from autoqra.sensitivity.settings import SensitivitySettings

    space = cfg["search_space"]
    s = SensitivitySettings(**cfg["sensitivity"], bits_ladder=tuple(space["bits"]),
                            max_seq_len=int(cfg["data"]["max_seq_len"]), alpha_per_rank=space["lora_alpha_per_rank"])
    q = quantizer_map(space["quantizers"])[s.resolved_low_bits]
    return float(stage0_footprint(shape, s, q, space["group_size"], "cuda" if dev.kind == "gpu" else "cpu",
                                  space["hqq_axis"])["peak_bytes"])


def _budget_quant_factor(cfg: Mapping, dev: Device) -> float:
    """Slowdown of the plans a search tries: the budget's own quantizer mix (uniform: its quantizer;
    between: its two rungs' quantizers, weighted as the budget is), else the ladder's mean."""
    qmap, bud = cfg["search_space"]["quantizers"], cfg["budget"]
    f = dev.quant_factor
    if bud["type"] == "uniform" and int(bud.get("bits", 16)) < 16:
        return f.get(bud.get("quantizer") or qmap[int(bud["bits"])], 1.0)
    if bud["type"] == "between":
        w = float(bud["fraction"])
        return (1 - w) * f.get(qmap[int(bud["low_bits"])], 1.0) + w * f.get(qmap[int(bud["high_bits"])], 1.0)
    qs = [qmap[b] for b in cfg["search_space"]["bits"] if int(b) < 16]
    return sum(f.get(q, 1.0) for q in qs) / max(1, len(qs))


def _quant_factor(cfg: Mapping, dev: Device, phase: Phase) -> float:
    """The slowdown of ``phase``'s layers vs 16-bit: 1 for lm-eval on the dense copy (lm_eval.dense),
    the budget's mix for the searches, the methods' mean for fine-tuning and the methods at HF."""
    if phase.plan == "lm_eval" and cfg["lm_eval"].get("dense", True):
        return 1.0
    search = _budget_quant_factor(cfg, dev)
    if phase.plan == "budget":
        return search
    qmap = cfg["search_space"]["quantizers"]
    per = []
    for m in cfg["methods"].values():
        if m["plan"] == "uniform":
            q = (m.get("quantizer") or qmap[int(m["bits"])]) if int(m["bits"]) < 16 else "none"
            per.append(dev.quant_factor.get(q, 1.0))
        elif m["plan"] != "base":
            per.append(search)
    return sum(per) / len(per) if per else 1.0


# A job's seconds are features x the device's constants: one feature per constant (job_seconds), so the
# calibration (benchmarks/forecast_calibrate.py --fit-runs) fits the very formula the forecast uses.
PART_OF = {"start_s": "start", "load_s_per_gb": "build", "quantize_s_per_gweight": "build",
           "step_overhead_s": "train", "train_flops": "train", "score_flops": "score"}
FEATURES = tuple(PART_OF)


def job_features(phase: Phase, cfg: Mapping, shape, dev: Device, model_dtype_bytes: float) -> dict[str, float]:
    """What one job of ``phase`` multiplies each device constant by (rates: FLOPs, divided by them):
    one start, one model load plus one per build (GB), weights quantized cold (1e9), optimizer steps x
    blocks, training FLOPs (6·N per token, 8·N with checkpointing) and scoring FLOPs (2·N), the last two
    x the phase's quantizer slowdown."""
    w, n = phase.work, compute_params(shape)
    qf = _quant_factor(cfg, dev, phase)
    gb = total_params(shape) * model_dtype_bytes / GB
    return {"start_s": 1.0, "load_s_per_gb": (1.0 + w.builds) * gb, "quantize_s_per_gweight": w.quantize_weights / 1e9,
            "step_overhead_s": w.steps * shape.n_blocks,
            "train_flops": w.train_tokens * (8.0 if w.checkpointing else 6.0) * n * qf,
            "score_flops": w.score_tokens * 2.0 * n * qf}


def job_seconds(phase: Phase, cfg: Mapping, shape, dev: Device, model_dtype_bytes: float) -> dict[str, float]:
    feats = job_features(phase, cfg, shape, dev, model_dtype_bytes)
    parts = {"start": 0.0, "build": 0.0, "train": 0.0, "score": 0.0}
    for k, x in feats.items():
        c = getattr(dev, k)
        parts[PART_OF[k]] += x / c if k.endswith("_flops") else x * c
    parts["total"] = sum(parts.values())
    return parts


def disk_bytes(cfg: Mapping, shape, n_evals: int, n_runs: int, dtype_bytes: float) -> dict[str, float]:
    from autoqra.memory import space_memory_model

    mm = space_memory_model(shape, cfg["search_space"])
    cache = sum(shape.n_blocks * (mm.block_cost(int(b), 0)["weights"] + mm.block_cost(int(b), 0)["quant_meta"])
                for b in set(cfg["search_space"]["bits"]) if int(b) < 16)
    spec_sources = {m["source"] for m in cfg["models"].values()}
    adapter = shape.lora_params_per_rank * max(cfg["search_space"]["ranks"]) * shape.n_blocks * 4.0
    return {"model": total_params(shape) * dtype_bytes,
            "hub_download": total_params(shape) * 2.0 if "hub" in spec_sources else 0.0,
            "quant_cache": cache, "adapters": n_runs * adapter,
            "records_and_logs": n_evals * 20e3 + n_runs * 2e6}


def forecast(cfg: Mapping, device: str | None = None, devices: int | None = None,
             workdir: str | os.PathLike = ".", config_name: str = "config",
             read_back: Mapping | None = None) -> dict[str, Any]:
    """The forecast of a validated config (see module doc) as a JSON-ready dict (a study config:
    :func:`forecast_study`). ``read_back``: see autoqra.forecast.stages.model_phases."""
    if "study" in cfg:
        return forecast_study(cfg, device, devices, workdir, config_name)
    hub = any(m["source"] == "hub" for m in cfg["models"].values())
    dev = get_device(device or ("h100" if hub else "cpu"), RESULTS_DIR)
    par = int(devices or (1 if dev.kind == "gpu" else 2 // max(1, int(cfg.get("job_threads", 1)))) or 1)
    if par < 1:
        raise ConfigError(f"argument --devices: expected a positive number of parallel devices, got {devices}")
    seq, seq_src = seq_tokens(cfg)
    out: dict[str, Any] = {"config": config_name, "device": dev.to_dict(), "parallel_devices": par,
                           "assumptions": {"seq_tokens": seq, "seq_tokens_source": seq_src,
                                           "memory": SAFETY_NOTE, "host_overhead_bytes": HOST_OVERHEAD,
                                           "bookkeeping_s_per_phase": BOOKKEEPING_S,
                                           "wall": "max(serial path with each phase's jobs N at a time, "
                                                   "device-hours / N)"},
                           "models": {}, "stages": {}, "phases": []}
    big = largest_device()
    total_s = 0.0
    path_s = 0.0
    for name, spec in cfg["models"].items():
        shape, src = model_shape(name, spec, workdir)
        dtype_b = 2.0 if dev.kind == "gpu" else 4.0
        phases = [p for p in model_phases(cfg, shape, read_back) if p.jobs > 0]
        mpath = 0.0
        n_evals = 0
        for ph in phases:
            secs = job_seconds(ph, cfg, shape, dev, dtype_b)
            peak = peak_bytes(ph, cfg, shape, dev)
            if peak > big.memory_bytes:
                raise ConfigError(f"config key 'models.{name}': a {ph.rule} job needs {peak / GB:.1f} GB of device "
                                  f"memory, more than every device in the table (largest: {big.name}, "
                                  f"{big.memory_bytes / GB:.0f} GB); lower training.batch_size or "
                                  f"data.max_seq_len, or enable training.grad_checkpointing")
            host = (peak if dev.kind == "cpu" else total_params(shape) * dtype_b) + HOST_OVERHEAD[dev.kind]
            dev_s = ph.jobs * secs["total"]
            total_s += dev_s
            n_evals += ph.jobs * int(round(ph.work.builds))
            if ph.on_path:
                mpath += math.ceil(ph.jobs / par) * secs["total"] + BOOKKEEPING_S
            row = {"model": name, "stage": ph.stage, "rule": ph.rule, "jobs": ph.jobs,
                   "seconds_per_job": secs, "device_hours": dev_s / 3600, "peak_device_bytes": peak,
                   "fits_device": peak <= dev.memory_bytes, "host_bytes": host,
                   "train_tokens_per_job": ph.work.train_tokens, "score_tokens_per_job": ph.work.score_tokens,
                   "on_serial_path": ph.on_path, "notes": ph.notes}
            out["phases"].append(row)
            st = out["stages"].setdefault(_stage_key(ph.stage), {"jobs": 0, "device_hours": 0.0, "peak_device_bytes": 0.0,
                                                                 "host_bytes": 0.0})
            st["jobs"] += ph.jobs
            st["device_hours"] += dev_s / 3600
            st["peak_device_bytes"] = max(st["peak_device_bytes"], peak)
            st["host_bytes"] = max(st["host_bytes"], host)
        runs = sum(p.jobs for p in phases if p.rule == "finetune")
        out["models"][name] = {"shape_source": src, "n_blocks": shape.n_blocks, "total_params": total_params(shape),
                               "compute_params": compute_params(shape),
                               "disk_bytes": disk_bytes(cfg, shape, n_evals, runs, dtype_b),
                               "serial_path_hours": mpath / 3600}
        path_s = max(path_s, mpath)
    peak = max(r["peak_device_bytes"] for r in out["phases"])
    out["total"] = {"jobs": sum(r["jobs"] for r in out["phases"]), "device_hours": total_s / 3600,
                    "peak_device_bytes": peak, "fits_device": peak <= dev.memory_bytes,
                    "host_bytes": max(r["host_bytes"] for r in out["phases"]),
                    "disk_bytes": sum(sum(m["disk_bytes"].values()) for m in out["models"].values()),
                    "serial_path_hours": path_s / 3600,
                    "wall_hours": max(path_s, total_s / par) / 3600}
    out["devices_fitting_peak"] = [n for n in DEVICE_NAMES if get_device(n).memory_bytes >= peak]
    return out


def forecast_study(cfg: Mapping, device: str | None = None, devices: int | None = None,
                   workdir: str | os.PathLike = ".", config_name: str = "study") -> dict[str, Any]:
    """A study config (``autoqra study``): one forecast per run (autoqra.study.budget_configs), run one
    after another. Runs after the first read Stage 0 back from the shared cache; an ablation run reads
    the full method's search, fine-tunes and scores back (the runs it shares with the budget's run)."""
    from autoqra.study import budget_configs, study_settings

    st = study_settings(cfg)
    configs = budget_configs(cfg, Path(workdir))
    abl = {f"{b}-ablations" for b in st["ablation_budgets"]} if st["ablation_run"] == "separate" else set()
    runs = {}
    for i, (name, c) in enumerate(configs.items()):
        rb: dict[str, Any] = {"stage0": i > 0}
        if name in abl:
            rb["variants"] = {s["variant"] for s in c["methods"].values() if s.get("group") == "autoqra"
                              and s.get("plan") == "search"}
            rb["methods"] = {m for m, s in c["methods"].items() if s.get("group") == "autoqra"}
        runs[name] = forecast(c, device, devices, workdir, f"{config_name} [{name}]", read_back=rb)
        runs[name]["read_back"] = {k: sorted(v) if isinstance(v, set) else v for k, v in rb.items()}
    first = next(iter(runs.values()))
    keys = ("jobs", "device_hours", "serial_path_hours", "wall_hours", "disk_bytes")
    total = {k: sum(r["total"][k] for r in runs.values()) for k in keys}
    total.update({k: max(r["total"][k] for r in runs.values()) for k in ("peak_device_bytes", "host_bytes")})
    return {"config": config_name, "study": True, "device": first["device"],
            "parallel_devices": first["parallel_devices"], "runs": runs, "total": total,
            "note": "runs one after another; wall = the sum of the runs' walls"}


def _stage_key(stage: str) -> str:
    return stage.split(" t")[0] if stage.startswith("Stage 2") else stage


def format_table(fc: Mapping) -> str:
    """The forecast as a text table (one row per stage, Stage 1 by generation and fidelity; a study:
    one table per run, then the study's total)."""
    if fc.get("study"):
        t = fc["total"]
        return "\n\n".join([*(format_table(r) for r in fc["runs"].values()),
                             f"study {fc['config']}: {len(fc['runs'])} runs, {t['jobs']} jobs, "
                             f"{t['device_hours']:.2f} device-hours, wall {t['wall_hours']:.2f} h "
                             f"({fc['note']})"])
    dev = fc["device"]
    lines = [f"forecast of {fc['config']} on {dev['name']} ({dev['memory_bytes'] / GB:.0f} GB), "
             f"{fc['parallel_devices']} parallel device(s)",
             f"{'stage':<28} {'jobs':>6} {'dev-hours':>10} {'peak GB/job':>12} {'host GB/job':>12}"]
    for stage, st in fc["stages"].items():
        lines.append(f"{stage:<28} {st['jobs']:>6} {st['device_hours']:>10.2f} {st['peak_device_bytes'] / GB:>12.2f} "
                     f"{st['host_bytes'] / GB:>12.2f}")
    t = fc["total"]
    lines.append(f"{'total':<28} {t['jobs']:>6} {t['device_hours']:>10.2f} {t['peak_device_bytes'] / GB:>12.2f} "
                 f"{t['host_bytes'] / GB:>12.2f}")
    lines.append(f"disk {t['disk_bytes'] / GB:.1f} GB; serial path {t['serial_path_hours']:.2f} h; wall at "
                 f"{fc['parallel_devices']} device(s) {t['wall_hours']:.2f} h; peak fits: "
                 f"{', '.join(fc['devices_fitting_peak']) or 'none'}")
    lines.append("throughput: " + "; ".join(f"{k}: {v}" for k, v in dev["sources"].items()))
    return "\n".join(lines)
