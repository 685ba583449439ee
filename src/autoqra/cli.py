"""Command line: ``autoqra memory`` (memory breakdown of a plan), ``autoqra check-config``,
``autoqra forecast`` (what a config will cost) and
``autoqra study`` (the pipeline once per budget of config/study.yaml, then the study's tables)."""

from __future__ import annotations

import argparse
import json
import sys

from autoqra.errors import AutoQRAError

GB = 1e9


def _fmt_bytes(n: float) -> str:
    return f"{n / GB:9.4f} GB" if n >= 1e8 else f"{n / 2**20:9.2f} MiB"


def cmd_memory(args: argparse.Namespace) -> int:
    from autoqra.memory import MemoryModel, ModelShape, resolve_budget
    from autoqra.plan import Plan, quantizer_map

    shape = ModelShape.from_path(args.model)
    if args.plan:
        plan = Plan.load(args.plan).check(n_blocks=shape.n_blocks, source=args.plan)
    else:
        plan = Plan.uniform(shape.n_blocks, args.bits, args.rank, args.quantizer, args.group_size, args.hqq_axis,
                            args.meta_bits)
    mm = MemoryModel.for_plan(shape, plan, quantizer_map({4: args.budget_quantizer}))
    bd = mm.breakdown(plan)
    budget = resolve_budget({"type": "uniform", "bits": args.budget_bits, "rank": args.budget_rank}, mm)
    bd["budget"] = {"description": budget.description, "plan_bytes": budget.plan_bytes,
                    "fits": budget.fits(bd["plan_bytes"])}
    if args.json:
        json.dump(bd, sys.stdout, indent=2)
        print()
        return 0
    print(f"model: {args.model}  ({shape.model_type}, {shape.n_blocks} blocks, hidden {shape.hidden_size}, "
          f"heads {shape.n_heads}/{shape.n_kv_heads} kv, intermediate {shape.intermediate_size})")
    print(f"plan:  {args.plan or 'uniform'}  hash {plan.hash}  quantizers {plan.quantizer_label}  "
          f"HQQ group {plan.group_size} axis {plan.hqq_axis} meta_bits {plan.meta_bits}")
    print(f"{'block':>5} {'bits':>4} {'quant':>5} {'rank':>4} {'weights':>13} {'quant meta':>13} {'lora':>13} {'total':>13}")
    for b in bd["blocks"]:
        print(f"{b['block']:>5} {b['bits']:>4} {b['quantizer']:>5} {b['rank']:>4} {_fmt_bytes(b['weights'])} "
              f"{_fmt_bytes(b['quant_meta'])} {_fmt_bytes(b['lora'])} {_fmt_bytes(b['total'])}")
    p = bd["plan_parts"]
    print(f"{'M(C)':>21} {_fmt_bytes(p['weights'])} {_fmt_bytes(p['quant_meta'])} {_fmt_bytes(p['lora'])} "
          f"{_fmt_bytes(p['total'])}")
    print("fixed 16-bit part: " + ", ".join(f"{k} {_fmt_bytes(2 * v).strip()}" for k, v in bd["fixed_params"].items())
          + f"  = {_fmt_bytes(bd['fixed_bytes']).strip()}")
    stored_bits = 8 * (p["weights"] + p["quant_meta"]) / (shape.block_weight_params * shape.n_blocks)
    print(f"total: {_fmt_bytes(bd['total_bytes']).strip()}   average bits "
          f"{plan.average_bits([shape.block_weight_params] * shape.n_blocks):.3f} nominal, {stored_bits:.3f} stored "
          f"incl. metadata   trainable LoRA params "
          f"{bd['trainable_params']:,}")
    verdict = "fits" if bd["budget"]["fits"] else "EXCEEDS"
    print(f"budget ({budget.description}): {_fmt_bytes(budget.plan_bytes).strip()} -> plan {verdict}")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    from autoqra.config import load_config

    cfg = load_config(args.config, base_dir=args.base_dir)
    print(f"{args.config}: valid ({len(cfg['models'])} model(s): {', '.join(cfg['models'])})")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from autoqra.study import run_study

    budgets = [b for b in args.budgets.split(",") if b] if args.budgets else None
    summary = run_study(args.config, cores=args.cores, root=args.root, combine_only=args.combine_only,
                        snakemake_args=args.snakemake_args, budgets=budgets)
    for name, run in summary["runs"].items():
        wall = run["wall_seconds"]
        print(f"{name}: {run['dir']}" + ("" if wall is None else f"  ({wall / 60:.1f} min)"))
    print(f"tables: {args.config} -> see study.out_dir (study.json, table1_main, table3_ablations, table5_claims)")
    return 0


def cmd_forecast(args: argparse.Namespace) -> int:
    from autoqra.forecast import forecast, format_table, load_forecast_config
    from autoqra.forecast.resources import profile_devices
    from autoqra.io import atomic_write_json

    cfg = load_forecast_config(args.config, base_dir=args.base_dir)
    devices = args.devices or (profile_devices(args.profile) if args.profile else None)
    fc = forecast(cfg, device=args.device, devices=devices, workdir=args.base_dir, config_name=args.config)
    print(format_table(fc))
    if args.json:
        atomic_write_json(args.json, fc)
        print(f"written: {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from autoqra.plan import DEFAULT_HQQ_AXIS, QUANTIZERS

    ap = argparse.ArgumentParser(prog="autoqra", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    m = sub.add_parser("memory", help="memory breakdown of a plan for a model")
    m.add_argument("--model", required=True, help="model directory or config.json")
    m.add_argument("--plan", help="plan JSON; default: a uniform plan from --bits/--rank")
    m.add_argument("--bits", type=int, default=4)
    m.add_argument("--rank", type=int, default=8)
    m.add_argument("--quantizer", default=None, choices=list(QUANTIZERS),
                   help="uniform plan's quantizer (default: hqq, none at 16 bits)")
    m.add_argument("--group-size", type=int, default=128, help="HQQ group size")
    m.add_argument("--hqq-axis", type=int, default=DEFAULT_HQQ_AXIS, choices=[0, 1])
    m.add_argument("--meta-bits", type=int, default=16, choices=[16, 8], help="HQQ scale/zero precision")
    m.add_argument("--budget-bits", type=int, default=4, help="budget = uniform BITS at rank RANK")
    m.add_argument("--budget-rank", type=int, default=8)
    m.add_argument("--budget-quantizer", default="nf4", choices=["hqq", "nf4"],
                   help="the budget plan's 4-bit quantizer (QLoRA: nf4)")
    m.add_argument("--json", action="store_true", help="print the breakdown as JSON")
    m.set_defaults(func=cmd_memory)
    c = sub.add_parser("check-config", help="validate a pipeline config file")
    c.add_argument("config")
    c.add_argument("--base-dir", default=".", help="directory relative paths resolve against")
    c.set_defaults(func=cmd_check_config)
    s = sub.add_parser("study", help="run the pipeline once per budget of a study config, then combine the tables")
    s.add_argument("config", help="e.g. config/study.yaml")
    s.add_argument("--cores", type=int, default=2)
    s.add_argument("--root", default=".", help="repository root (relative paths of the config resolve here)")
    s.add_argument("--combine-only", action="store_true", help="only rebuild the tables from finished runs")
    s.add_argument("--budgets", default=None,
                   help="comma-separated budgets to run now (e.g. b4,b35); the others enter the tables from the raw "
                        "data an earlier invocation collected (the study can span sessions)")
    s.add_argument("snakemake_args", nargs="*", help="passed to snakemake after --, e.g. -- --keep-going")
    s.set_defaults(func=cmd_study)
    f = sub.add_parser("forecast", help="device-hours, memory, disk and wall time of a config before any job runs")
    f.add_argument("config", help="e.g. config/paper.yaml")
    f.add_argument("--device", help="device of the table (cpu, h100, h200, a100, l40s, rtx4090); default: h100 for "
                   "hub models, else cpu")
    f.add_argument("--devices", type=int, help="parallel devices (default: the profile's jobs, else 1 GPU / 2 CPU jobs)")
    f.add_argument("--profile", help="a Snakemake profile directory whose 'jobs' sets --devices (e.g. profiles/slurm)")
    f.add_argument("--json", help="also write the forecast as JSON to this file")
    f.add_argument("--base-dir", default=".", help="directory relative paths resolve against")
    f.set_defaults(func=cmd_forecast)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except AutoQRAError as e:
        print(f"autoqra {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
