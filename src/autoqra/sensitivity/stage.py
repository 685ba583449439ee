"""Stage 0 as one call: both priors for every block, with the memory estimate checked first and the
result cached under ``{cache_dir}/sensitivity/``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from autoqra.data import load_split
from autoqra.io import atomic_write_json
from autoqra.manifest import code_sha
from autoqra.memory import ModelShape
from autoqra.plan import DEFAULT_HQQ_AXIS
from autoqra.quant.build import BaseModel
from autoqra.quant.cache import QuantCache, base_sha
from autoqra.sensitivity.fidelity import fidelity_sensitivity
from autoqra.sensitivity.footprint import GB, check_fits, device_free_bytes, stage0_footprint
from autoqra.sensitivity.plasticity import plasticity
from autoqra.sensitivity.priors import correlations, normalise
from autoqra.sensitivity.settings import SensitivitySettings, calibration_ids

log = logging.getLogger(__name__)

SENSITIVITY_FORMAT = 2  # bump when the stored result changes meaning (2: batch-bounded fidelity pass)
# The library code Stage 0 depends on: its version is part of the cache key.
STAGE0_CODE = ("sensitivity", "quant", "models", "data", "plan.py", "memory.py")


def plan_memory(model_dir: str | os.PathLike, settings: SensitivitySettings, quantizer: str, group_size: int,
                device: str | None = None, hqq_axis: int = DEFAULT_HQQ_AXIS, meta_bits: int = 16) -> dict[str, Any]:
    """The Stage-0 memory estimate for this model and device, logged; ConfigError if it cannot fit."""
    from autoqra.models.layout import default_device

    device = device or default_device()
    fp = stage0_footprint(ModelShape.from_path(model_dir), settings, quantizer, group_size, device, hqq_axis,
                          meta_bits)
    free, where = device_free_bytes(device)
    log.info("Stage 0 memory estimate on %s: peak %.2f GB (fidelity %.2f GB, plasticity %.2f GB); %.1f GB %s",
             fp["device"], fp["peak_gb"], fp["phases"]["fidelity"] / GB, fp["phases"]["plasticity"] / GB,
             free / GB, where)
    check_fits(fp, free, where, settings)
    return fp  # the free memory is the machine's, not the result's: logged only


def run_sensitivity(model_dir: str | os.PathLike, data_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                    settings: SensitivitySettings, quantizer: str, group_size: int,
                    device: str | None = None, hqq_axis: int = DEFAULT_HQQ_AXIS,
                    meta_bits: int = 16) -> tuple[list[dict], dict]:
    """Both priors for every block: ``(rows, summary)`` with correlations, timings, settings and the
    memory estimate (checked before the model is loaded) beside the measured peak on CUDA."""
    timings: dict[str, float] = {}

    def timed(part: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        out = fn(*args, **kwargs)
        timings[part] = timings.get(part, 0.0) + time.perf_counter() - t
        return out

    t0 = time.perf_counter()
    memory = plan_memory(model_dir, settings, quantizer, group_size, device, hqq_axis, meta_bits)
    torch.manual_seed(settings.seed)
    base = timed("load", BaseModel, model_dir, device=device)
    cuda = base.device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats(base.device)
    cache = QuantCache(cache_dir, base.base_id)
    records = timed("load", load_split, data_dir, "train")
    calib = timed("calibration", calibration_ids, base.tokenizer, settings, records)
    iq = timed("fidelity", fidelity_sensitivity, base, cache, settings, quantizer, group_size, calib=calib,
               hqq_axis=hqq_axis, meta_bits=meta_bits)
    ir = timed("plasticity", plasticity, base, cache, base.tokenizer, records, settings)
    iq_n, ir_n = normalise(iq), normalise(ir)
    rows = [{"block": b, "iq_raw": float(iq[b]), "iq_norm": float(iq_n[b]), "ir_raw": float(ir[b]),
             "ir_norm": float(ir_n[b]), "combined": float((iq_n[b] + ir_n[b]) / 2)} for b in range(base.n_blocks)]
    timings["total"] = time.perf_counter() - t0
    memory["measured_peak_bytes"] = torch.cuda.max_memory_allocated(base.device) if cuda else None
    summary = {"correlations": correlations(iq, ir), "timings": {k: round(v, 3) for k, v in timings.items()},
               "settings": {**asdict(settings), "low_bits": settings.resolved_low_bits, "quantizer": quantizer,
                            "group_size": group_size, "hqq_axis": hqq_axis, "meta_bits": meta_bits},
               "n_calib_tokens": int(calib.numel()), "n_calib_sequences": int(calib.shape[0]),
               "base_id": base.base_id, "device": base.device, "memory": memory,
               "quant_cache": {"hits": cache.hits, "misses": cache.misses}}
    return rows, summary


def cached_run_sensitivity(model_dir: str | os.PathLike, data_dir: str | os.PathLike, cache_dir: str | os.PathLike,
                           settings: SensitivitySettings, quantizer: str, group_size: int,
                           device: str | None = None, hqq_axis: int = DEFAULT_HQQ_AXIS,
                           meta_bits: int = 16) -> tuple[list[dict], dict]:
    """:func:`run_sensitivity` with its result kept under ``{cache_dir}/sensitivity/``, keyed by the
    base model's weight hashes, the training split, the calibration text and every setting, so
    that any workflow sharing ``cache_dir`` (a shared filesystem on a cluster) computes Stage 0
    once per (model, data, settings). ``summary['cached']`` says whether it came from there."""
    from autoqra.evaluate import data_sha

    calib = settings.calib_source
    key = {"format": SENSITIVITY_FORMAT, "settings": asdict(settings), "quantizer": quantizer, "group_size": group_size,
           "hqq_axis": hqq_axis, "meta_bits": meta_bits, "data": data_sha(data_dir, ("train",)), "code": code_sha(*STAGE0_CODE),
           "calib": None if calib == "data" else hashlib.sha256(Path(calib).read_bytes()).hexdigest()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=list).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "sensitivity" / base_sha(model_dir)[:12] / f"{digest}.json"
    try:
        stored = json.loads(path.read_text())
        if stored.get("key") == json.loads(json.dumps(key, default=list)):
            return stored["rows"], {**stored["summary"], "cached": True}
    except (OSError, json.JSONDecodeError, AttributeError):
        pass  # absent or unreadable: compute it
    rows, summary = run_sensitivity(model_dir, data_dir, cache_dir, settings, quantizer, group_size, device,
                                    hqq_axis, meta_bits)
    atomic_write_json(path, {"key": key, "rows": rows, "summary": summary})
    return rows, {**summary, "cached": False}
