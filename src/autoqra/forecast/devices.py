"""The forecast's device table: how fast a device trains and scores tokens, and how much memory it has.

Throughput is modelled as FLOPs per token at an effective FLOP rate: training 6·N FLOPs per token
(forward 2·N + backward 4·N; 8·N with gradient checkpointing, which recomputes the forward),
scoring 2·N, N = :func:`autoqra.forecast.shapes.compute_params`. A quantized layer dequantizes its
weight in every forward, which costs a factor per quantizer. Every job also pays a start (imports,
model load) and every optimizer step a per-block overhead (Python and kernel launches, what a tiny
model's step is made of).

- CPU: every figure measured on this machine (2-core x86_64, one thread per job, float32) by
  benchmarks/forecast_calibrate.py -> benchmarks/results/forecast_cpu.json, in CPU seconds.
- GPUs: benchmarks/results/gpu_check*.json when a GPU check has measured tokens/s (their 16-bit
  LoRA row sets the effective rate), else the stated assumption: a fraction of the card's dense
  bf16 peak from its datasheet (MFU below).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from autoqra.errors import ConfigError

GB = 1e9
CPU_SOURCE = "measured here: benchmarks/results/forecast_cpu.json (benchmarks/forecast_calibrate.py)"
MFU_TRAIN = 0.30   # assumed: LoRA training in bf16 reaches ~30 % of the dense peak on a large model
MFU_SCORE = 0.40   # assumed: batched no-grad forwards
GPU_SOURCE = (f"assumed: {MFU_TRAIN:.0%} (training) / {MFU_SCORE:.0%} (scoring) of the datasheet's dense bf16 "
              "peak; 6·N FLOPs/token training, 2·N scoring")


@dataclass(frozen=True)
class Device:
    name: str
    kind: str                          # "cpu" or "gpu"
    memory_bytes: float                # what one job may hold on the device
    train_flops: float                 # effective FLOP/s of LoRA training (16-bit layers)
    score_flops: float                 # effective FLOP/s of no-grad scoring
    step_overhead_s: float             # per optimizer step and block
    start_s: float                     # a job's start: interpreter, imports, model load (+ per GB below)
    load_s_per_gb: float               # model load per GB of weights
    quantize_s_per_gweight: float      # quantizing 1e9 weights (cold cache), HQQ/bnb
    quant_factor: dict = field(default_factory=dict)  # quantizer -> slowdown of its layers vs 16-bit
    sources: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# CPU (one thread, float32, CPU seconds), from benchmarks/results/forecast_cpu.json, re-measured on an
# idle machine (a first calibration beside six other jobs ran 1.4-1.6x slower): SmolLM2-135M's 16-bit
# LoRA step (1.10 s for 113 padded tokens) and its scoring (64 validation examples in 5.87 s) set the
# FLOP rates (scaled from the first calibration by 1.76/1.10 and 8.26/5.87); the micro model's start
# (4.1 s); NF4 and a mixed 2/3/4/8 HQQ plan vs 16-bit the factors (train 1.17 / 1.40, score 1.06 / 1.24).
CPU = Device("cpu", "cpu", 24 * 2**30, train_flops=1.0e11, score_flops=8.2e10, step_overhead_s=0.011,
             start_s=4.1, load_s_per_gb=2.8, quantize_s_per_gweight=200.0,
             quant_factor={"none": 1.0, "hqq": 1.3, "nf4": 1.15, "int8": 1.5},
             sources={"all but int8 and memory": CPU_SOURCE,
                      "quant_factor.int8": "assumed (not measured)",
                      "memory_bytes": "this machine's 24 GiB"})

# (dense bf16 peak FLOP/s, memory bytes): NVIDIA datasheets.
GPU_PEAKS = {
    "h100": (989e12, 80 * GB, "NVIDIA H100 SXM datasheet: 989 TFLOPS dense bf16, 80 GB"),
    "h200": (989e12, 141 * GB, "NVIDIA H200 SXM datasheet: 989 TFLOPS dense bf16, 141 GB"),
    "a100": (312e12, 80 * GB, "NVIDIA A100 80GB datasheet: 312 TFLOPS dense bf16, 80 GB"),
    "l40s": (362e12, 48 * GB, "NVIDIA L40S datasheet: 362 TFLOPS dense bf16, 48 GB"),
    "rtx4090": (165e12, 24 * GB, "NVIDIA RTX 4090 (Ada whitepaper): 165 TFLOPS dense bf16 (fp32 accumulate), 24 GB"),
}
# Assumed slowdown of a quantized layer's forward+backward on CUDA vs a bf16 one (dequantization).
GPU_QUANT_FACTOR = {"none": 1.0, "hqq": 1.5, "nf4": 1.3, "int8": 1.6}


def _gpu(name: str) -> Device:
    peak, mem, src = GPU_PEAKS[name]
    return Device(name, "gpu", mem, train_flops=MFU_TRAIN * peak, score_flops=MFU_SCORE * peak,
                  step_overhead_s=0.002, start_s=30.0, load_s_per_gb=1.0, quantize_s_per_gweight=4.0,
                  quant_factor=dict(GPU_QUANT_FACTOR),
                  sources={"peak_and_memory": src, "throughput": GPU_SOURCE,
                           "start_s, load_s_per_gb, quantize_s_per_gweight, step_overhead_s, quant_factor":
                           "assumed (no GPU measurement in benchmarks/results)"})


DEVICE_NAMES = ("cpu", *GPU_PEAKS)


def _gpu_check(name: str, results_dir: Path) -> dict | None:
    """A GPU check's measured 16-bit LoRA tokens/s and model params for ``name``, if one exists
    (benchmarks/gpu_check.py: ``sections.env.gpu``, ``sections.train`` rows, ``compute_params``)."""
    for path in sorted(results_dir.glob("gpu_check*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        sections = data.get("sections") or {}
        env = sections.get("env") or {}
        gpu = str(env.get("gpu") or "").lower().replace(" ", "").replace("-", "")
        rows = [r for r in sections.get("train") or [] if r.get("method") == "lora16" and r.get("tokens_per_s")]
        params = data.get("compute_params")
        if rows and params and gpu and name in gpu:
            return {"tokens_per_s": float(rows[0]["tokens_per_s"]), "params": float(params), "file": str(path)}
    return None


def get_device(name: str, results_dir: str | Path | None = None, key: str = "--device") -> Device:
    """The device ``name`` of the table; ConfigError naming ``key`` for an unknown one."""
    n = str(name).lower().replace("-", "").replace(" ", "")
    if n not in DEVICE_NAMES:
        raise ConfigError(f"argument {key}: device '{name}' unknown; expected one of {list(DEVICE_NAMES)}")
    if n == "cpu":
        return CPU
    dev = _gpu(n)
    if results_dir is not None and (m := _gpu_check(n, Path(results_dir))):
        rate = 6.0 * m["params"] * m["tokens_per_s"]
        dev = replace(dev, train_flops=rate, score_flops=rate * MFU_SCORE / MFU_TRAIN,
                      sources={**dev.sources, "throughput": f"measured: {m['file']} (16-bit LoRA tokens/s)"})
    return dev


def largest_device() -> Device:
    return max((get_device(n) for n in DEVICE_NAMES), key=lambda d: d.memory_bytes)
