"""Paired bootstrap over documents and seeds: 95 % intervals of each method's benchmark scores and
of its difference to a reference method (AutoQRA). numpy and pandas only; no torch.

Data: per-document values (``autoqra.lmeval.doc_rows``) of every (method, seed), all methods scored
on the same test documents. A method's value on a task is the corpus-level metric over its seeds
and documents: ``f(Σ_s Σ_d num[s, d] / Σ_s Σ_d den[s, d])`` (``autoqra.taskmetrics.ratio_parts``:
the mean for accuracy, the ratio of sums for bits per byte). The task average is the mean over the
tasks whose main metric is higher-is-better (accuracy-like); perplexity-type tasks stand apart.

One bootstrap replicate draws, for each task, documents with replacement (the same draw for every
method: the comparison is paired on documents) and, for each method, its fine-tuning seeds with
replacement (independently per method: seed s of two methods are unrelated trainings; the same
draw for all tasks of a method: a seed is one model). The interval is the 2.5-97.5 % percentile of
the replicates; a difference is *resolved* when its interval excludes 0. With one seed, the
interval covers document sampling only: the note of each table says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autoqra.taskmetrics import lower_is_better, main_metric, ratio_parts

LEVEL = 0.95
N_BOOT = 2000
DOC_COLUMNS = ["model", "method", "seed", "task", "doc_id", "metric", "value"]
UNCERTAINTY_COLUMNS = ["model", "method", "task", "metric", "lower_is_better", "n_seeds", "n_docs", "mean", "ci_lo",
                       "ci_hi", "reference", "delta", "delta_lo", "delta_hi", "resolved"]
AVERAGE = "average"


@dataclass
class TaskData:
    """One method's per-(seed, document) numerators and denominators of one task metric."""

    seeds: list[int]
    num: np.ndarray  # seeds x documents
    den: np.ndarray
    exponentiate: bool

    def value(self, seed_w: np.ndarray | None = None, doc_w: np.ndarray | None = None) -> np.ndarray | float:
        """The metric with seed weights (B x S) and document weights (B x D) per replicate; the
        plain estimate without weights."""
        if seed_w is None:
            v = self.num.sum() / self.den.sum()
            return float(np.exp(v) if self.exponentiate else v)
        n = np.einsum("bs,sd,bd->b", seed_w, self.num, doc_w)
        d = np.einsum("bs,sd,bd->b", seed_w, self.den, doc_w)
        v = n / d
        return np.exp(v) if self.exponentiate else v


def task_data(docs: pd.DataFrame, metric: str, doc_ids: Sequence) -> TaskData:
    """``docs``: one method's rows of one task (seed, doc_id, metric, value), restricted to ``doc_ids``."""
    seeds = sorted(docs["seed"].unique())
    per_metric = {}
    for name, sub in docs.groupby("metric"):
        wide = sub.pivot_table(index="seed", columns="doc_id", values="value", aggfunc="first")
        per_metric[name] = wide.reindex(index=seeds, columns=list(doc_ids)).to_numpy(float)
    num, den, exponentiate = ratio_parts(metric, per_metric)
    if np.isnan(num).any() or np.isnan(den).any():
        raise ValueError(f"metric {metric}: some seed lacks some documents")
    return TaskData(seeds, num, den, exponentiate)


def multinomial_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """How often each of ``n`` items is drawn in each of ``n_boot`` resamples with replacement."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    a = (1.0 - level) / 2
    lo, hi = np.nanquantile(values, [a, 1.0 - a])
    return float(lo), float(hi)


def main_metrics(docs: pd.DataFrame) -> dict[str, str]:
    """Task -> main metric, from the metrics the per-document rows carry (rolling tasks carry
    loglikelihood/words/bytes: their main metric is derived)."""
    out = {}
    for task, sub in docs.groupby("task"):
        names = set(sub["metric"])
        if "loglikelihood" in names:
            names |= {"bits_per_byte", "word_perplexity", "byte_perplexity"} | ({"nats_per_token"}
                                                                               if "tokens" in names else set())
        out[task] = main_metric(task, names)
    return out


def bootstrap_model(docs: pd.DataFrame, reference: str | None, *, extra: Mapping[str, Sequence[str]] | None = None,
                    n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> pd.DataFrame:
    """Intervals for every method of one model (``docs``: DOC_COLUMNS rows of that model).

    Rows per method: each task's main metric (and ``extra[task]`` metrics), and ``average``
    (metric ``main``) over the higher-is-better tasks; ``delta*`` = method − ``reference``
    (missing for the reference itself or when there is none).
    """
    rng = np.random.default_rng(seed)
    model = str(docs["model"].iloc[0])
    mains = main_metrics(docs)
    methods = list(dict.fromkeys(docs["method"]))
    seed_w = {m: multinomial_weights(rng, docs.loc[docs["method"] == m, "seed"].nunique(), n_boot) for m in methods}
    est: dict[tuple[str, str, str], tuple[float, np.ndarray, int, int]] = {}
    for task in sorted(mains):
        tdocs = docs[docs["task"] == task]
        # documents every (method, seed) has: the paired comparison needs the same documents
        common = set.intersection(*(set(g["doc_id"]) for _, g in tdocs.groupby(["method", "seed"])))
        doc_ids = sorted(common)
        doc_w = multinomial_weights(rng, len(doc_ids), n_boot)
        for metric in [mains[task], *(extra or {}).get(task, [])]:
            for m in methods:
                sub = tdocs[tdocs["method"] == m]
                if sub.empty:
                    continue
                td = task_data(sub, metric, doc_ids)
                est[(m, task, metric)] = (td.value(), td.value(seed_w[m], doc_w), len(td.seeds), len(doc_ids))
    score_tasks = [t for t, met in mains.items() if not lower_is_better(met)]
    for m in methods:
        parts = [est[(m, t, mains[t])] for t in score_tasks if (m, t, mains[t]) in est]
        if parts and len(parts) == len(score_tasks):
            est[(m, AVERAGE, "main")] = (float(np.mean([p[0] for p in parts])), np.mean([p[1] for p in parts], axis=0),
                                         parts[0][2], int(sum(p[3] for p in parts)))
    rows = []
    for (m, task, metric), (point, reps, n_seeds, n_docs) in est.items():
        lo, hi = interval(reps, level)
        row = {"model": model, "method": m, "task": task, "metric": metric, "lower_is_better": lower_is_better(metric),
               "n_seeds": n_seeds, "n_docs": n_docs, "mean": point, "ci_lo": lo, "ci_hi": hi, "reference": reference,
               "delta": np.nan, "delta_lo": np.nan, "delta_hi": np.nan, "resolved": None}
        ref = est.get((reference, task, metric)) if reference else None
        if ref is not None and m != reference:
            dlo, dhi = interval(reps - ref[1], level)
            row.update(delta=point - ref[0], delta_lo=dlo, delta_hi=dhi, resolved=bool(dlo > 0 or dhi < 0))
        rows.append(row)
    return pd.DataFrame(rows, columns=UNCERTAINTY_COLUMNS)


def bootstrap_all(docs: pd.DataFrame, references: Mapping[str, str | None], **kwargs) -> pd.DataFrame:
    """``bootstrap_model`` for every model of ``docs`` with its reference method (``references[model]``)."""
    frames = [bootstrap_model(sub, references.get(model), **kwargs) for model, sub in docs.groupby("model", sort=True)]
    if not frames:
        return pd.DataFrame(columns=UNCERTAINTY_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def paired_difference(a: TaskData, b: TaskData, n_boot: int = N_BOOT, seed: int = 0,
                      level: float = LEVEL) -> dict[str, float]:
    """Δ = a − b on one task with its interval (documents paired, seeds independent); a building
    block for claims that compare two runs directly."""
    if a.num.shape[1] != b.num.shape[1]:
        raise ValueError(f"paired difference needs the same documents: {a.num.shape[1]} vs {b.num.shape[1]}")
    rng = np.random.default_rng(seed)
    doc_w = multinomial_weights(rng, a.num.shape[1], n_boot)
    reps = a.value(multinomial_weights(rng, len(a.seeds), n_boot), doc_w) - \
        b.value(multinomial_weights(rng, len(b.seeds), n_boot), doc_w)
    lo, hi = interval(reps, level)
    return {"delta": a.value() - b.value(), "lo": lo, "hi": hi, "resolved": bool(lo > 0 or hi < 0)}
