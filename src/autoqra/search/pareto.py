"""Pareto tools for the bi-objective search: maximise quality P, minimise memory M.

Objective arrays ``F`` have shape (n, 2) with columns (P, M). Constraint handling follows Deb's
constrained domination: a feasible point (violation ≤ 0) beats any infeasible one, two infeasible
points are compared by violation alone, two feasible points by ordinary Pareto domination.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _objectives(F: np.ndarray | Sequence) -> np.ndarray:
    F = np.asarray(F, dtype=float).reshape(-1, 2)
    if not np.isfinite(F).all():
        raise ValueError("objective values must be finite; drop failed evaluations before sorting")
    return F


def domination_matrix(F: np.ndarray, violation: np.ndarray | None = None) -> np.ndarray:
    """``D[i, j]`` is True when point i constrained-dominates point j."""
    F = _objectives(F)
    P, M = F[:, 0], F[:, 1]
    no_worse = (P[:, None] >= P[None, :]) & (M[:, None] <= M[None, :])
    better = (P[:, None] > P[None, :]) | (M[:, None] < M[None, :])
    D = no_worse & better
    if violation is None:
        return D
    v = np.asarray(violation, dtype=float)
    feas = v <= 0
    D = D & feas[:, None] & feas[None, :]
    D |= feas[:, None] & ~feas[None, :]
    D |= ~feas[:, None] & ~feas[None, :] & (v[:, None] < v[None, :])
    return D


def nondominated_sort(F: np.ndarray | Sequence, violation: np.ndarray | Sequence | None = None
                      ) -> list[list[int]]:
    """Fronts of indices, best first (front 0 = non-dominated), by constrained domination."""
    D = domination_matrix(np.asarray(F), None if violation is None else np.asarray(violation))
    n_dominators = D.sum(axis=0)
    remaining = np.ones(len(D), dtype=bool)
    fronts: list[list[int]] = []
    while remaining.any():
        front = np.flatnonzero(remaining & (n_dominators == 0))
        fronts.append(front.tolist())
        remaining[front] = False
        n_dominators = n_dominators - D[front].sum(axis=0)
    return fronts


def crowding_distance(F_front: np.ndarray | Sequence) -> np.ndarray:
    """NSGA-II crowding distance within one front (boundary points get +inf)."""
    F = _objectives(F_front)
    n = len(F)
    d = np.zeros(n)
    if n <= 2:
        return np.full(n, np.inf)
    for m in range(F.shape[1]):
        order = np.argsort(F[:, m], kind="stable")
        f = F[order, m]
        d[order[0]] = d[order[-1]] = np.inf
        span = f[-1] - f[0]
        if span > 0:
            d[order[1:-1]] += (f[2:] - f[:-2]) / span
    return d


def pareto_front(F: np.ndarray | Sequence) -> list[int]:
    """Indices of the non-dominated points (no constraints)."""
    return sorted(nondominated_sort(F)[0]) if len(np.asarray(F)) else []


def hypervolume_2d(points: np.ndarray | Sequence, ref: tuple[float, float]) -> float:
    """Area dominated by ``points`` (P maximised, M minimised) and bounded by ``ref = (P_ref, M_ref)``.

    Points with P ≤ P_ref or M ≥ M_ref contribute nothing (their box is empty), so the value
    is monotone in the point set for a fixed reference.
    """
    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    p_ref, m_ref = ref
    pts = pts[(pts[:, 0] > p_ref) & (pts[:, 1] < m_ref)]
    if len(pts) == 0:
        return 0.0
    pts = pts[np.argsort(pts[:, 1], kind="stable")]
    # sweep along M: between consecutive memories the covered height is the best P seen so far
    best_p = np.maximum.accumulate(pts[:, 0]) - p_ref
    widths = np.diff(np.append(pts[:, 1], m_ref))
    return float((best_p * widths).sum())


def shared_hv_reference(scores: Sequence[float | None], margin: float = 0.1) -> float:
    """The hypervolume reference score every search variant of a model shares: the lowest of
    ``scores`` (HF scores of plans fixed before any search, e.g. the smallest plan and the budget's
    uniform plan) minus ``margin`` times their spread (times |lowest| when they coincide)."""
    ok = [float(s) for s in scores if s is not None and np.isfinite(s)]
    if not ok:
        raise ValueError("hypervolume reference: every reference plan's evaluation failed")
    lo, hi = min(ok), max(ok)
    return lo - margin * ((hi - lo) if hi > lo else max(abs(lo), 1e-12))


def rank_and_crowding(F: np.ndarray, violation: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Front index and within-front crowding distance of every point (tournament keys)."""
    F = _objectives(F)
    rank, crowd = np.zeros(len(F), dtype=int), np.zeros(len(F))
    for i, front in enumerate(nondominated_sort(F, violation) if len(F) else []):
        rank[front] = i
        crowd[front] = crowding_distance(F[front])
    return rank, crowd


def environmental_selection(F: np.ndarray, violation: np.ndarray | None, n: int) -> list[int]:
    """NSGA-II survivors: whole fronts best first, the last partial front by crowding distance."""
    F = _objectives(F)
    chosen: list[int] = []
    for front in nondominated_sort(F, violation) if len(F) else []:
        if len(chosen) + len(front) > n:
            cd = crowding_distance(F[front])
            front = [front[i] for i in np.argsort(-cd, kind="stable")[:n - len(chosen)]]
        chosen += front
        if len(chosen) >= n:
            break
    return chosen
