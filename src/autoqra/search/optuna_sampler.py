"""An off-the-shelf black-box optimiser as a baseline searcher: optuna's TPE (or NSGA-II / random)
over the same per-block (bits, rank) space, ask/tell style, no I/O.

Each block's bit and rank rung is a categorical parameter. A proposal over the budget is projected
onto it by the same greedy repair AutoQRA uses, with flat importances (the baseline gets no
sensitivity priors); optuna is told the HF score of the plan actually evaluated. The objective is
the HF score alone (maximised): the comparison of interest is the best feasible quality found for a
number of HF evaluations.
"""

from __future__ import annotations

import numpy as np

from autoqra.search.space import Genome, SearchSpace, repair_to_budget

SAMPLERS = ("tpe", "nsga2", "random")


class OptunaSearch:
    """Ask/tell wrapper around an optuna study (deterministic for a seed)."""

    def __init__(self, space: SearchSpace, sampler: str = "tpe", seed: int = 0):
        import optuna

        if sampler not in SAMPLERS:
            raise ValueError(f"optuna sampler {sampler!r} unknown; expected one of {SAMPLERS}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        make = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed, multivariate=True),
                "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
                "random": lambda: optuna.samplers.RandomSampler(seed=seed)}[sampler]
        self.space, self.sampler_name = space, sampler
        self.study = optuna.create_study(direction="maximize", sampler=make())
        self._flat = np.full(space.n_blocks, 0.5)
        self._trial = None

    def ask(self) -> tuple[Genome, Genome]:
        """(proposed genome, the feasible genome to evaluate)."""
        self._trial = self.study.ask()
        t, nb, nr = self._trial, len(self.space.bits), len(self.space.ranks)
        g = np.array([[t.suggest_categorical(f"b{ell}", list(range(nb))) for ell in range(self.space.n_blocks)],
                      [t.suggest_categorical(f"r{ell}", list(range(nr))) for ell in range(self.space.n_blocks)]],
                     dtype=np.int64)
        return g, repair_to_budget(self.space, g, self._flat, self._flat)

    def tell(self, score: float | None) -> None:
        """Report the evaluated score (None = failed evaluation)."""
        import optuna

        if self._trial is None:
            raise RuntimeError("tell() without ask()")
        if score is None:
            self.study.tell(self._trial, state=optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(self._trial, float(score))
        self._trial = None
