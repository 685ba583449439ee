"""Forecast vs measured: `autoqra forecast`'s device-seconds per stage beside the `benchmark:` files
of a finished Snakemake run (results/benchmarks/<rule>/...tsv: wall seconds `s` and `cpu_time`).

    PYTHONPATH=src python benchmarks/forecast_check.py --config config/micro.yaml --run-dir . \
        --total-target 0.35 --out benchmarks/results/forecast_check.json
    # the default config after a full run (targets: 25 % per stage over 1 min, 15 % in total)
    PYTHONPATH=src python benchmarks/forecast_check.py --config config/config.yaml --run-dir RUN \
        --stage-target 0.25 --total-target 0.15 --out benchmarks/results/forecast_check.json

On a shared machine the wall seconds carry the neighbours' load; `cpu_time` (one thread per job)
does not, so both are compared (Snakemake samples cpu_time once a second, then every 30 s). The totals
sum the stages the run has measured. Jobs that copied an identical run (share_identical_runs) are
counted apart (``jobs_copied``) and the forecast is compared on the computed ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

STAGE_OF_RULE = {"sensitivity": "Stage 0", "search_reference": "Stage 0", "refine_evaluate": "Stage 2",
                 "final_evaluate": "Picks", "random_evaluate": "Baselines: random search",
                 "random_reevaluate": "Baselines: random search", "optuna_search": "Baselines: optuna",
                 "methods_hf": "Baselines: methods at HF", "finetune": "Fine-tuning", "lm_eval": "lm-eval"}


def stage_of(rule: str, path: Path) -> str:
    if rule == "search_evaluate":
        m = re.match(r"g(\d+)-(lf|hf)-\d+\.tsv", path.name)
        return f"Stage 1 g{m.group(1)} {m.group(2).upper()}"
    return STAGE_OF_RULE[rule]


def copied(run_dir: Path, rule: str, bench: Path) -> bool:
    """Whether the job behind ``bench`` copied an identical run's outputs (autoqra.runstore:
    ``shared_from`` in its result) instead of computing them."""
    rel = bench.relative_to(run_dir / "results" / "benchmarks" / rule).with_suffix("")
    out = {"finetune": run_dir / "results" / "finetune" / rel / "train.json",
           "lm_eval": run_dir / "results" / "lm_eval" / rel.with_suffix(".json")}.get(rule)
    try:
        return out is not None and "shared_from" in json.loads(out.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def measured(run_dir: Path) -> dict[str, dict[str, float]]:
    """Per stage: the computed jobs' count, wall and CPU seconds, and how many jobs were copies."""
    out: dict[str, dict[str, float]] = {}
    for f in sorted((run_dir / "results" / "benchmarks").rglob("*.tsv")):
        rule = f.relative_to(run_dir / "results" / "benchmarks").parts[0]
        if rule not in STAGE_OF_RULE and rule != "search_evaluate":
            continue
        rows = list(csv.DictReader(f.open(), delimiter="\t"))
        if not rows:
            continue
        st = out.setdefault(stage_of(rule, f), {"jobs": 0, "copied": 0, "wall_s": 0.0, "cpu_s": 0.0})
        if copied(run_dir, rule, f):
            st["copied"] += 1
            continue
        st["jobs"] += 1
        st["wall_s"] += float(rows[-1]["s"])
        st["cpu_s"] += float(rows[-1].get("cpu_time") or 0.0)
    return out


def forecast_seconds(st: dict, m: dict) -> float:
    """The forecast's device-seconds for the jobs the run computed: a stage with copied jobs
    (fine-tuning, lm-eval: one rule, jobs alike) is scaled to its computed ones."""
    f_s = st["device_hours"] * 3600
    if m.get("copied") and st["jobs"]:
        f_s *= m["jobs"] / st["jobs"]
    return f_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--run-dir", required=True, type=Path, help="the run's working directory (holds results/)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--stage-target", type=float, default=0.25)
    ap.add_argument("--total-target", type=float, default=0.15)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/forecast_check.json"))
    args = ap.parse_args()
    from autoqra.forecast import forecast, load_forecast_config
    from autoqra.io import atomic_write_json
    from autoqra.manifest import build_manifest

    cfg = load_forecast_config(args.config, base_dir=args.run_dir)
    fc = forecast(cfg, device=args.device, workdir=args.run_dir, config_name=args.config)
    meas = measured(args.run_dir)
    rows, tot = [], {"forecast_s": 0.0, "wall_s": 0.0, "cpu_s": 0.0, "jobs_forecast": 0, "jobs_measured": 0}
    for stage, st in fc["stages"].items():
        m = meas.get(stage, {"jobs": 0, "copied": 0, "wall_s": 0.0, "cpu_s": 0.0})
        f_s = forecast_seconds(st, m)
        row = {"stage": stage, "jobs_forecast": st["jobs"], "jobs_measured": m["jobs"],
               "jobs_copied": m["copied"], "forecast_s": f_s,
               "measured_wall_s": m["wall_s"], "measured_cpu_s": m["cpu_s"]}
        for k in ("wall", "cpu"):
            v = m[f"{k}_s"]
            row[f"rel_error_{k}"] = (f_s - v) / v if v else None
            row[f"within_target_{k}"] = None if v < 60 else abs(row[f"rel_error_{k}"]) <= args.stage_target
        rows.append(row)
        if not m["jobs"]:  # a stage the run has not reached (or skipped): not in the totals
            continue
        tot["forecast_s"] += f_s
        tot["wall_s"] += m["wall_s"]
        tot["cpu_s"] += m["cpu_s"]
        tot["jobs_forecast"] += st["jobs"]
        tot["jobs_measured"] += m["jobs"]
    for k in ("wall", "cpu"):
        v = tot[f"{k}_s"]
        tot[f"rel_error_{k}"] = (tot["forecast_s"] - v) / v if v else None
        tot[f"within_target_{k}"] = v > 0 and abs(tot[f"rel_error_{k}"]) <= args.total_target
    out = {"config": args.config, "run_dir": str(args.run_dir), "targets": {"stage": args.stage_target,
           "total": args.total_target}, "stages": rows, "total": tot, "unmatched_measured": sorted(set(meas) - set(fc["stages"])),
           "manifest": build_manifest(stage="forecast_check", config={k: str(v) for k, v in vars(args).items()})}
    atomic_write_json(args.out, out)
    print(f"{'stage':<28} {'jobs f/m':>9} {'forecast s':>11} {'wall s':>9} {'cpu s':>9} {'err wall':>9} {'err cpu':>8}")
    for r in rows:
        ew, ec = r["rel_error_wall"], r["rel_error_cpu"]
        print(f"{r['stage']:<28} {r['jobs_forecast']:>4}/{r['jobs_measured']:<4} {r['forecast_s']:>11.1f} "
              f"{r['measured_wall_s']:>9.1f} {r['measured_cpu_s']:>9.1f} "
              f"{'' if ew is None else f'{ew:+.0%}':>9} {'' if ec is None else f'{ec:+.0%}':>8}")
    print(json.dumps(tot))


if __name__ == "__main__":
    main()
