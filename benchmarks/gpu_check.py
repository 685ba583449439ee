"""The device check of the GPU route (issue 24): one run, one JSON (benchmarks/results/gpu_check.json).

Sections, each timed and kept even when another fails (the JSON is rewritten after every section, so a
run stopped at its time limit still leaves what it measured):
  env     versions (the machine's own torch/transformers/peft, the carried hqq/bitsandbytes/lm-eval),
          GPU, the HQQ backend (hqq's plain-PyTorch dequantize + matmul: no fused kernel is installed,
          so HQQ vs NF4 tokens/s compares implementations as well as formats);
  bytes   a ~1B-parameter random Llama (TinyLlama shape) quantized at every rung and quantizer (HQQ
          2/3/4/8, NF4, int8): stored bytes vs the memory model, cold quantization time, the int8
          scale present, HQQ 8-bit dequantization error vs the dense weight;
  train   a few LoRA steps of 16-bit LoRA, uniform NF4, a mixed HQQ plan (2/3/4/8) and the paper's
          mixed plan (HQQ 2/3, NF4, int8): tokens/s and the measured CUDA peak vs
          autoqra.train_memory.predict_training_peak (the dense base is not resident: BaseModel);
  stage0  Stage 0 on a 4-block model of the same shape: measured peak vs the analytic estimate;
  lm_eval lm-eval (bundled synth_mc task) on the NF4 model, with its bounded max_length: SharedContextLM
          and lm-eval's HFLM, per-document agreement.

    bash benchmarks/gpu_check.sh                          # on the GPU machine (installs .gpu_wheels)
    python benchmarks/gpu_check.py --device cpu --dry     # here: the same sections on the micro model
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

SHAPE_1B = {"hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
            "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048}
RUNGS = [("hqq", 2), ("hqq", 3), ("hqq", 4), ("hqq", 8), ("nf4", 4), ("int8", 8)]
PEAK_TOLERANCE = 0.15  # measured/predicted training peak
BYTES_TOLERANCE = 0.01  # stored bytes vs the memory model
NOT_A_GPU = ("gpu_check: no CUDA GPU visible (torch.cuda.is_available() is False); run it on the GPU machine "
             "(README, 'Running on a GPU'), or here with --device cpu --dry")


class Check:
    """Sections run in order; results and errors go to one JSON, rewritten after each section."""

    def __init__(self, out: Path, extra_out: Path | None):
        self.out, self.extra_out, self.t0 = out, extra_out, time.perf_counter()
        self.result: dict = {"sections": {}, "errors": {}}

    def run(self, name: str, fn, *args):
        t = time.perf_counter()
        print(f"gpu_check: {name} ...", flush=True)
        try:
            value = fn(*args)
            self.result["sections"][name] = value if isinstance(value, dict | list) else None
        except Exception as e:  # a first run on a new machine: keep going, record what broke
            value = None
            self.result["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"
            print(f"gpu_check: {name} FAILED: {type(e).__name__}: {e}", flush=True)
        self.result.setdefault("seconds", {})[name] = round(time.perf_counter() - t, 2)
        self.write()
        return value

    def write(self) -> None:
        from autoqra.io import atomic_write_json

        self.result["wall_seconds"] = round(time.perf_counter() - self.t0, 2)
        for path in (self.out, self.extra_out):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(path, self.result)


def env_section(device: str) -> dict:
    from autoqra.manifest import package_versions

    out = {"device": device, "python": sys.version.split()[0], "versions": package_versions(
        ("torch", "transformers", "peft", "accelerate", "tokenizers", "safetensors", "hqq", "bitsandbytes",
         "lm_eval", "datasets", "numpy"))}
    if device.startswith("cuda"):
        out.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                   gpu_memory_bytes=torch.cuda.get_device_properties(0).total_memory)
    from hqq.core.quantize import HQQLinear

    out["hqq_backend"] = str(HQQLinear.backend.value)
    out["hqq_backend_note"] = ("hqq's plain-PyTorch backend (dequantize, then a dense matmul) on CPU and CUDA; "
                               "no fused HQQ kernel is installed, so HQQ vs NF4 speed compares implementations")
    import bitsandbytes as bnb

    lib = getattr(getattr(bnb, "cextension", None), "lib", None)
    out["bitsandbytes_lib"] = getattr(getattr(lib, "_lib", None), "_name", None) or type(lib).__name__
    return out


def imported_distributions() -> list[str]:
    """Distributions whose modules this process imported (what the GPU machine must have or be carried)."""
    from importlib import metadata

    owners = metadata.packages_distributions()
    top = {m.split(".")[0] for m in list(sys.modules)}
    return sorted({d for m in top for d in owners.get(m, [])})


def prepare(work: Path, dry: bool, stage0: bool) -> dict:
    from autoqra.data import prepare_data
    from autoqra.models import prepare_model

    micro = {} if dry else dict(SHAPE_1B)
    m = prepare_model({"source": "micro", "id": None, "revision": None, "micro": micro}, work / "model", seed=0)
    if stage0:  # Stage 0 on 4 blocks of the same shape
        prepare_model({"source": "micro", "id": None, "revision": None, "micro": {**micro, "num_hidden_layers": 4}},
                      work / "model4", seed=0)
    prepare_data({"source": "synthetic", "n_train": 256, "n_val": 16, "n_test": 32}, work / "data", seed=0)
    return {"total_params": m["total_params"], "shape": micro or "micro defaults"}


def bytes_section(base, work: Path, group: int) -> list[dict]:
    from autoqra.memory import MemoryModel, ModelShape
    from autoqra.plan import Plan, projection_module
    from autoqra.quant import build

    shape = ModelShape.from_path(base.model_dir)
    rows = []
    for quantizer, bits in RUNGS:
        plan = Plan.uniform(shape.n_blocks, bits, 8, quantizer, group)
        t = time.perf_counter()
        built = build(base.model_dir, plan, cache_dir=work / "cache", base=base)
        seconds = time.perf_counter() - t
        real = built.info["stored_bytes_by_quantizer"][quantizer]
        cost = MemoryModel.for_plan(shape, plan).block_cost(bits, 8, quantizer)
        model_bytes = shape.n_blocks * (cost["weights"] + cost["quant_meta"])
        measured = real["weights"] + real["quant_meta"]
        layer = built.model.get_base_model().get_submodule(projection_module(0, "down_proj")).get_base_layer()
        row = {"quantizer": quantizer, "bits": bits, "measured_bytes": measured, "model_bytes": model_bytes,
               "rel_error": measured / model_bytes - 1, "bits_per_weight": 8 * measured / real["params"],
               "build_seconds_cold": round(seconds, 3), "layer": type(layer).__name__}
        dense = base.dense_weight(0, "down_proj").float()
        if quantizer == "hqq":
            row["rel_mse_vs_dense"] = float((layer.dequantize().float() - dense).pow(2).mean() / dense.pow(2).mean())
        if quantizer == "int8":
            row["int8_scale_present"] = layer.weight.SCB is not None
        rows.append(row)
        del built, layer
        _free()
    return rows


def train_section(base, work: Path, group: int, steps: int, seq_len: int, batch: int) -> list[dict]:
    from autoqra.data import load_split
    from autoqra.memory import ModelShape
    from autoqra.plan import Plan
    from autoqra.quant import build
    from autoqra.train import Fidelity, TrainSettings, train_lora
    from autoqra.train_memory import predict_training_peak

    shape = ModelShape.from_path(base.model_dir)
    n = shape.n_blocks
    ranks = [(4, 8, 16)[i % 3] for i in range(n)]
    plans = {"lora16": Plan.uniform(n, 16, 8, "none"), "nf4": Plan.uniform(n, 4, 8, "nf4", group),
             "mixed_hqq": Plan.mapped([(2, 3, 4, 8)[i % 4] for i in range(n)], ranks, {b: "hqq" for b in (2, 3, 4, 8)},
                                      group_size=group),
             "mixed_paper": Plan.mapped([(2, 3, 4, 8)[i % 4] for i in range(n)], ranks,
                                        {2: "hqq", 3: "hqq", 4: "nf4", 8: "int8"}, group_size=group)}
    records = load_split(work / "data", "train")
    settings = TrainSettings(lr=2e-4, batch_size=batch, max_seq_len=seq_len, progress=False)
    cuda = base.device.startswith("cuda")
    rows = []
    for name, plan in plans.items():
        _free()
        resident = torch.cuda.memory_allocated() if cuda else None  # the base's fixed part only
        built = build(base.model_dir, plan, cache_dir=work / "cache", base=base, lora_dropout=0.05)
        res = train_lora(built.model, built.tokenizer, records, Fidelity(name="check", steps=steps), settings, seed=0)
        pred = predict_training_peak(shape, plan, **res.extra["widest_batch"], lora_dropout=True,
                                     dense_bytes=base.dtype.itemsize, act_bytes=2 if cuda else base.dtype.itemsize)
        rows.append({"method": name, "quantizers": plan.quantizer_label, "steps": res.steps, "tokens": res.tokens,
                     "tokens_per_s": res.tokens_per_s, "train_seconds": res.train_seconds,
                     "final_loss": res.final_loss, "peak_memory_bytes": res.peak_memory_bytes,
                     "predicted_peak_bytes": pred["total"], "predicted_parts": pred,
                     "measured_over_predicted": res.peak_memory_bytes / pred["total"],
                     "widest_batch": res.extra["widest_batch"], "allocated_before_build_bytes": resident,
                     "build_seconds": built.info["build_seconds"]})
        print(f"gpu_check: {name:>11} {res.tokens_per_s:9.0f} tok/s  peak {res.peak_memory_bytes / 2**30:6.2f} GiB"
              f"  predicted {pred['total'] / 2**30:6.2f} GiB", flush=True)
        del built
    _free()
    return rows


def stage0_section(work: Path, device: str, group: int, dry: bool) -> dict:
    from autoqra.sensitivity import SensitivitySettings, run_sensitivity

    s = SensitivitySettings(n_calib=4 if dry else 8, calib_len=64 if dry else 512, calib_batch_size=2 if dry else 4,
                            batch_size=2 if dry else 4, max_seq_len=64 if dry else 256, r_max=16, grad_batches=2,
                            low_bits=2)
    _, summary = run_sensitivity(work / "model4", work / "data", work / "cache", s, "hqq", group, device=device)
    mem = summary["memory"]
    measured = mem.get("measured_peak_bytes")
    return {"estimate_bytes": mem["peak_bytes"], "measured_peak_bytes": measured,
            "measured_over_estimate": None if measured is None else measured / mem["peak_bytes"],
            "phases": mem["phases"], "timings": summary["timings"]}


def lm_eval_section(base, work: Path, group: int, dry: bool) -> dict:
    from autoqra.lmeval import prepare_tasks, run_lm_eval, tidy_results
    from autoqra.plan import Plan
    from autoqra.quant import build

    tasks = Path(__file__).resolve().parents[1] / "workflow" / "resources" / "lm_eval_tasks"
    include = prepare_tasks(tasks, work / "data", work / "lm_eval")
    built = build(base.model_dir, Plan.uniform(base.n_blocks, 4, 8, "nf4", group), cache_dir=work / "cache", base=base)
    built.model.eval()
    runs = {}
    for shared in (True, False):  # SharedContextLM (the pipeline's default) against lm-eval's own HFLM
        t = time.perf_counter()
        out = run_lm_eval(built.model, built.tokenizer, ["synth_mc"], include_path=include, limit=4 if dry else 32,
                          batch_size=8, seed=0, shared_context=shared)
        runs[shared] = (out, time.perf_counter() - t)
    (out, seconds), (ref, ref_seconds) = runs[True], runs[False]
    a = {(d["doc_id"], d["metric"]): d["value"] for d in out.get("docs", [])}
    b = {(d["doc_id"], d["metric"]): d["value"] for d in ref.get("docs", [])}
    return {"max_length": out["max_length"], "rows": tidy_results(out), "n_doc_rows": len(a),
            "seconds": seconds, "hflm_seconds": ref_seconds, "hflm_rows": tidy_results(ref),
            "docs_differing_from_hflm": sum(1 for k in a if a[k] != b.get(k))}


def _free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def summarize(result: dict, wall_limit: float) -> dict:
    s = result["sections"]
    train = s.get("train") or []
    return {"bytes_match_memory_model": bool(s.get("bytes")) and all(abs(r["rel_error"]) <= BYTES_TOLERANCE
                                                                     for r in s["bytes"]),
            "peak_within_15pct": bool(train) and all(abs(r["measured_over_predicted"] - 1) <= PEAK_TOLERANCE
                                                     for r in train),
            "tokens_per_s": {r["method"]: round(r["tokens_per_s"], 1) for r in train},
            "load": s.get("load"),  # on CUDA: bfloat16, keep_dense False (the dense base not resident)
            "no_errors": not result["errors"], "wall_seconds": result["wall_seconds"],
            "wall_under_limit": result["wall_seconds"] <= wall_limit}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dry", action="store_true", help="micro model, a few steps: checks the check itself")
    ap.add_argument("--out", default=None, help="default benchmarks/results/gpu_check.json (dry: gpu_check_dry.json)")
    ap.add_argument("--group-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None, help="training steps per method (default 12; dry 2)")
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--wall-limit", type=float, default=480.0, help="seconds the whole check should stay under")
    ap.add_argument("--only", nargs="*", default=None, help="sections to run (default all)")
    a = ap.parse_args(argv)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print(NOT_A_GPU, file=sys.stderr)
        return 2
    default = "benchmarks/results/gpu_check_dry.json" if a.dry else "benchmarks/results/gpu_check.json"
    out = Path(a.out or default)
    extra = Path(os.environ["OUT"]) / out.name if os.environ.get("OUT") else None
    steps = a.steps or (2 if a.dry else 12)
    seq_len, batch = (64, 2) if a.dry else (a.seq_len, a.batch)
    check = Check(out, extra)
    check.result["settings"] = {"device": a.device, "dry": a.dry, "group_size": a.group_size, "steps": steps,
                                "seq_len": seq_len, "batch": batch}
    want = set(a.only or ("env", "bytes", "train", "stage0", "lm_eval"))
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="autoqra-gpu-check-") as tmp:
        work = Path(tmp)
        if "env" in want:
            check.run("env", env_section, a.device)
        check.run("prepare", prepare, work, a.dry, "stage0" in want)
        from autoqra.quant import BaseModel

        base = check.run("load", BaseModel, work / "model", a.device)
        if base is not None:
            from autoqra.forecast.shapes import compute_params
            from autoqra.memory import ModelShape

            # N of 6·N FLOPs/token: autoqra forecast turns the 16-bit LoRA tokens/s into this GPU's throughput
            check.result["compute_params"] = compute_params(ModelShape.from_path(base.model_dir))
            check.result["sections"]["load"] = {"device": base.device, "dtype": str(base.dtype),
                                                "keep_dense": base.keep_dense}
            if "bytes" in want:
                check.run("bytes", bytes_section, base, work, a.group_size)
            if "train" in want:
                check.run("train", train_section, base, work, a.group_size, steps, seq_len, batch)
            if "lm_eval" in want:
                check.run("lm_eval", lm_eval_section, base, work, a.group_size, a.dry)
            del base
            _free()
        if "stage0" in want:
            check.run("stage0", stage0_section, work, a.device, a.group_size, a.dry)
    check.result["wall_seconds"] = round(time.perf_counter() - check.t0, 2)
    check.result["imported_distributions"] = imported_distributions()
    check.result["summary"] = summarize(check.result, a.wall_limit)
    check.write()
    print("gpu_check: summary", json.dumps(check.result["summary"]), "->", out, flush=True)
    return 0 if not check.result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
