"""Tidy result tables (rule summarize) from the fine-tuning records, lm-eval outputs and searches:

- ``results.tsv``: one row per (model, method, seed, task, metric) with the run's memory (GB,
  analytic M(C) and measured bytes of the same part), average bits/rank, stored bits per weight incl.
  quantization metadata (``bits_stored``, from the memory model), trainable parameters,
  train time and throughput. An ``average`` task holds the mean of each task's main metric.
- ``aggregate.tsv``: the same, mean and std over seeds.
- ``docs.tsv``: every document's metric values of every run (from the lm-eval ``.docs.tsv`` files);
- ``uncertainty.tsv``: 95 % intervals over documents (bootstrap) and seeds (t-based, paired across
  methods with the same seed list) of each method's main metric per task and task average, and of
  its difference to the model's first AutoQRA method; methods with AutoQRA's plan hash get Δ exactly
  0 and ``same_plan_as`` (``autoqra.report.uncertainty``).
- ``search_cost.tsv``: evaluations (LF/HF, trained vs cached) and device seconds per stage and
  variant: ``device_seconds`` is what the stage costs on its own (cached evaluations count with
  their original time), ``trained_device_seconds`` what this run paid (the evaluation cache is
  shared across searches, so only the latter sums to the run's cost); ``hf_equivalents`` the
  stage's evaluation cost in HF evaluations (``autoqra.search.cost``: LF counted by its work), the
  unit in which the random and optuna searchers are given AutoQRA's cost.

pandas only; no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from autoqra import taskmetrics
from autoqra.io import atomic_write_json, atomic_write_text, read_jsonl
from autoqra.lmeval import tidy_results
from autoqra.manifest import build_manifest
from autoqra.report.uncertainty import DOC_COLUMNS, N_BOOT, bootstrap_all, plan_hashes_of

GB = 1e9
RUN_COLUMNS = ["memory_gb_analytic", "memory_gb_measured", "fixed_gb", "peak_train_gb", "peak_train_predicted_gb",
               "quantizers", "avg_bits", "bits_stored", "avg_rank", "trainable_params", "train_seconds", "tokens_per_s",
               "steps", "plan_hash", "within_budget"]


def main_metric(metrics: Sequence[str], task: str = "") -> str:
    """The metric a task is reported by (``autoqra.taskmetrics.main_metric``)."""
    return taskmetrics.main_metric(task, metrics)


def references(methods: Mapping[str, Mapping]) -> str | None:
    """The method differences are taken against: the first of group ``autoqra`` (config order)."""
    return next((m for m, spec in methods.items() if spec.get("group") == "autoqra"), None)


def read_docs(files: Sequence) -> pd.DataFrame:
    """Every run's per-document rows (``results/lm_eval/{model}/{method}/s{seed}.docs.tsv``)."""
    frames = []
    for f in files:
        df = pd.read_csv(f, sep="\t")
        parts = Path(f).parts
        model, method = parts[parts.index("lm_eval") + 1], parts[parts.index("lm_eval") + 2]
        seed = int(Path(f).name.split(".")[0].removeprefix("s"))
        frames.append(df.assign(model=model, method=method, seed=seed))
    if not frames:
        return pd.DataFrame(columns=DOC_COLUMNS)
    return pd.concat(frames, ignore_index=True)[DOC_COLUMNS]


def derived_rows(docs: pd.DataFrame) -> list[dict[str, Any]]:
    """nats_per_token of each run's rolling-loglikelihood tasks (lm-eval reports per word/byte only)."""
    rows = []
    if docs.empty:
        return rows
    for (model, method, seed, task), sub in docs.groupby(["model", "method", "seed", "task"]):
        per = {m: g["value"].to_numpy() for m, g in sub.groupby("metric")}
        if "loglikelihood" in per and "tokens" in per:
            rows.append({"model": model, "method": method, "seed": int(seed), "task": task,
                         "metric": "nats_per_token", "value": taskmetrics.corpus_value("nats_per_token", per),
                         "stderr": None})
    return rows


def _read(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def _model_of(path: str | os.PathLike, stage: str) -> str:
    parts = Path(path).parts
    return parts[parts.index(stage) + 1]


def run_rows(train_files: Sequence, lm_eval_files: Sequence, plan_files: Sequence,
             methods: Mapping[str, Mapping], docs: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (model, method, seed, task, metric), plus the per-seed ``average`` task (the
    mean of the higher-is-better tasks' main metrics; perplexity-type tasks are left out)."""
    derived: dict[tuple, list[dict]] = {}
    for r in derived_rows(docs if docs is not None else pd.DataFrame(columns=DOC_COLUMNS)):
        derived.setdefault((r["model"], r["method"], r["seed"]), []).append(
            {k: r[k] for k in ("task", "metric", "value", "stderr")})
    plans = {(_model_of(p, "methods"), Path(p).parent.name): _read(p) for p in plan_files}
    trains = {}
    for f in train_files:
        rec = _read(f)
        trains[(_model_of(f, "finetune"), rec["method"], int(rec["seed"]))] = rec
    rows = []
    for f in lm_eval_files:
        res = _read(f)
        model, method, seed = _model_of(f, "lm_eval"), res["method"], int(res["seed"])
        tr, plan = trains[(model, method, seed)], plans[(model, method)]
        spec = methods.get(method, {})
        run = {"memory_gb_analytic": tr["memory_analytic_bytes"] / GB,
               "memory_gb_measured": tr["memory_measured_bytes"] / GB, "fixed_gb": tr["fixed_bytes"] / GB,
               "peak_train_gb": tr["peak_train_bytes"] / GB,
               "peak_train_predicted_gb": (tr.get("peak_train_predicted_bytes") or float("nan")) / GB,
               "quantizers": tr.get("quantizers"), "avg_bits": tr["avg_bits"],
               "bits_stored": tr.get("bits_per_weight_stored", float("nan")),  # NaN: a record from before #22
               "avg_rank": tr["avg_rank"], "trainable_params": tr["trainable_params"], "train_seconds": tr["train_seconds"],
               "tokens_per_s": tr["tokens_per_s"], "steps": tr["steps"], "plan_hash": tr["plan_hash"],
               "within_budget": plan.get("meta", {}).get("within_budget")}
        head = {"model": model, "method": method, "group": spec.get("group", "baseline"),
                "label": spec.get("label") or method, "seed": seed}
        task_rows = tidy_results(res) + derived.get((model, method, seed), [])
        for r in task_rows:
            rows.append({**head, **r, **run})
        by_task: dict[str, dict[str, float]] = {}
        for r in task_rows:
            by_task.setdefault(r["task"], {})[r["metric"]] = r["value"]
        mains = [m[main_metric(list(m), task)] for task, m in by_task.items()
                 if not taskmetrics.lower_is_better(main_metric(list(m), task))]
        if mains:
            rows.append({**head, "task": "average", "metric": "main", "value": sum(mains) / len(mains),
                         "stderr": None, **run})
    cols = ["model", "method", "group", "label", "seed", "task", "metric", "value", "stderr", *RUN_COLUMNS]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["model", "group", "method", "task", "metric", "seed"], kind="stable").reset_index(drop=True)


def aggregate(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and (sample) std over seeds per (model, method, task, metric)."""
    keys = ["model", "method", "group", "label", "task", "metric"]
    if df.empty:
        return pd.DataFrame(columns=[*keys, "n_seeds", "mean", "std"])
    g = df.groupby(keys, sort=False, dropna=False)
    out = g["value"].agg(n_seeds="count", mean="mean", std="std").reset_index()
    firsts = g[["memory_gb_analytic", "memory_gb_measured", "quantizers", "avg_bits", "bits_stored", "avg_rank",
                "trainable_params", "plan_hash", "within_budget"]].first().reset_index(drop=True)
    means = g[["train_seconds", "tokens_per_s", "peak_train_gb", "peak_train_predicted_gb"]].mean().reset_index(drop=True)
    return pd.concat([out, firsts, means], axis=1)


def _secs(records: Sequence[Mapping]) -> float:
    return sum((r.get("build_seconds") or 0) + (r.get("train_seconds") or 0) + (r.get("eval_seconds") or 0)
               for r in records)


def _fresh_cost(records: Sequence[Mapping]) -> tuple[int, int, float, float]:
    """(records, trained records, device seconds of all records = the stage's cost on its own,
    device seconds of the records trained here). Cached records carry their original timings, so
    a stage that reused another stage's evaluations still shows what it would cost alone."""
    fresh = [r for r in records if not r.get("cached")]
    return len(records), len(fresh), _secs(records), _secs(fresh)


def _hf_eq(records: Sequence[Mapping], n_val: int | None, unit: float | None) -> float | None:
    """The records' cost in HF-equivalents, in the unit of the variant's Stage-1 HF evaluations."""
    if unit is None or not records:
        return None
    from autoqra.search.cost import hf_equivalents

    return hf_equivalents(records, n_val, unit)["hf_equivalents"]


def _pick_rows(final_dir: Path) -> list[tuple[str, list[dict]]]:
    """A variant's pick re-evaluations: those of its final pick (part of the variant's cost) and
    those only the Stage-1-only pick needed (paid for the "w/o Stage 2" method)."""
    phase = final_dir / "pick" / "hf.json"
    if not phase.is_file():
        return []
    from autoqra.pipeline.pick import FINAL

    doc = _read(phase)
    recs = {int(r["index"]): r for r in _jsonl(sorted(final_dir.glob("pick/hf-shard*.jsonl")))}
    n = len(doc["reevaluation_seeds"])
    final = [recs[i] for i in sorted(recs) if FINAL in doc["plans"][i // n]["sets"]]
    other = [recs[i] for i in sorted(recs) if FINAL not in doc["plans"][i // n]["sets"]]
    return [("search_pick", final), ("search_pick_stage1", other)]


def _jsonl(paths) -> list[dict]:
    return [rec for p in paths for rec in read_jsonl(p)]


def search_cost(front_files: Sequence, random_files: Sequence, sensitivity_files: Sequence,
                train_files: Sequence, optuna_files: Sequence = ()) -> pd.DataFrame:
    """Evaluations and device seconds per stage (trained = not served from the evaluation cache)."""
    rows = []
    for f in sensitivity_files:
        t = _read(f).get("timings", {})
        rows.append({"model": _model_of(f, "sensitivity"), "stage": "stage0_sensitivity", "variant": "",
                     "lf_evaluations": 0, "hf_evaluations": 0, "evaluations": 0, "trained": 0,
                     "device_seconds": float(t.get("total", 0.0)),
                     "trained_device_seconds": float(t.get("total", 0.0))})
    for f in front_files:
        d = Path(f).parent
        model, variant = _model_of(f, "search"), d.name
        recs = _jsonl(sorted(d.glob("g*/*-shard*.jsonl")))
        cost = _read(f).get("cost") or {}
        unit, n_val = cost.get("hf_unit"), cost.get("n_val")
        n, trained, secs, fresh = _fresh_cost(recs)
        rows.append({"model": model, "stage": "stage1_search", "variant": variant,
                     "lf_evaluations": sum(r["fidelity"] == "lf" for r in recs),
                     "hf_evaluations": sum(r["fidelity"] == "hf" for r in recs), "evaluations": n,
                     "trained": trained, "device_seconds": secs, "trained_device_seconds": fresh,
                     "hf_equivalents": _hf_eq(recs, n_val, unit)})
        final = Path(str(d).replace(f"{os.sep}search{os.sep}", f"{os.sep}final{os.sep}", 1))
        refine = _jsonl(sorted((Path(str(d).replace(f"{os.sep}search{os.sep}", f"{os.sep}refine{os.sep}", 1)))
                               .glob("t*/hf-shard*.jsonl")))
        for stage, more in (("stage2_refine", refine), *_pick_rows(final)):
            if more:
                n, trained, secs, fresh = _fresh_cost(more)
                rows.append({"model": model, "stage": stage, "variant": variant, "lf_evaluations": 0,
                             "hf_evaluations": n, "evaluations": n, "trained": trained, "device_seconds": secs,
                             "trained_device_seconds": fresh, "hf_equivalents": _hf_eq(more, n_val, unit)})
    for f in random_files:
        recs = _jsonl(sorted(Path(f).parent.glob("hf-shard*.jsonl")))
        recs += _jsonl(sorted(Path(f).parent.glob("pick/hf-shard*.jsonl")))
        n, trained, secs, fresh = _fresh_cost(recs)
        rows.append({"model": _model_of(f, "random"), "stage": "random_search", "variant": "", "lf_evaluations": 0,
                     "hf_evaluations": n, "evaluations": n, "trained": trained, "device_seconds": secs,
                     "trained_device_seconds": fresh, "hf_equivalents": float(n)})
    for f in optuna_files:
        doc = _read(f)
        recs = list(doc["trials"]) + list(doc.get("pick_records") or [])
        n, trained, secs, fresh = _fresh_cost(recs)
        rows.append({"model": _model_of(f, "optuna"), "stage": "optuna_search", "variant": doc["sampler"],
                     "lf_evaluations": 0, "hf_evaluations": n, "evaluations": n, "trained": trained,
                     "device_seconds": secs, "trained_device_seconds": fresh, "hf_equivalents": float(n)})
    per_model: dict[str, list] = {}
    for f in train_files:
        rec = _read(f)
        per_model.setdefault(_model_of(f, "finetune"), []).append(rec)
    for model, recs in per_model.items():
        secs = sum(r["build_seconds"] + r["train_seconds"] for r in recs)
        rows.append({"model": model, "stage": "finetune", "variant": "", "lf_evaluations": 0, "hf_evaluations": 0,
                     "evaluations": len(recs), "trained": len(recs), "device_seconds": secs,
                     "trained_device_seconds": secs})
    df = pd.DataFrame(rows, columns=["model", "stage", "variant", "lf_evaluations", "hf_evaluations", "evaluations",
                                     "trained", "device_seconds", "trained_device_seconds", "hf_equivalents"])
    df["device_hours"] = df["device_seconds"] / 3600
    df["trained_device_hours"] = df["trained_device_seconds"] / 3600
    return df


def write_tsv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    atomic_write_text(path, df.to_csv(sep="\t", index=False, float_format="%.6g"))


def summarize(inputs: Mapping[str, Sequence[str]], methods: Mapping[str, Mapping], outputs: Any,
              n_boot: int = N_BOOT) -> dict:
    """Write results/aggregate/search_cost TSVs and a manifest; return the tables."""
    docs = read_docs(inputs.get("docs", []))
    results = run_rows(inputs["train"], inputs["lm_eval"], inputs["plans"], methods, docs)
    agg = aggregate(results)
    ref = references(methods)
    rolling = {t: ["nats_per_token"] for t in docs.loc[docs["metric"] == "tokens", "task"].unique()}
    unc = bootstrap_all(docs, {m: ref for m in docs["model"].unique()}, plan_hashes_of(agg), extra=rolling,
                        n_boot=n_boot)
    cost = search_cost(inputs["fronts"], inputs.get("random", []), inputs["sensitivity"], inputs["train"],
                       inputs.get("optuna", []))
    write_tsv(results, outputs.results)
    write_tsv(agg, outputs.aggregate)
    write_tsv(cost, outputs.search_cost)
    if hasattr(outputs, "docs"):
        write_tsv(docs, outputs.docs)
    if hasattr(outputs, "uncertainty"):
        write_tsv(unc, outputs.uncertainty)
    atomic_write_json(outputs.manifest, build_manifest("summarize", {"methods": dict(methods)}, None,
                                                       inputs={k: list(v) for k, v in inputs.items()}))
    return {"results": results, "aggregate": agg, "search_cost": cost, "uncertainty": unc}
