"""Readers of the pipeline's result files for the paper tables and figures (pandas only, no torch).

Each reader checks the columns/keys the report relies on and names the file and what is missing
(a truncated or older-format file must not turn into a silently empty figure). Optional inputs
(random search, optuna) are read with ``path=None`` meaning "not run".
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from autoqra.errors import AutoQRAError

PathLike = str | os.PathLike

AGGREGATE_COLUMNS = ["model", "method", "group", "label", "task", "metric", "n_seeds", "mean", "std",
                     "memory_gb_analytic", "memory_gb_measured", "avg_bits", "avg_rank", "trainable_params",
                     "train_seconds", "tokens_per_s", "peak_train_gb"]
SEARCH_COST_COLUMNS = ["model", "stage", "variant", "lf_evaluations", "hf_evaluations", "evaluations", "trained",
                       "device_hours"]
RECORD_COLUMNS = ["generation", "phase", "plan_hash", "status", "score", "memory_bytes"]
PRIOR_COLUMNS = ["block", "iq_norm", "ir_norm"]
METHODS_HF_COLUMNS = ["method", "group", "memory_bytes", "hf_score", "status"]
UNCERTAINTY_COLUMNS = ["model", "method", "task", "metric", "n_seeds", "n_docs", "mean", "ci_lo", "ci_hi", "delta",
                       "delta_lo", "delta_hi", "resolved"]


class ReportInputError(AutoQRAError):
    """A result file the report reads is missing a column/key or is malformed."""


def _require(have: Iterable[str], need: Iterable[str], path: PathLike, what: str = "columns") -> None:
    missing = [c for c in need if c not in set(have)]
    if missing:
        raise ReportInputError(f"{path}: missing {what} {missing} (has {sorted(have)})")


def read_json(path: PathLike, keys: Iterable[str] = ()) -> dict[str, Any]:
    """A JSON object, checking that ``keys`` are present."""
    try:
        obj = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ReportInputError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(obj, dict):
        raise ReportInputError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    _require(obj, keys, path, "keys")
    return obj


def read_tsv(path: PathLike, columns: Iterable[str] = (), numeric: Iterable[str] = ()) -> pd.DataFrame:
    """A TSV as a DataFrame; ``numeric`` columns are coerced (``None``/empty cells become NaN)."""
    df = pd.read_csv(path, sep="\t", keep_default_na=True, na_values=["None", "nan", "NaN", ""])
    _require(df.columns, columns, path)
    for c in numeric:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def read_aggregate(path: PathLike) -> pd.DataFrame:
    """results/summary/aggregate.tsv (mean/std over seeds per model, method, task, metric)."""
    df = read_tsv(path, AGGREGATE_COLUMNS, ["n_seeds", "mean", "std", *AGGREGATE_COLUMNS[9:]])
    df["label"] = df["label"].where(df["label"].notna(), df["method"])
    return df


def read_uncertainty(path: PathLike) -> pd.DataFrame:
    """results/summary/uncertainty.tsv (bootstrap CIs per model, method, task, metric and Δ vs AutoQRA)."""
    return read_tsv(path, UNCERTAINTY_COLUMNS, ["n_seeds", "n_docs", "mean", "ci_lo", "ci_hi", "delta", "delta_lo",
                                                "delta_hi"])


def read_search_cost(path: PathLike) -> pd.DataFrame:
    """results/summary/search_cost.tsv (evaluations, HF-equivalents if present, device hours per model and stage)."""
    df = read_tsv(path, SEARCH_COST_COLUMNS, [*SEARCH_COST_COLUMNS[3:], "hf_equivalents"])
    df["variant"] = df["variant"].fillna("").astype(str)
    return df


def read_records(path: PathLike) -> pd.DataFrame:
    """results/search/{model}/{variant}/records.tsv in generation order."""
    return read_tsv(path, RECORD_COLUMNS, ["generation", "score", "loss", "memory_bytes"])


def read_hypervolume(path: PathLike) -> pd.DataFrame:
    """results/search/{model}/{variant}/hypervolume.tsv: generation, hypervolume."""
    return read_tsv(path, ["generation", "hypervolume"], ["generation", "hypervolume"])


def read_priors(path: PathLike) -> pd.DataFrame:
    """results/sensitivity/{model}/priors.tsv: per-block I_q and I_r (raw and normalised)."""
    return read_tsv(path, PRIOR_COLUMNS, ["block", "iq_norm", "ir_norm", "iq_raw", "ir_raw", "combined"])


def read_methods_hf(path: PathLike, labels: Mapping[str, str] | None = None) -> pd.DataFrame:
    """results/methods_hf/{model}.tsv: every method's plan scored at HF fidelity, with a ``label``
    column from ``labels`` (method -> display name; the method's name where absent). Labels are not
    in the file, so that relabelling a method redraws figures without re-evaluating any plan."""
    df = read_tsv(path, METHODS_HF_COLUMNS, ["memory_bytes", "hf_score"])
    df["label"] = [str((labels or {}).get(m) or m) for m in df["method"]]
    return df


def budget_bytes(path: PathLike) -> float:
    """The memory budget M_max in bytes from results/memory/{model}/budget.json."""
    return float(read_json(path, ["plan_bytes"])["plan_bytes"])


def read_front(path: PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(Stage-1 front sorted by memory: memory_bytes, hf_score; archive: score, memory, fidelity, generation)."""
    obj = read_json(path, ["front", "archive"])
    front = pd.DataFrame([{"memory_bytes": p.get("memory_bytes"), "hf_score": p.get("hf_score")}
                          for p in obj["front"]], columns=["memory_bytes", "hf_score"])
    archive = pd.DataFrame([{k: a.get(k) for k in ("score", "memory", "fidelity", "generation")}
                            for a in obj["archive"]], columns=["score", "memory", "fidelity", "generation"])
    for df, cols in ((front, ["memory_bytes", "hf_score"]), (archive, ["score", "memory", "generation"])):
        for c in cols:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return front.sort_values("memory_bytes", kind="stable").reset_index(drop=True), archive


def read_history(path: PathLike) -> dict[str, Any]:
    """results/final/{model}/{variant}/history.json with ``observations`` as a DataFrame
    (score, memory, origin, utility; origin -1 = Stage 1, t = Stage-2 iteration t)."""
    obj = read_json(path, ["final", "observations"])
    obs = _frame(obj["observations"], ["score", "memory", "origin", "utility"])
    return {**obj, "observations": obs, "trajectory": list(obj.get("trajectory") or [])}


def _frame(records: list[dict], numeric: list[str]) -> pd.DataFrame:
    """The ``numeric`` fields of a list of JSON records as float columns (missing/None -> NaN)."""
    df = pd.DataFrame([{k: r.get(k) for k in numeric} for r in records], columns=numeric)
    return df.apply(pd.to_numeric, errors="coerce")


def read_random_summary(path: PathLike | None) -> dict[str, Any] | None:
    """results/random/{model}/summary.json, observations (in evaluation order) as a DataFrame; None if not run."""
    if path is None:
        return None
    obj = read_json(path, ["observations", "budget_bytes"])
    return {**obj, "observations": _frame(obj["observations"], ["score", "memory", "utility", "quant_error"])}


def read_optuna_summary(path: PathLike | None) -> dict[str, Any] | None:
    """results/optuna/{model}/summary.json, trials (in order) as a DataFrame; None if not run."""
    if path is None:
        return None
    obj = read_json(path, ["trials", "budget_bytes"])
    trials = _frame(obj["trials"], ["number", "score", "memory"])
    trials["feasible"] = [t.get("feasible") for t in obj["trials"]]
    return {**obj, "trials": trials}


def optional(path: PathLike | None) -> PathLike | None:
    """``path`` unless it is empty (Snakemake passes an empty list/str for an absent optional input)."""
    if path is None or (isinstance(path, list | tuple) and not path) or str(path) == "":
        return None
    if isinstance(path, list | tuple):
        return path[0]
    return path


def label_map(methods: Mapping[str, Mapping]) -> dict[str, str]:
    """Display name of each configured method (its label, else its name)."""
    return {m: (spec.get("label") or m) for m, spec in methods.items()}
