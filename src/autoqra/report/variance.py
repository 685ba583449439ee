"""The interval behind every table: documents resampled by bootstrap, seeds by a t-based component
(numpy only; no torch).

Model of one task's per-document values, method m, seed s, document d:
``x[m,s,d] = μ_m + a_d + b[m,d] + c_s + e[m,s] + ε[m,s,d]``: a document effect ``a_d`` and a seed
effect ``c_s`` shared by all methods (the same seed fixes data order, dropout and LoRA init, so
same-seed runs of two methods are paired), a method × document term ``b``, a method × seed term
``e`` and noise ``ε``. A Δ between two methods on the same seeds and documents cancels ``a`` and
``c``; what is left has variance ``σ_b²/D + σ_e²/S + σ_ε²/(S·D)``.

Why a t-based seed component and not a bootstrap over seeds: with 3 seeds a percentile bootstrap
draws from 10 distinct resamples and its variance is (S−1)/S of the sample variance, with normal
quantiles; the committed study's ±3.4 points over 3 seeds against ±9.6 from a t-interval shows the
size of that understatement. The estimator below is the two-way random-effects ANOVA estimate
``(MS_seed + MS_doc − MS_res)/(S·D)`` written for any smooth statistic (ratio metrics such as
bits per byte, task averages) through three measured variances:

- ``v_seed``: the sample variance of the statistic computed at each seed alone (all documents),
  over ``S`` (it holds ``σ_e²/S + σ_ε²/(S·D)``);
- ``v_doc``: the variance of the statistic over ``n_boot`` document resamples with all seeds pooled,
  the same documents drawn for both sides of a Δ (``σ_b²/D + σ_ε²/(S·D)``);
- ``v_eps``: ``(mean over seeds of the per-seed document variance − v_doc)/(S − 1)`` (``σ_ε²/(S·D)``,
  counted in both of the above).

``V = v_doc + max(v_seed − v_eps, 0)``, interval ``point ± t_ν · √V`` with Satterthwaite's ν from the
three terms (``S−1``, ``D−1`` and ``(S−1)(D−1)`` degrees of freedom), so with few seeds the
seed-dominated case gets the t quantile of ``S−1`` degrees of freedom. Two methods with different
seed lists are unpaired in seeds: each side contributes its own seed component. With one seed the
seed component is unknown and the interval covers documents only (the tables say so). The coverage
of this interval is tested on 1,000 simulated studies with 3 and with 10 seeds
(tests/unit/test_coverage.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

LEVEL = 0.95


@dataclass
class SeedGroup:
    """One independent set of seeds: the statistic at each seed alone and under the document resamples."""

    per_seed: np.ndarray  # (S,)
    reps_seed: np.ndarray  # (B, S)
    reps: np.ndarray  # (B,) all S seeds pooled (this group's own pooled statistic)


@dataclass
class Estimate:
    """A statistic (a method's metric or a Δ), its document-resample replicates and its seed groups."""

    point: float
    reps: np.ndarray  # (B,)
    groups: list[SeedGroup] = field(default_factory=list)
    n_docs: int = 0

    def __sub__(self, other: Estimate) -> Estimate:
        return difference(self, other, paired=True)


def ratio_estimate(num: np.ndarray, den: np.ndarray, exponentiate: bool, doc_w: np.ndarray) -> Estimate:
    """``f(Σ num / Σ den)`` of a seeds × documents table with document weights ``doc_w`` (B × D)."""
    f = np.exp if exponentiate else (lambda v: v)
    n_bs, d_bs = doc_w @ num.T, doc_w @ den.T  # (B, S)
    pooled = f(n_bs.sum(1) / d_bs.sum(1))
    group = SeedGroup(per_seed=f(num.sum(1) / den.sum(1)), reps_seed=f(n_bs / d_bs), reps=pooled)
    return Estimate(float(f(num.sum() / den.sum())), pooled, [group], num.shape[1])


def difference(a: Estimate, b: Estimate, paired: bool) -> Estimate:
    """``a − b`` on the same document resamples: seeds paired (same seed lists: one group of
    per-seed differences) or independent (the two sides' seed groups kept apart)."""
    if a.reps.shape != b.reps.shape:
        raise ValueError(f"a difference needs the same document resamples: {a.reps.shape} vs {b.reps.shape}")
    if paired:
        if [g.per_seed.shape for g in a.groups] != [g.per_seed.shape for g in b.groups]:
            raise ValueError("seed-paired difference needs the same seeds on both sides")
        groups = [SeedGroup(x.per_seed - y.per_seed, x.reps_seed - y.reps_seed, x.reps - y.reps)
                  for x, y in zip(a.groups, b.groups, strict=True)]
    else:
        groups = [*a.groups, *b.groups]
    return Estimate(a.point - b.point, a.reps - b.reps, groups, max(a.n_docs, b.n_docs))


def mean_of(parts: Sequence[Estimate]) -> Estimate:
    """The mean of several statistics (e.g. the task average): tasks' document draws are independent,
    a method's seeds are the same in every task (one seed = one model)."""
    groups = [SeedGroup(np.mean([p.groups[i].per_seed for p in parts], 0),
                        np.mean([p.groups[i].reps_seed for p in parts], 0),
                        np.mean([p.groups[i].reps for p in parts], 0)) for i in range(len(parts[0].groups))]
    return Estimate(float(np.mean([p.point for p in parts])), np.mean([p.reps for p in parts], 0), groups,
                    int(sum(p.n_docs for p in parts)))


@dataclass
class Components:
    """The measured variance terms of an Estimate (see the module docstring)."""

    v_doc: float
    seed_terms: list[tuple[float, float, int]]  # per seed group: (v_seed, v_eps, S)
    n_docs: int

    @property
    def doc_part(self) -> float:
        """``σ_b²/D``: the document term without the noise counted again in the seed terms."""
        return max(self.v_doc - sum(ve for _, ve, _ in self.seed_terms), 0.0)

    @property
    def variance(self) -> float:
        if not self.seed_terms:
            return self.v_doc
        return self.doc_part + sum(vs for vs, _, _ in self.seed_terms)

    @property
    def dof(self) -> float:
        """Satterthwaite's degrees of freedom of ``variance`` (seed terms S−1, documents D−1)."""
        if not self.seed_terms:
            return float(max(self.n_docs - 1, 1))
        den = self.doc_part ** 2 / max(self.n_docs - 1, 1) + sum(vs ** 2 / (s - 1) for vs, _, s in self.seed_terms)
        return float(self.variance ** 2 / den) if den > 0 else float("inf")


def components(est: Estimate) -> Components:
    """``v_doc`` and each seed group's ``(v_seed, v_eps, S)`` (groups of one seed contribute nothing)."""
    v_doc = float(np.var(est.reps, ddof=1)) if len(est.reps) > 1 else 0.0
    terms = []
    for g in est.groups:
        s = len(g.per_seed)
        if s < 2:
            continue
        v_seed = float(np.var(g.per_seed, ddof=1)) / s
        v_each = float(np.mean(np.var(g.reps_seed, axis=0, ddof=1)))
        v_eps = max((v_each - float(np.var(g.reps, ddof=1))) / (s - 1), 0.0)
        terms.append((v_seed, v_eps, s))
    return Components(v_doc, terms, est.n_docs)


def t_interval(est: Estimate, level: float = LEVEL) -> tuple[float, float]:
    """``point ± t_ν √V``; a zero-width interval when nothing varies (e.g. two copies of one run)."""
    c = components(est)
    v = c.variance
    if not np.isfinite(v) or v <= 0:
        return est.point, est.point
    q = stats.t.ppf(0.5 + level / 2, c.dof) if np.isfinite(c.dof) else stats.norm.ppf(0.5 + level / 2)
    half = float(q * np.sqrt(v))
    return est.point - half, est.point + half
