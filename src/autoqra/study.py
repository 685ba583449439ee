"""The study (``config/study.yaml``, ``autoqra study``): the same Snakefile run once per memory budget
into its own directory, all runs sharing one ``cache_dir``, then one combine step that writes the
study's tables under ``study.out_dir`` (default benchmarks/results/study/).

Why two runs rather than a budget wildcard: the pipeline has one budget per config by design (every
search, plan and table is "at the budget"); running it per budget changes no rule, and the shared
evaluation cache (keyed by plan, fidelity, seed and settings, not by directory) means that plans
and Stage-0 results common to both budgets are trained once. Methods whose plan does not depend on
the budget (uniform baselines, the untuned base: ``study.shared_methods``) run only in the first
budget's directory and are pooled into every budget's tables by the combine step, which recomputes
the paired bootstrap over the pooled per-document results (the pooled runs are the same plans,
seeds and settings, so they are the same runs).

Combine outputs, per budget ``<name>`` (e.g. ``b3``): ``<name>/results/...`` (the run's raw data,
``RAW_PATTERNS``: the run's config.yaml, per-document results as ``docs.tsv.gz``, every final plan, priors, search, refine,
pick, random and optuna histories, training/lm-eval records and measured times), ``<name>/paper_figures``
(a copy of that run's tables and figures), ``<name>/aggregate.tsv`` and ``<name>/uncertainty.tsv``
(pooled), and at the top level ``table1_main``, ``table3_ablations``
and ``table5_claims`` (.csv/.tex/.md) over all budgets (``Model`` column = "model @ budget"),
``uncertainty.tsv`` and ``study.json`` (wall time per run, commands, budgets; ``--combine-only``
keeps the wall times a previous full run measured). The tables are always built from the copied raw
data, never from the run directories, so ``--combine-only`` rebuilds every table from the committed
files alone.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from autoqra.config import REPO_ROOT, deep_merge, load_yaml, validate_config
from autoqra.errors import ConfigError
from autoqra.io import atomic_write_json, atomic_write_text
from autoqra.memory import GB

DEFAULT_STUDY = {"budgets": {"b3": {"type": "uniform", "bits": 3, "rank": 8},
                             "b4": {"type": "uniform", "bits": 4, "rank": 8}},
                 "shared_methods": [], "ablation_budgets": None, "ablation_run": "same", "work_dir": "results/study",
                 "out_dir": "benchmarks/results/study"}


def study_settings(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The ``study`` section with defaults; ConfigError naming the key on a bad value."""
    st = deep_merge(DEFAULT_STUDY, cfg.get("study") or {})
    if "budgets" in (cfg.get("study") or {}):
        st["budgets"] = dict(cfg["study"]["budgets"])
    if not st["budgets"]:
        raise ConfigError("config key 'study.budgets': expected at least one budget")
    unknown = [m for m in st["shared_methods"] if m not in cfg["methods"]]
    if unknown:
        raise ConfigError(f"config key 'study.shared_methods': {unknown} are not methods (methods: {sorted(cfg['methods'])})")
    if st["ablation_budgets"] is None:
        st["ablation_budgets"] = list(st["budgets"])
    stray = [b for b in st["ablation_budgets"] if b not in st["budgets"]]
    if stray:
        raise ConfigError(f"config key 'study.ablation_budgets': {stray} are not budgets (budgets: {list(st['budgets'])})")
    bad = [m for m in st["shared_methods"] if cfg["methods"][m]["plan"] not in ("uniform", "base")]
    if bad:
        raise ConfigError(f"config key 'study.shared_methods': {bad} have budget-dependent plans; only uniform and "
                          "base methods can be shared between budgets")
    return st


def budget_configs(cfg: Mapping[str, Any], root: Path) -> dict[str, dict[str, Any]]:
    """One pipeline config per budget: the study config with that budget, the shared cache (absolute),
    after the first budget without the shared methods, and outside ``study.ablation_budgets``
    without the ablations (and the search variants only they use)."""
    st = study_settings(cfg)
    cache = str((root / st["work_dir"] / "cache").resolve())
    out = {}
    for i, (name, budget) in enumerate(st["budgets"].items()):
        c = {k: v for k, v in cfg.items() if k != "study"}
        c = deep_merge(c, {"cache_dir": cache})
        c["budget"] = dict(budget)
        if i > 0:
            c["methods"] = {m: s for m, s in cfg["methods"].items() if m not in st["shared_methods"]}
        separate = name in st["ablation_budgets"] and st["ablation_run"] == "separate"
        if name not in st["ablation_budgets"] or separate:
            out[name] = _keep_methods(c, lambda s: s.get("group") != "ablation")
        else:
            out[name] = c
        if separate:  # AutoQRA (the ablations' reference, read back from the shared cache) + the ablations
            abl = _keep_methods(c, lambda s: s.get("group") in ("autoqra", "ablation"))
            abl["optuna_search"] = {**abl.get("optuna_search", {}), "enabled": False}
            out[ablation_run_name(name)] = abl
    return out


ABLATIONS_SUFFIX = "-ablations"


def ablation_run_name(budget: str) -> str:
    """The run holding ``budget``'s ablations when ``study.ablation_run`` is "separate"."""
    return f"{budget}{ABLATIONS_SUFFIX}"


def _keep_methods(c: Mapping[str, Any], keep) -> dict[str, Any]:
    """``c`` with only the methods ``keep(spec)`` accepts, and only the search variants they use."""
    c = dict(c)
    c["methods"] = {m: s for m, s in c["methods"].items() if keep(s)}
    used = {s["variant"] for s in c["methods"].values() if s.get("plan") == "search"}
    c["search"] = {**c["search"], "variants": {v: s for v, s in c["search"]["variants"].items() if v in used}}
    return c


def run_study(config_path: str | os.PathLike, *, cores: int = 2, root: str | os.PathLike = ".",
              snakemake_args: Sequence[str] = (), combine_only: bool = False,
              budgets: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the pipeline per budget (``snakemake --directory <work_dir>/<budget>``), then ``combine``.

    ``budgets``: run only these (the study can span sessions: each budget's run resumes where it
    stopped); the other budgets enter the tables from the raw data an earlier invocation copied to
    ``study.out_dir``, and are left out where there is none. A budget's ``wall_seconds`` is the sum over
    every invocation that ran it (``<work_dir>/<budget>/wall.json``), so a resumed run reports its
    whole cost."""
    root = Path(root).resolve()
    cfg = validate_config(load_yaml(config_path), base_dir=root)
    st = study_settings(cfg)
    configs = budget_configs(cfg, root)
    unknown = sorted(set(budgets or ()) - set(configs))
    if unknown:
        raise ConfigError(f"--budgets: {unknown} are not budgets of study.budgets (expected some of {list(configs)})")
    for name, c in configs.items():  # every budget's config, before the first (hour-long) run starts
        try:
            validate_config(c, base_dir=root)
        except ConfigError as e:
            raise ConfigError(f"config key 'study.budgets.{name}' gives an invalid pipeline config: {e}") from None
    out_dir = root / st["out_dir"]
    previous = _previous_runs(out_dir / "study.json")
    ablation_runs = ({ablation_run_name(b) for b in st["ablation_budgets"]} if st["ablation_run"] == "separate"
                     else set())
    runs = {}
    for name, c in configs.items():
        work = root / st["work_dir"] / name
        cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "--directory", str(work),
               "--configfile", str(work / "config.yaml"), "--cores", str(cores), *snakemake_args]
        entry = {"dir": str(work), "budget": c["budget"], "command": [_shown(a) for a in cmd],
                 **({"role": "ablations"} if name in ablation_runs else {})}
        if budgets is not None and name not in budgets:
            if (out_dir / name / "results").is_dir():  # collected by an earlier invocation
                runs[name] = {**entry, **{k: v for k, v in previous.get(name, {}).items()
                                          if k in ("wall_seconds", "invocations")}, "collect": False}
            continue
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(work / "config.yaml", yaml.safe_dump(c, sort_keys=False))
        if combine_only:
            runs[name] = {**entry, "wall_seconds": None, "collect": False}
            continue
        t0, started = time.perf_counter(), time.strftime("%Y-%m-%dT%H:%M:%S%z")
        res = subprocess.run(cmd, cwd=REPO_ROOT)
        walls = _record_invocation(work, started, time.perf_counter() - t0, res.returncode == 0)
        if res.returncode != 0:
            raise RuntimeError(f"study: the pipeline for budget {name!r} failed (exit {res.returncode}); "
                               f"log under {work}/.snakemake/log; re-run the same command to resume")
        runs[name] = {**entry, "wall_seconds": sum(w["seconds"] for w in walls), "invocations": walls, "collect": True}
    first = next(iter(configs))
    if st["shared_methods"] and first not in runs:
        raise ConfigError(f"--budgets: budget {first!r} holds the shared methods {st['shared_methods']} and has no "
                          f"run or collected raw data yet; run it first")
    return combine(runs, cfg, out_dir, shared=st["shared_methods"], collect=not combine_only)


def _previous_runs(study_json: Path) -> dict[str, dict[str, Any]]:
    try:
        return json.loads(study_json.read_text())["runs"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _record_invocation(work: Path, started: str, seconds: float, ok: bool) -> list[dict[str, Any]]:
    """Append one invocation of a budget's run to ``<work>/wall.json``; returns all of them."""
    path = work / "wall.json"
    try:
        walls = json.loads(path.read_text())
    except (OSError, ValueError):
        walls = []
    walls.append({"started": started, "seconds": seconds, "completed": ok})
    atomic_write_json(path, walls)
    return walls


def _shown(arg: str) -> str:
    """A command argument as study.json records it: paths inside the repository relative to it (the
    committed study.json then names no machine's directories)."""
    p = Path(arg)
    if p.is_absolute() and p.is_relative_to(REPO_ROOT):  # not resolved: the venv's python links outside
        return os.path.relpath(p, REPO_ROOT)
    return arg


def kept_wall_times(runs: Mapping[str, Mapping[str, Any]], previous: Path) -> dict[str, dict[str, Any]]:
    """``runs`` with each wall time that this invocation did not measure (``--combine-only``) taken from
    the ``study.json`` a previous invocation wrote, so redrawing the tables never erases the measured times."""
    old = _previous_runs(previous)
    out = {}
    for name, r in runs.items():
        prev = old.get(name) or {}
        out[name] = {**r, "wall_seconds": r.get("wall_seconds") if r.get("wall_seconds") is not None
                     else prev.get("wall_seconds")}
        if "invocations" not in r and "invocations" in prev:
            out[name]["invocations"] = prev["invocations"]
    return out


# The raw data a combine step copies from each budget's run directory into ``<out_dir>/<budget>/``
# (same relative paths, so the tables read them as they read a run directory): per-document
# results, every final plan, priors, search/refine/pick/random/optuna histories, the training and
# lm-eval records and the measured benchmark times. ``docs.tsv`` and any file over COMPRESS_BYTES
# are stored gzip-compressed (``name.gz``; pandas reads either).
RAW_PATTERNS = ("config.yaml", "results/summary/*.tsv", "results/memory/*/*", "results/methods/*/*/plan.json",
                "results/methods_hf/*.tsv", "results/sensitivity/*/*.tsv", "results/sensitivity/*/*.json",
                "results/search/*/*/*.json", "results/search/*/*/*.tsv", "results/search/*/*/g*/*.jsonl",
                "results/refine/*/*/t*/*.jsonl", "results/final/*/*/*.json", "results/final/*/*/pick/*",
                "results/random/*/*.json", "results/random/*/*.jsonl", "results/random/*/pick/*",
                "results/optuna/*/*.json", "results/finetune/*/*/s*/train.json", "results/lm_eval/*/*/s*.json",
                "results/benchmarks/*/*.tsv", "results/benchmarks/*/*/*.tsv", "results/benchmarks/*/*/*/*.tsv")
ALWAYS_COMPRESSED = ("docs.tsv",)
COMPRESS_BYTES = 1 << 20


def copy_raw(run_dir: Path, dest: Path) -> list[str]:
    """Copy a run's raw data (``RAW_PATTERNS``) to ``dest``; returns the relative paths written."""
    written = []
    for pattern in RAW_PATTERNS:
        for src in sorted(run_dir.glob(pattern)):
            if not src.is_file():
                continue
            rel = src.relative_to(run_dir)
            data = src.read_bytes()
            if src.name in ALWAYS_COMPRESSED or len(data) > COMPRESS_BYTES:
                rel, data = rel.with_name(rel.name + ".gz"), gzip.compress(data, mtime=0)
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
            written.append(str(rel))
    return written


def summary_table(run_dir: Path, table: str) -> Path:
    """``results/summary/<table>`` of a run or raw-data directory, plain or gzip-compressed."""
    for p in (run_dir / "results/summary" / table, run_dir / "results/summary" / f"{table}.gz"):
        if p.is_file():
            return p
    raise FileNotFoundError(f"{run_dir}/results/summary/{table}(.gz): missing; run the study without --combine-only "
                            "to collect its raw data")


def _pooled(dirs: Mapping[str, Path], name: str, first: str, shared: Sequence[str], table: str) -> pd.DataFrame:
    """Budget ``name``'s summary ``table`` with the shared methods' rows taken from the first budget."""
    own = pd.read_csv(summary_table(dirs[name], table), sep="\t")
    if name == first or not shared:
        return own
    other = pd.read_csv(summary_table(dirs[first], table), sep="\t")
    pooled = other[other["method"].isin(shared)].copy()
    if "within_budget" in pooled.columns:  # judged against THIS budget, not the first one's
        budget = {m: json.loads((dirs[name] / "results/memory" / m / "budget.json").read_text())["plan_bytes"]
                  for m in pooled["model"].unique()}
        pooled["within_budget"] = [bool(gb * GB <= budget[m] * (1 + 1e-5))  # the TSV keeps 6 digits
                                   for m, gb in zip(pooled["model"], pooled["memory_gb_analytic"], strict=True)]
    return pd.concat([own[~own["method"].isin(shared)], pooled], ignore_index=True)


def pooled_bits_rank_rows(raw: Mapping[str, Path], models: Sequence[str]) -> list[dict[str, str]]:
    """Claim 6 once more over every budget's distinct final plans (variants × budgets), priors controlled."""
    from autoqra.report.claims import bits_rank_row
    from autoqra.report.load import read_json, read_priors

    rows = []
    for m in models:
        plans = [read_json(p, ["bits", "ranks"]) for d in raw.values()
                 for p in sorted((d / "results/methods" / m).glob("*/plan.json"))]
        pri = next((d / "results/sensitivity" / m / "priors.tsv" for d in raw.values()
                    if (d / "results/sensitivity" / m / "priors.tsv").is_file()), None)
        imp = None
        if pri is not None:
            df = read_priors(pri).sort_values("block")
            imp = (df["iq_norm"].to_numpy(float), df["ir_norm"].to_numpy(float))
        rows.append(bits_rank_row(f"{m} @ all budgets", plans, imp))
    return rows


def shared_run_counts(raw_dir: Path) -> dict[str, int]:
    """How many of a budget's fine-tunes and lm-eval runs were copies of an identical run
    (``shared_from``, :mod:`autoqra.runstore`) rather than computed."""
    out = {}
    for kind, pattern in (("finetune", "results/finetune/*/*/s*/train.json"), ("lm_eval", "results/lm_eval/*/*/s*.json")):
        files = sorted(raw_dir.glob(pattern))
        out[kind] = len(files)
        out[f"{kind}_copied"] = sum(1 for f in files if "shared_from" in json.loads(f.read_text()))
    return out


def job_seconds(raw_dir: Path) -> dict[str, float]:
    """A budget's jobs summed from their ``benchmark:`` files: wall seconds and CPU seconds. On a shared
    machine the run's wall time grows with the neighbours' load; the CPU seconds do not."""
    wall = cpu = 0.0
    n = 0
    for f in sorted((raw_dir / "results/benchmarks").rglob("*.tsv")):
        df = pd.read_csv(f, sep="\t")
        if len(df):
            wall += float(df["s"].iloc[-1])
            cpu += float(df["cpu_time"].iloc[-1]) if "cpu_time" in df.columns else 0.0
            n += 1
    return {"jobs": n, "wall_seconds": wall, "cpu_seconds": cpu}


def combine(runs: Mapping[str, Mapping[str, Any]], cfg: Mapping[str, Any], out_dir: str | os.PathLike,
            shared: Sequence[str] = (), collect: bool = True) -> dict[str, Any]:
    """The study's tables (see the module docstring). ``collect``: first copy each run directory's raw
    data into ``<out_dir>/<budget>/``; either way the tables are built from those copies alone, so
    ``autoqra study --combine-only`` (``collect=False``) rebuilds them from the committed files."""
    from autoqra.pipeline.summarize import references
    from autoqra.report.claim_inputs import claim_rows_from_dir
    from autoqra.report.claims import claims_frame
    from autoqra.report.load import read_aggregate
    from autoqra.report.tables import markdown_table, table_ablations, table_main, write_table
    from autoqra.report.uncertainty import bootstrap_all, plan_hashes_of

    out = Path(out_dir)
    raw = {name: out / name for name in runs}
    copied = {}
    if collect:
        for name, r in runs.items():
            if not r.get("collect", True):  # not run by this invocation: its earlier copy stands
                continue
            copied[name] = len(copy_raw(Path(r["dir"]), raw[name]))
            figs = Path(r["dir"]) / "paper_figures"
            if figs.is_dir():
                shutil.copytree(figs, raw[name] / "paper_figures", dirs_exist_ok=True)
    first = next(iter(raw))
    methods, models = cfg["methods"], sorted(cfg["models"])
    t1, t3, t5, uncs = [], [], [], []
    for name, d in raw.items():
        # an ablations-only run (study.ablation_run: separate) gives Table 3's rows only: its AutoQRA is
        # its budget run's, read back from the shared cache
        ablations_only = runs[name].get("role") == "ablations"
        pool = () if ablations_only else shared
        docs = _pooled(raw, name, first, pool, "docs.tsv")
        agg_path = out / name / "aggregate.tsv"
        agg_path.parent.mkdir(parents=True, exist_ok=True)
        pooled = _pooled(raw, name, first, pool, "aggregate.tsv")
        atomic_write_text(agg_path, pooled.to_csv(sep="\t", index=False))
        agg = read_aggregate(agg_path)
        rolling = {t: ["nats_per_token"] for t in docs.loc[docs["metric"] == "tokens", "task"].unique()}
        unc = bootstrap_all(docs, {m: references(methods) for m in docs["model"].unique()}, plan_hashes_of(pooled),
                            extra=rolling)
        unc_path = out / name / "uncertainty.tsv"
        atomic_write_text(unc_path, unc.to_csv(sep="\t", index=False, float_format="%.6g"))
        label = {m: f"{m} @ {name}" for m in models}
        t3.append(table_ablations(agg, methods, models, unc).replace({"Model": label}))
        uncs.append(unc.assign(budget=name))
        if ablations_only:
            continue
        t1.append(table_main(agg, methods, models, unc).replace({"Model": label}))
        for m in models:
            t5 += [{**row, "Model": label[m]} for row in claim_rows_from_dir(m, d, agg_path, unc_path, cfg)]
    t5 += pooled_bits_rank_rows(raw, models)
    for stem, df in (("table1_main", pd.concat(t1, ignore_index=True)),
                     ("table3_ablations", pd.concat(t3, ignore_index=True)), ("table5_claims", claims_frame(t5))):
        write_table(df, out / f"{stem}.csv", out / f"{stem}.tex")
        atomic_write_text(out / f"{stem}.md", markdown_table(df))
    atomic_write_text(out / "uncertainty.tsv",
                      pd.concat(uncs, ignore_index=True).to_csv(sep="\t", index=False, float_format="%.6g"))
    runs = kept_wall_times(runs, out / "study.json")
    summary = {"runs": {k: {**{a: b for a, b in v.items() if a != "collect"},
                            "dir": os.path.relpath(v["dir"], REPO_ROOT), "raw_data": f"{k}/results",
                            **({"raw_files": copied[k]} if k in copied else {})} for k, v in runs.items()},
               "shared_methods": list(shared), "models": models, "methods": sorted(methods),
               "shared_runs": {k: shared_run_counts(d) for k, d in raw.items()},
               "job_seconds": {k: job_seconds(d) for k, d in raw.items()},
               "total_wall_seconds": sum(r["wall_seconds"] or 0.0 for r in runs.values())}
    atomic_write_json(out / "study.json", summary)
    return summary
