"""Which lm-eval metric stands for each task, which way is better, and how a corpus-level metric
is re-aggregated from per-document values (for the bootstrap). No torch, no lm-eval import.

Main metric per task (summaries, Table 1, the claims table):

- ``acc_norm`` (accuracy with each choice's log-likelihood divided by its length in bytes) for
  HellaSwag, ARC-Challenge and OpenBookQA, the Open LLM Leaderboard convention, and for our
  ``synth_mc``: its choices differ in length within an item and often one is a prefix of another
  ("900" / "9000"), which plain ``acc`` (summed log-likelihood) can never pick;
- ``acc`` for the other multiple-choice tasks (ARC-Easy, BoolQ, PIQA, WinoGrande, MMLU);
- ``exact_match[first_line]`` for ``synth_gen``;
- ``bits_per_byte`` for rolling log-likelihood tasks (``general_text``, ``wikitext``): linear in the
  loss, so differences and their intervals are symmetric, and comparable across tokenizers; lower
  is better (``word_perplexity`` stays in the summaries).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

MAIN_METRIC = {
    "hellaswag": "acc_norm", "arc_challenge": "acc_norm", "openbookqa": "acc_norm",
    "arc_easy": "acc", "boolq": "acc", "piqa": "acc", "winogrande": "acc", "mmlu": "acc",
    "synth_mc": "acc_norm", "synth_gen": "exact_match[first_line]",
    "general_text": "bits_per_byte", "wikitext": "bits_per_byte",
}
# Corpus-level metrics of rolling log-likelihood tasks: (denominator column, exponentiate?).
# Each is transform(sum over documents of -loglikelihood / sum of the denominator); bits_per_byte
# also divides by ln 2.
RATIO_METRICS = {"bits_per_byte": ("bytes", False), "byte_perplexity": ("bytes", True),
                 "word_perplexity": ("words", True), "nats_per_token": ("tokens", False)}
LOWER_IS_BETTER = frozenset(RATIO_METRICS)


def main_metric(task: str, metrics: Iterable[str]) -> str:
    """The metric ``task`` is reported by: the table above when the task reports it, else ``acc``,
    else an ``exact_match`` variant, else ``bits_per_byte``, else the first by name."""
    metrics = sorted(set(metrics))
    if task in MAIN_METRIC and MAIN_METRIC[task] in metrics:
        return MAIN_METRIC[task]
    for pick in ("acc", "bits_per_byte"):
        if pick in metrics:
            return pick
    em = [m for m in metrics if m.startswith("exact_match")]
    return em[0] if em else metrics[0]


def lower_is_better(metric: str) -> bool:
    return metric in LOWER_IS_BETTER


def ratio_parts(metric: str, per_doc: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, bool]:
    """(numerator, denominator, exponentiate) per document, so that the corpus-level ``metric`` is
    ``f(sum(num) / sum(den))``. Mean metrics (acc, exact match) have denominator 1.

    ``per_doc`` maps the per-document rows' metric names (``autoqra.lmeval.doc_rows``) to arrays.
    """
    if metric in RATIO_METRICS:
        den_name, exponentiate = RATIO_METRICS[metric]
        missing = [k for k in ("loglikelihood", den_name) if k not in per_doc]
        if missing:
            raise KeyError(f"metric {metric} needs per-document {missing}")
        num = -np.asarray(per_doc["loglikelihood"], float)
        if metric == "bits_per_byte":
            num = num / math.log(2)
        return num, np.asarray(per_doc[den_name], float), exponentiate
    if metric not in per_doc:
        raise KeyError(f"no per-document values of metric {metric}")
    values = np.asarray(per_doc[metric], float)
    return values, np.ones_like(values), False


def corpus_value(metric: str, per_doc: Mapping[str, np.ndarray]) -> float:
    """The corpus-level value of ``metric`` from per-document values (what lm-eval reports)."""
    num, den, exponentiate = ratio_parts(metric, per_doc)
    v = float(num.sum() / den.sum())
    return math.exp(v) if exponentiate else v
