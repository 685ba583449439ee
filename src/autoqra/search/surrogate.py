"""The performance model of the multi-fidelity search: predicts a plan's high-fidelity (HF) score
from its cheap low-fidelity (LF) score and plan features, to choose which offspring to promote.

A one-hidden-layer tanh MLP with Huber loss and L2 weight decay, trained full-batch with L-BFGS
from a seeded initialisation, so a refit on the same pairs gives the same model. The L-BFGS is a
few lines of numpy rather than scipy's: scipy's compiled L-BFGS-B calls multi-threaded BLAS on
vectors of a few hundred entries and ran ~50× slower on a 2-core CI box than this loop. With fewer than
``min_pairs`` LF/HF pairs it is the identity on the LF score (nothing to learn from yet).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoqra.search.space import Genome, SearchSpace

LF_COLUMN = 0  # the LF score is feature 0; the identity fallback returns it


def features(space: SearchSpace, g: Genome, lf_score: float, imp_q: np.ndarray,
             imp_r: np.ndarray) -> np.ndarray:
    """[LF score, memory/budget, bits-rung histogram, rank-rung histogram, I_q- and I_r-weighted coverage]."""
    g = np.asarray(g)
    nb, nr = len(space.bits), len(space.ranks)
    n = space.n_blocks
    q_norm, r_norm = g[0] / max(nb - 1, 1), g[1] / max(nr - 1, 1)
    iq, ir = np.asarray(imp_q, float), np.asarray(imp_r, float)
    # coverage: do the important blocks get the high rungs? (1 = all importance on top rungs)
    cov_q = float(iq @ q_norm) / max(float(iq.sum()), 1e-12)
    cov_r = float(ir @ r_norm) / max(float(ir.sum()), 1e-12)
    return np.concatenate([[float(lf_score), space.memory(g) / space.budget],
                           np.bincount(g[0], minlength=nb) / n, np.bincount(g[1], minlength=nr) / n,
                           [cov_q, cov_r]])


def feature_matrix(space: SearchSpace, genomes: Sequence[Genome], lf_scores: Sequence[float],
                   imp_q: np.ndarray, imp_r: np.ndarray) -> np.ndarray:
    """Stacked ``features`` of several genomes."""
    rows = [features(space, g, s, imp_q, imp_r) for g, s in zip(genomes, lf_scores, strict=True)]
    return np.array(rows).reshape(len(rows), -1)


def minimise_lbfgs(fun, x0: np.ndarray, maxiter: int = 500, memory: int = 10,
                   gtol: float = 1e-6, ftol: float = 1e-10) -> np.ndarray:
    """Minimise ``fun(x) -> (value, gradient)`` by L-BFGS with Armijo backtracking (deterministic)."""
    x = np.array(x0, dtype=float)
    f, g = fun(x)
    S: list[np.ndarray] = []
    Y: list[np.ndarray] = []
    for _ in range(maxiter):
        if np.abs(g).max() < gtol:
            break
        # two-loop recursion: d = -H g with H the L-BFGS inverse-Hessian estimate
        q, coef = g.copy(), []
        for s, y in zip(reversed(S), reversed(Y), strict=True):
            rho = 1.0 / (y @ s)
            a = rho * (s @ q)
            q -= a * y
            coef.append((rho, a))
        q *= (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1]) if S else 1.0 / max(np.linalg.norm(g), 1.0)
        for (s, y), (rho, a) in zip(zip(S, Y, strict=True), reversed(coef), strict=True):
            q += (a - rho * (y @ q)) * s
        d = -q
        slope = g @ d
        if slope >= 0:  # not a descent direction: restart from steepest descent
            S, Y = [], []
            d = -g / max(np.linalg.norm(g), 1.0)
            slope = g @ d
        t = 1.0
        while True:
            x_new = x + t * d
            f_new, g_new = fun(x_new)
            if f_new <= f + 1e-4 * t * slope or t < 1e-12:
                break
            t *= 0.5
        s, y = x_new - x, g_new - g
        if y @ s > 1e-12:  # keep the curvature pair only if it keeps H positive definite
            S, Y = (S + [s])[-memory:], (Y + [y])[-memory:]
        done = f - f_new <= ftol * max(abs(f), abs(f_new), 1.0)
        x, f, g = x_new, f_new, g_new
        if done:
            break
    return x


def _huber(r: np.ndarray, delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Huber loss per residual and its derivative."""
    a = np.abs(r)
    loss = np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))
    return loss, np.clip(r, -delta, delta)


class PerformanceModel:
    """LF score + plan features → predicted HF score (identity below ``min_pairs`` pairs)."""

    def __init__(self, hidden: int = 16, l2: float = 1e-3, delta: float = 1.0, min_pairs: int = 6,
                 seed: int = 0, maxiter: int = 500):
        self.hidden, self.l2, self.delta = hidden, l2, delta
        self.min_pairs, self.seed, self.maxiter = min_pairs, seed, maxiter
        self.n_pairs = 0
        self._params: np.ndarray | None = None

    @property
    def identity(self) -> bool:
        """True while the model just passes the LF score through."""
        return self._params is None

    def _unpack(self, theta: np.ndarray, d: int) -> tuple[np.ndarray, ...]:
        h = self.hidden
        W1 = theta[:d * h].reshape(d, h)
        b1 = theta[d * h:d * h + h]
        w2 = theta[d * h + h:d * h + 2 * h]
        return W1, b1, w2, theta[-1]

    def _loss(self, theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        W1, b1, w2, b2 = self._unpack(theta, X.shape[1])
        H = np.tanh(X @ W1 + b1)
        loss, dres = _huber(H @ w2 + b2 - y, self.delta)
        n = len(y)
        dp = dres / n
        dZ = np.outer(dp, w2) * (1.0 - H * H)
        grad = np.concatenate([(X.T @ dZ + 2 * self.l2 * W1).ravel(), dZ.sum(axis=0),
                               H.T @ dp + 2 * self.l2 * w2, [dp.sum()]])
        value = loss.mean() + self.l2 * (np.sum(W1 * W1) + np.sum(w2 * w2))
        return float(value), grad

    def fit(self, X: np.ndarray, y: np.ndarray) -> PerformanceModel:
        """Fit on LF/HF pairs (rows of ``X`` from ``features``, ``y`` the HF scores)."""
        X, y = np.asarray(X, float), np.asarray(y, float)
        self.n_pairs = len(y)
        if len(y) < self.min_pairs:
            self._params = None
            return self
        # standardise so one set of hyper-parameters works whatever the score's scale
        self._x_mu, self._x_sd = X.mean(axis=0), X.std(axis=0)
        self._x_sd[self._x_sd < 1e-12] = 1.0
        self._y_mu, self._y_sd = float(y.mean()), float(y.std()) or 1.0
        Xs, ys = (X - self._x_mu) / self._x_sd, (y - self._y_mu) / self._y_sd
        d, h = X.shape[1], self.hidden
        rng = np.random.default_rng(self.seed)
        theta0 = np.concatenate([rng.normal(0, 1 / np.sqrt(d), d * h), np.zeros(h),
                                 rng.normal(0, 1 / np.sqrt(h), h), [0.0]])
        self._params = minimise_lbfgs(lambda th: self._loss(th, Xs, ys), theta0, self.maxiter)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predicted HF scores (the LF column itself while in identity mode)."""
        X = np.asarray(X, float).reshape(len(X), -1)
        if self._params is None:
            return X[:, LF_COLUMN].copy()
        W1, b1, w2, b2 = self._unpack(self._params, X.shape[1])
        H = np.tanh(((X - self._x_mu) / self._x_sd) @ W1 + b1)
        return (H @ w2 + b2) * self._y_sd + self._y_mu
