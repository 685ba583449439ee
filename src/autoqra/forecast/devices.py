"""The forecast's device table: how fast a device trains and scores tokens, and how much memory it has.

Throughput is modelled as FLOPs per token at an effective FLOP rate: training 6·N FLOPs per token
(forward 2·N + backward 4·N; 8·N with gradient checkpointing, which recomputes the forward),
scoring 2·N, N = :func:`autoqra.forecast.shapes.compute_params`. A quantized layer dequantizes its
weight in every forward, which costs a factor per quantizer. Every job also pays a start (imports,
model load) and every optimizer step a per-block overhead (Python and kernel launches, what a tiny
model's step is made of).

- CPU: every figure measured on this machine (2-core x86_64, one thread per job, float32) by
  benchmarks/forecast_calibrate.py -> benchmarks/results/forecast_cpu.json and read from it at run time
  (:func:`cpu_from_calibration` says which figure comes from which measurement).
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
DEFAULT_RESULTS_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
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


CPU_CALIBRATION = "forecast_cpu.json"
CPU_INT8_FACTOR = 1.5  # assumed: int8 is not in the calibration's plans


def _ratio(rows: dict, plan: str) -> float:
    """A quantized plan's slowdown vs 16-bit LoRA: the mean of its training and scoring ratios."""
    r, b = rows[plan], rows["lora16"]
    return 0.5 * (r["train_s_per_step"] / b["train_s_per_step"] + r["score_s"] / b["score_s"])


def cpu_from_calibration(cal: dict, path: str = CPU_CALIBRATION) -> Device:
    """The CPU row of the table, derived from benchmarks/forecast_calibrate.py's JSON (no hand copy).

    ``models``: its micro-benchmark (SmolLM2-135M and the micro model, CPU seconds of one idle job)
    gives the quantizers' slowdowns (NF4; HQQ from a mixed 2/3/4/8-bit HQQ plan) and -- where the JSON
    has no ``fit`` -- every other figure (the 16-bit rows' per-step tokens/s and scoring time as FLOP
    rates, the micro model's start, the load per GB from SmolLM2's start minus the micro model's, the
    cold quantization rate from the mixed plan's cold build). ``fit``: the figures it names (a job's
    start, per-GB load and build, cold quantization, per-step overhead, the two FLOP rates) fitted to
    the wall seconds of whole runs' jobs (``forecast_calibrate.py --fit-runs``), which is what a job
    pays as run: short trainings' first steps, two jobs sharing the machine's memory bandwidth, the
    record keeping around each evaluation.
"""
    from autoqra.forecast.shapes import compute_params, total_params
    from autoqra.forecast.work import SEQ_TOKENS
    from autoqra.memory import ModelShape

    m, micro = cal["models"]["smollm2-135m"], cal["models"]["micro"]
    shape = ModelShape(**m["shape"])
    n, rows = compute_params(shape), m["plans"]
    lora = rows["lora16"]
    gb = total_params(shape) * 4.0 / GB
    q = {"none": 1.0, "nf4": _ratio(rows, "nf4"), "hqq": _ratio(rows, "hqq_mixed"), "int8": CPU_INT8_FACTOR}
    quant_rate = rows["hqq_mixed"]["build_cold_s"] / (shape.n_blocks * shape.block_weight_params / 1e9)
    src = f"measured here: benchmarks/results/{path} (benchmarks/forecast_calibrate.py)"
    figures = {"train_flops": 6.0 * n * lora["train_tokens_per_s"], "step_overhead_s": 0.0,
               "score_flops": 2.0 * n * lora["score_examples"] * SEQ_TOKENS["synthetic"][0] / lora["score_s"],
               "start_s": micro["start_cpu_s"],
               "load_s_per_gb": max(0.0, m["start_cpu_s"] - micro["start_cpu_s"]) / gb,
               "quantize_s_per_gweight": quant_rate}
    sources = {"quant_factor (nf4, hqq)": src + ": micro-benchmark",
               "quant_factor.int8": "assumed (not measured)", "memory_bytes": "this machine's 24 GiB"}
    fit = cal.get("fit")
    if fit:
        figures.update({k: float(fit["constants"][k]) for k in figures if k in fit["constants"]})
        sources[", ".join(k for k in figures if k in fit["constants"])] = (
            f"{src}: fitted to the jobs of {', '.join(fit['runs'])} (wall seconds as run)")
    else:
        sources["start_s, load_s_per_gb, quantize_s_per_gweight, train_flops, score_flops"] = (
            src + ": micro-benchmark (no fit)")
    return Device("cpu", "cpu", 24 * 2**30, quant_factor=q, sources=sources,
                  **figures)


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
        return cpu_device(results_dir)
    dev = _gpu(n)
    if results_dir is not None and (m := _gpu_check(n, Path(results_dir))):
        rate = 6.0 * m["params"] * m["tokens_per_s"]
        dev = replace(dev, train_flops=rate, score_flops=rate * MFU_SCORE / MFU_TRAIN,
                      sources={**dev.sources, "throughput": f"measured: {m['file']} (16-bit LoRA tokens/s)"})
    return dev


def cpu_device(results_dir: str | Path | None = None) -> Device:
    """The CPU row from ``<results_dir>/forecast_cpu.json`` (default: the repository's benchmarks/results)."""
    path = Path(results_dir or DEFAULT_RESULTS_DIR) / CPU_CALIBRATION
    try:
        cal = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"argument --device: the CPU figures come from {path}, which cannot be read ({e}); "
                          "run benchmarks/forecast_calibrate.py to measure them") from None
    return cpu_from_calibration(cal)


def largest_device() -> Device:
    return max((get_device(n) for n in DEVICE_NAMES), key=lambda d: d.memory_bytes)
