"""Paired bootstrap over documents and seeds: 95 % intervals of each method's benchmark scores and
of its difference to a reference method (AutoQRA). numpy and pandas only; no torch.

Data: per-document values (``autoqra.lmeval.doc_rows``) of every (method, seed), all methods scored
on the same test documents. A method's value on a task is the corpus-level metric over its seeds
and documents: ``f(Σ_s Σ_d num[s, d] / Σ_s Σ_d den[s, d])`` (``autoqra.taskmetrics.ratio_parts``:
the mean for accuracy, the ratio of sums for bits per byte). The task average is the mean over the
tasks whose main metric is higher-is-better (accuracy-like); perplexity-type tasks stand apart.

Documents are resampled by bootstrap, for each task, with the same draw for every method (the
comparison is paired on documents). Seeds are paired too: one seed fixes data order, dropout and
LoRA initialisation for every method, so two methods with the same seed list are compared seed by
seed (``pairing`` column); the seed component of every interval is t-based, not a resample of 3
seeds (why, and the estimator: ``autoqra.report.variance``; coverage tested on simulated studies).
A difference is *resolved* when its interval excludes 0. With one seed, the interval covers
document sampling only (``pairing`` says so). Two methods with the same plan (same plan hash) are
the same fine-tune per seed by design (``autoqra.pipeline.methods`` shares it): their Δ is exactly
0 [0, 0] and ``same_plan_as`` names the reference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from autoqra.report.variance import LEVEL, Estimate, difference, mean_of, ratio_estimate, t_interval
from autoqra.taskmetrics import lower_is_better, main_metric, ratio_parts

N_BOOT = 2000
DOC_COLUMNS = ["model", "method", "seed", "task", "doc_id", "metric", "value"]
UNCERTAINTY_COLUMNS = ["model", "method", "task", "metric", "lower_is_better", "n_seeds", "n_docs", "mean", "ci_lo",
                       "ci_hi", "reference", "delta", "delta_lo", "delta_hi", "resolved", "pairing", "same_plan_as"]
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


def _seed_note(a: Estimate, b: Estimate | None = None, paired: bool = True) -> str:
    """How an interval treats seeds (the ``pairing`` column)."""
    sides = [a] if b is None else [a, b]
    single = [all(len(g.per_seed) < 2 for g in e.groups) for e in sides]
    if all(single):
        return "documents only (one seed)"
    if any(single):
        return "documents; seeds of the side with several (the other has one seed)"
    return "seeds + documents" if paired else "documents; seeds unpaired (lists differ)"


def model_estimates(docs: pd.DataFrame, *, extra: Mapping[str, Sequence[str]] | None = None, n_boot: int = N_BOOT,
                    seed: int = 0, restrict: Callable[[str, TaskData], TaskData] | None = None,
                    only: Sequence[str] | None = None) -> tuple[dict[tuple[str, str, str], Estimate], dict[str, tuple]]:
    """Every (method, task, metric) Estimate of one model (documents resampled jointly across methods,
    the same draw for every method of a task) and each method's seed list. ``restrict(method, data)``
    may narrow a method's data (e.g. to some seeds), ``only`` names the methods
    to estimate; the document draws stay those of the unrestricted call with the same ``seed``."""
    rng = np.random.default_rng(seed)
    mains = main_metrics(docs)
    methods = list(dict.fromkeys(docs["method"]))
    seeds = {m: tuple(sorted(docs.loc[docs["method"] == m, "seed"].unique())) for m in methods}
    est: dict[tuple[str, str, str], Estimate] = {}
    for task in sorted(mains):
        tdocs = docs[docs["task"] == task]
        # documents every (method, seed) has: the paired comparison needs the same documents
        common = set.intersection(*(set(g["doc_id"]) for _, g in tdocs.groupby(["method", "seed"])))
        doc_ids = sorted(common)
        doc_w = multinomial_weights(rng, len(doc_ids), n_boot)
        for metric in [mains[task], *(extra or {}).get(task, [])]:
            for m in methods:
                sub = tdocs[tdocs["method"] == m]
                if sub.empty or (only is not None and m not in only):
                    continue
                td = task_data(sub, metric, doc_ids)
                if restrict is not None:
                    td = restrict(m, td)
                est[(m, task, metric)] = ratio_estimate(td.num, td.den, td.exponentiate, doc_w)
    score_tasks = [t for t, met in mains.items() if not lower_is_better(met)]
    for m in methods:
        parts = [est[(m, t, mains[t])] for t in score_tasks if (m, t, mains[t]) in est]
        if parts and len(parts) == len(score_tasks):
            est[(m, AVERAGE, "main")] = mean_of(parts)
    return est, seeds


def bootstrap_model(docs: pd.DataFrame, reference: str | None, *, extra: Mapping[str, Sequence[str]] | None = None,
                    n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL,
                    plan_hashes: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Intervals for every method of one model (``docs``: DOC_COLUMNS rows of that model).

    Rows per method: each task's main metric (and ``extra[task]`` metrics), and ``average``
    (metric ``main``) over the higher-is-better tasks; ``delta*`` = method − ``reference``
    (missing for the reference itself or when there is none). Documents are resampled jointly for
    all methods; methods with the same seed list are paired in seeds (``pairing``), others are not;
    the seed component is t-based (``autoqra.report.variance``). A method whose plan hash
    (``plan_hashes``) equals the reference's is the same fine-tune by design: ``same_plan_as`` names
    the reference and its Δ is exactly 0 [0, 0].
    """
    model = str(docs["model"].iloc[0])
    est, seeds = model_estimates(docs, extra=extra, n_boot=n_boot, seed=seed)
    common = _common_seed_estimates(docs, reference, seeds, extra=extra, n_boot=n_boot, seed=seed)
    hashes = dict(plan_hashes or {})
    rows = []
    for (m, task, metric), e in est.items():
        lo, hi = t_interval(e, level)
        row = {"model": model, "method": m, "task": task, "metric": metric, "lower_is_better": lower_is_better(metric),
               "n_seeds": len(seeds[m]), "n_docs": e.n_docs, "mean": e.point, "ci_lo": lo, "ci_hi": hi,
               "reference": reference, "delta": np.nan, "delta_lo": np.nan, "delta_hi": np.nan, "resolved": None,
               "pairing": _seed_note(e), "same_plan_as": None}
        ref = est.get((reference, task, metric)) if reference else None
        if ref is not None and m != reference:
            if hashes.get(m) is not None and hashes.get(m) == hashes.get(reference):
                row.update(delta=0.0, delta_lo=0.0, delta_hi=0.0, resolved=False, same_plan_as=reference,
                           pairing="same plan: one fine-tune per seed, shared")
            elif (m, task, metric) in common.get(m, {}):
                # different seed lists sharing >= 2 seeds: paired on the shared ones
                ce, cref = common[m][(m, task, metric)], common[m][(reference, task, metric)]
                d = difference(ce, cref, paired=True)
                dlo, dhi = t_interval(d, level)
                k = len(set(seeds[m]) & set(seeds[reference]))
                row.update(delta=d.point, delta_lo=dlo, delta_hi=dhi, resolved=bool(dlo > 0 or dhi < 0),
                           pairing=f"seeds + documents, paired on the {k} shared seeds")
            else:
                paired = seeds[m] == seeds[reference]
                d = difference(e, ref, paired=paired)
                dlo, dhi = t_interval(d, level)
                row.update(delta=d.point, delta_lo=dlo, delta_hi=dhi, resolved=bool(dlo > 0 or dhi < 0),
                           pairing=_seed_note(e, ref, paired))
        rows.append(row)
    return pd.DataFrame(rows, columns=UNCERTAINTY_COLUMNS)


def _common_seed_estimates(docs: pd.DataFrame, reference: str | None, seeds: Mapping[str, tuple], **kwargs
                           ) -> dict[str, dict[tuple[str, str, str], Estimate]]:
    """For each method whose seed list differs from the reference's but shares >= 2 seeds with it:
    its and the reference's Estimates on the shared seeds only (same document draws), so the Δ is
    paired seed by seed. One seed fixes data order, dropout and LoRA initialisation for every method,
    and the seed effect both share is the largest variance term of a Δ (measured on the study's b4:
    3.6e-4 against 2.6e-4 for method × seed); an unpaired Δ keeps it, a paired one cancels it. The Δ
    is then the shared seeds' (the methods' own rows keep all their seeds)."""
    if reference is None or reference not in seeds:
        return {}
    out = {}
    for m, own in seeds.items():
        shared = sorted(set(own) & set(seeds[reference]))
        if m == reference or tuple(own) == tuple(seeds[reference]) or len(shared) < 2:
            continue

        def keep(method: str, td: TaskData, shared=shared) -> TaskData:
            idx = [td.seeds.index(x) for x in shared]
            return TaskData(list(shared), td.num[idx], td.den[idx], td.exponentiate)

        est, _ = model_estimates(docs, restrict=keep, only=(m, reference), **kwargs)
        out[m] = est
    return out


def bootstrap_all(docs: pd.DataFrame, references: Mapping[str, str | None],
                  plan_hashes: Mapping[str, Mapping[str, str]] | None = None, **kwargs) -> pd.DataFrame:
    """``bootstrap_model`` for every model of ``docs`` with its reference method (``references[model]``)
    and its methods' plan hashes (``plan_hashes[model]``, e.g. from ``plan_hashes_of(aggregate)``)."""
    frames = [bootstrap_model(sub, references.get(model), plan_hashes=(plan_hashes or {}).get(model), **kwargs)
              for model, sub in docs.groupby("model", sort=True)]
    if not frames:
        return pd.DataFrame(columns=UNCERTAINTY_COLUMNS)
    return pd.concat(frames, ignore_index=True)


def plan_hashes_of(table: pd.DataFrame) -> dict[str, dict[str, str]]:
    """{model: {method: plan hash}} from a results/aggregate table with a ``plan_hash`` column."""
    if "plan_hash" not in table.columns:
        return {}
    ok = table.dropna(subset=["plan_hash"])
    return {str(m): {str(k): str(v) for k, v in sub.groupby("method")["plan_hash"].first().items()}
            for m, sub in ok.groupby("model")}


def paired_difference(a: TaskData, b: TaskData, n_boot: int = N_BOOT, seed: int = 0,
                      level: float = LEVEL) -> dict[str, float]:
    """Δ = a − b on one task with its interval (documents paired; seeds paired when both runs have
    the same seed list); a building block for claims that compare two runs directly."""
    if a.num.shape[1] != b.num.shape[1]:
        raise ValueError(f"paired difference needs the same documents: {a.num.shape[1]} vs {b.num.shape[1]}")
    rng = np.random.default_rng(seed)
    doc_w = multinomial_weights(rng, a.num.shape[1], n_boot)
    d = difference(ratio_estimate(a.num, a.den, a.exponentiate, doc_w),
                   ratio_estimate(b.num, b.den, b.exponentiate, doc_w), paired=list(a.seeds) == list(b.seeds))
    lo, hi = t_interval(d, level)
    return {"delta": d.point, "lo": lo, "hi": hi, "resolved": bool(lo > 0 or hi < 0)}
