"""CPU figures of the forecast's device table (autoqra.forecast.devices), measured on this machine.

Per model (the micro random Llama, SmolLM2-135M) and plan (16-bit LoRA, uniform NF4, a mixed HQQ plan):
CPU seconds (process_time: the figures do not move with the neighbours' load on a shared machine)
of a job's start (imports + model load), of building the quantized model (cold and warm quantization
cache), of training (per token, per step) and of scoring (per token). One thread, float32.

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 python benchmarks/forecast_calibrate.py \
        --smollm2 results/models/smollm2-135m/hf --data results/data/synth --out benchmarks/results/forecast_cpu.json

``--fit-runs RUN...`` then fits the forecast's per-job constants (a job's start, per-GB load and
build, the cold quantization rate, per-step overhead, training and scoring FLOP rates) to the wall seconds of finished runs' jobs (their
`benchmark:` files, copies of identical runs left out) and stores them under ``fit`` in the same
JSON, which the forecast's device table reads (autoqra.forecast.devices.cpu_from_calibration). The fit
minimises the relative error per (run, stage) by non-negative least squares on the forecast's own
features (autoqra.forecast.core.job_features).
Fit on runs other than those the forecast is then checked on (benchmarks/forecast_check.py):

    PYTHONPATH=src python benchmarks/forecast_calibrate.py --fit-runs benchmarks/results/study/b3 \
        benchmarks/results/study/b35 benchmarks/results/forecast_runs/micro-1 \
        --skip "b35:Stage 0" "b35:Stage 1 g0 LF" "b35:Stage 1 g0 HF" --out benchmarks/results/forecast_cpu.json

(forecast_runs/micro-1: a micro run's config and `benchmark:` files, kept for this fit.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MICRO = {"source": "micro", "id": None, "revision": None, "micro": {
    "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "vocab_size": 512, "max_position_embeddings": 512}}
START = ("import time,resource; from autoqra.quant import BaseModel; import autoqra.evaluate, peft; "
         "BaseModel({path!r}); print(resource.getrusage(resource.RUSAGE_SELF).ru_utime"
         "+resource.getrusage(resource.RUSAGE_SELF).ru_stime)")


def start_seconds(model_dir: Path) -> float:
    """CPU seconds of a fresh process importing the job stack and loading the model."""
    out = subprocess.run([sys.executable, "-c", START.format(path=str(model_dir))], capture_output=True, text=True,
                         check=True)
    return float(out.stdout.strip().splitlines()[-1])


def measure(model_dir: Path, data_dir: Path, seq_len: int, steps: tuple[int, int]) -> dict:
    import torch

    from autoqra.evaluate import EvalSettings, score_model
    from autoqra.io import read_jsonl
    from autoqra.memory import ModelShape
    from autoqra.plan import Plan
    from autoqra.quant import BaseModel, build
    from autoqra.train import Fidelity, TrainSettings, train_lora

    torch.set_num_threads(1)
    shape = ModelShape.from_path(model_dir)
    n = shape.n_blocks
    g = 32 if shape.hidden_size < 128 else 64
    plans = {"lora16": Plan.uniform(n, 16, 8, "none", g, 0), "nf4": Plan.uniform(n, 4, 8, "nf4", g, 0),
             "hqq_mixed": Plan(tuple((2, 3, 4, 8)[i % 4] for i in range(n)), (8,) * n, ("hqq",) * n, g, 0)}
    base = BaseModel(model_dir)
    train = list(read_jsonl(data_dir / "train.jsonl"))
    val = list(read_jsonl(data_dir / "validation.jsonl"))[:64]
    settings = TrainSettings(lr=1e-3, batch_size=4, max_seq_len=seq_len, progress=False)
    rows = {}
    with tempfile.TemporaryDirectory() as cache:
        for name, plan in plans.items():
            row = {}
            for phase in ("cold", "warm"):
                t = time.process_time()
                built = build(model_dir, plan, cache_dir=cache, lora_dropout=0.05, alpha_per_rank=2.0, seed=0,
                              base=base)
                row[f"build_{phase}_s"] = time.process_time() - t
            res = {}
            for k in steps:
                t = time.process_time()
                r = train_lora(built.model, built.tokenizer, train, Fidelity("x", steps=k), settings, 0)
                res[k] = (time.process_time() - t, r.tokens)
            (t1, tok1), (t2, tok2) = res[steps[0]], res[steps[1]]
            row["train_s_per_step"] = (t2 - t1) / (steps[1] - steps[0])
            row["train_tokens_per_step"] = (tok2 - tok1) / (steps[1] - steps[0])
            row["train_tokens_per_s"] = row["train_tokens_per_step"] / row["train_s_per_step"]
            t = time.process_time()
            sc = score_model(built.model, built.tokenizer, val, EvalSettings(batch_size=16, metric="neg_loss",
                                                                            max_seq_len=seq_len))
            row["score_s"] = time.process_time() - t
            row["score_examples"] = len(val)
            row["score_loss"] = sc["loss"]
            rows[name] = row
            del built
    return {"shape": shape.__dict__, "seq_len": seq_len, "plans": rows}


# Every per-job constant of the forecast (autoqra.forecast.core.FEATURES) is fitted; the cold-quantization
# rate comes from Stage 0's rows, so runs whose Stage 0 was read back from a shared cache must --skip it.
# Fit runs of more than one model size (the study's SmolLM2 runs and a micro run): with one size a job's
# start and its per-GB load cannot be told apart, and a micro job would be charged a large model's set-up.


def stage_features(run_dir: Path, dev) -> dict[str, dict]:
    """Per stage of the run's config (``run_dir/config.yaml``): its jobs and the sum of their features."""
    from autoqra.forecast import load_forecast_config
    from autoqra.forecast.core import _stage_key, job_features
    from autoqra.forecast.shapes import model_shape
    from autoqra.forecast.stages import model_phases

    cfg = load_forecast_config(run_dir / "config.yaml", base_dir=run_dir)
    (name, spec), = cfg["models"].items()
    shape, _ = model_shape(name, spec, run_dir)
    out: dict[str, dict] = {}
    for ph in model_phases(cfg, shape):
        f = job_features(ph, cfg, shape, dev, 4.0)
        st = out.setdefault(_stage_key(ph.stage), {"jobs": 0, "features": dict.fromkeys(f, 0.0)})
        st["jobs"] += ph.jobs
        for k, v in f.items():
            st["features"][k] += ph.jobs * v
    return out


def fit_runs(runs: list[Path], skip: set[tuple[str, str]], dev, min_wall: float = 20.0) -> dict:
    """NNLS of the relative error per (run, stage) over the forecast's constants (rates as their inverse);
    stages that took under ``min_wall`` seconds are left out (their wall is mostly Snakemake's)."""
    import numpy as np
    from forecast_check import measured
    from scipy.optimize import nnls

    from autoqra.forecast.core import FEATURES

    rows, names = [], []
    for run in runs:
        meas = measured(run)
        for stage, st in stage_features(run, dev).items():
            m = meas.get(stage)
            if (run.name, stage) in skip or not m or not m["jobs"] or m["wall_s"] < min_wall:
                continue
            k = m["jobs"] / st["jobs"]  # copied jobs left out (their stage's jobs are alike)
            f = st["features"]
            rows.append([k * f[c] / m["wall_s"] for c in FEATURES])
            names.append({"run": str(run), "stage": stage, "jobs": m["jobs"], "copied": m["copied"],
                          "wall_s": m["wall_s"]})
    if len(rows) < len(FEATURES):
        raise SystemExit(f"--fit-runs: {len(rows)} measured stages of >= {min_wall:.0f} s in {[str(r) for r in runs]}; "
                         f"need at least {len(FEATURES)} to fit {FEATURES}")
    A = np.array(rows)
    x, _ = nnls(A, np.ones(len(rows)))
    pred = A @ x
    for n, r in zip(names, pred, strict=True):
        n["fitted_rel_error"] = float(r - 1.0)
    const = {c: (1.0 / v if c.endswith("_flops") else v) if v > 0 else (float("inf") if c.endswith("_flops") else 0.0)
             for c, v in zip(FEATURES, x, strict=True)}
    return {"constants": {c: float(v) for c, v in const.items()}, "runs": [str(r) for r in runs],
            "skipped": sorted(f"{r}:{s}" for r, s in skip), "rows": names,
            "rms_rel_error": float(np.sqrt(np.mean((pred - 1.0) ** 2)))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm2", type=Path)
    ap.add_argument("--data", type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--fit-runs", nargs="+", type=Path, default=None,
                    help="finished run directories (each holding config.yaml and results/benchmarks) to fit to")
    ap.add_argument("--skip", nargs="*", default=[], help='"RUN:STAGE" rows to leave out of the fit (e.g. read '
                    "back from a shared cache)")
    args = ap.parse_args()
    from autoqra.io import atomic_write_json
    from autoqra.manifest import build_manifest

    if args.fit_runs:
        from autoqra.forecast.devices import cpu_from_calibration

        cal = json.loads(args.out.read_text())
        cal.pop("fit", None)
        skip = {tuple(s.split(":", 1)) for s in args.skip}
        fit = fit_runs(args.fit_runs, skip, cpu_from_calibration(cal))
        fit["manifest"] = build_manifest(stage="forecast_calibrate_fit",
                                         config={k: str(v) for k, v in vars(args).items()})
        cal["fit"] = fit
        atomic_write_json(args.out, cal)
        print(json.dumps({k: fit[k] for k in ("constants", "rms_rel_error")}, indent=1))
        for r in fit["rows"]:
            print(f"  {Path(r['run']).name:<8} {r['stage']:<28} {r['jobs']:>3} jobs {r['wall_s']:>8.1f} s  "
                  f"fitted {r['fitted_rel_error']:+.0%}")
        return
    if not (args.smollm2 and args.data):
        ap.error("--smollm2 and --data are required (or --fit-runs)")
    args.work = args.work or Path(tempfile.mkdtemp(prefix="forecast-cal-"))
    from autoqra.models import prepare_model

    micro_dir = args.work / "micro"
    if not (micro_dir / "config.json").exists():
        prepare_model(MICRO, micro_dir, seed=0)
    out = {"what": __doc__.split("\n\n")[1].strip(), "models": {}}
    for name, path, seq, steps in (("micro", micro_dir, 96, (2, 8)), ("smollm2-135m", args.smollm2, 64, (2, 6))):
        out["models"][name] = {"start_cpu_s": start_seconds(path), **measure(path, args.data, seq, steps)}
        print(name, json.dumps(out["models"][name], indent=1), flush=True)
    out["manifest"] = build_manifest(stage="forecast_calibrate", config={k: str(v) for k, v in vars(args).items()})
    atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()
