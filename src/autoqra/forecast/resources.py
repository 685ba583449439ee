"""Cluster resources per job from the forecast (read by workflow/rules/common.smk): runtime, host
memory, GPU memory and the smallest GPU tier that holds it, with a safety factor and retry
escalation (``attempt`` 1, 2, ...: more time, more memory, the next tier up when the need grows).

The reference GPU (whose speed sizes the runtime) and the tiers are cluster facts, not experiment
settings: environment variables AUTOQRA_GPU (default a100, the slowest 80 GB card of the table)
and AUTOQRA_GPU_TIERS (default "l40s,a100,h200", smallest first; names as the cluster's gres).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoqra.forecast.core import job_seconds, peak_bytes
from autoqra.forecast.devices import GB, get_device
from autoqra.forecast.shapes import model_shape, total_params
from autoqra.forecast.stages import model_phases
from autoqra.forecast.work import Phase, Work, finetune_work

SAFETY = 1.5            # forecast x 1.5 on the first try
RUNTIME_FLOOR_MIN = 30  # node start-up, file staging, a loaded node (a job never asks for less)
HOST_FLOOR_MB = 4000
MAX_RUNTIME_MIN = 7 * 24 * 60


def profile_devices(profile: str | os.PathLike) -> int | None:
    """The profile's ``jobs`` (jobs at once): the forecast's parallel devices."""
    import yaml

    p = Path(profile)
    p = p / "config.yaml" if p.is_dir() else p
    jobs = (yaml.safe_load(p.read_text()) or {}).get("jobs")
    return int(jobs) if jobs else None


def gpu_tiers() -> list[tuple[str, float]]:
    names = os.environ.get("AUTOQRA_GPU_TIERS", "l40s,a100,h200").split(",")
    return sorted(((n.strip(), get_device(n.strip(), key="AUTOQRA_GPU_TIERS").memory_bytes) for n in names if n.strip()),
                  key=lambda t: t[1])


class JobSizer:
    """Per-job estimates of one config, computed once per (model, rule, key)."""

    def __init__(self, config: Mapping[str, Any], workdir: str | os.PathLike = "."):
        self.config, self.workdir = config, workdir
        self._phases: dict[str, tuple[Any, list[Phase]]] = {}
        self._memo: dict[tuple, dict] = {}

    def device(self):
        return get_device(os.environ.get("AUTOQRA_GPU", "a100"), key="AUTOQRA_GPU")

    def _model(self, model: str):
        if model not in self._phases:
            shape, _ = model_shape(model, self.config["models"][model], self.workdir)
            self._phases[model] = (shape, model_phases(self.config, shape))
        return self._phases[model]

    def estimate(self, rule: str, wildcards: Mapping[str, str]) -> dict[str, float]:
        """seconds, peak device bytes and host bytes of one job of ``rule`` (the largest of its phases
        that match the wildcards)."""
        model = wildcards.get("model") or sorted(self.config["models"])[0]
        stage = None
        if rule == "search_evaluate":
            stage = f"Stage 1 g{wildcards['g']} {wildcards['phase'].upper()}"
        key = (model, rule, stage, wildcards.get("method"))
        if key in self._memo:
            return self._memo[key]
        shape, phases = self._model(model)
        dev = self.device()
        cands = [p for p in phases if p.rule == rule and (stage is None or p.stage == stage)]
        if rule == "finetune" and wildcards.get("method") in self.config["methods"]:
            cands = [Phase("Fine-tuning", "finetune", 1, finetune_work(self.config, wildcards["method"]), plan="16bit")]
        if not cands:  # e.g. model_prepare: a start and a model load
            cands = [Phase("setup", rule, 1, Work())]
        best = {"seconds": 0.0, "peak_bytes": 0.0, "host_bytes": 0.0}
        for p in cands:
            s = job_seconds(p, self.config, shape, dev, 2.0)["total"]
            best["seconds"] = max(best["seconds"], s)
            best["peak_bytes"] = max(best["peak_bytes"], peak_bytes(p, self.config, shape, dev))
        best["host_bytes"] = total_params(shape) * (4.0 if rule == "model_prepare" else 2.0) + 3 * GB
        self._memo[key] = best
        return best

    def runtime(self, rule: str, wildcards: Mapping[str, str], attempt: int) -> int:
        """Minutes: forecast x SAFETY x attempt, at least RUNTIME_FLOOR_MIN, at most a week."""
        est = self.estimate(rule, wildcards)["seconds"]
        return int(min(MAX_RUNTIME_MIN, max(RUNTIME_FLOOR_MIN, math.ceil(est * SAFETY * attempt / 60))))

    def mem_mb(self, rule: str, wildcards: Mapping[str, str], attempt: int) -> int:
        """Host memory: forecast x SAFETY, +50 % per retry."""
        est = self.estimate(rule, wildcards)["host_bytes"]
        return int(max(HOST_FLOOR_MB, math.ceil(est * SAFETY * (1 + 0.5 * (attempt - 1)) / 1e6)))

    def gpu_mem_mb(self, rule: str, wildcards: Mapping[str, str], attempt: int) -> int:
        """Device memory: the predicted peak (with its slack), +25 % per retry."""
        est = self.estimate(rule, wildcards)["peak_bytes"]
        return int(math.ceil(est * (1 + 0.25 * (attempt - 1)) / 1e6))

    def gpu_model(self, rule: str, wildcards: Mapping[str, str], attempt: int) -> str:
        """The smallest GPU tier holding gpu_mem_mb (the largest when none does)."""
        need = self.gpu_mem_mb(rule, wildcards, attempt) * 1e6
        tiers = gpu_tiers()
        return next((n for n, mem in tiers if mem >= need), tiers[-1][0])
