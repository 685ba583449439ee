"""The Gaussian-process surrogate of Stage 2: a BoTorch ``SingleTaskGP`` (Matérn-5/2, ARD) on plan
features with standardised utility targets, and analytic log expected improvement.

Why BoTorch and not optuna's GP sampler: optuna keeps its GP in a private module (``optuna._gp``)
whose API may change in any release and which is wired to optuna's own sampler loop. BoTorch gives
a maintained GP with the standard marginal-likelihood fit (``fit_gpytorch_mll``, L-BFGS-B), the
numerically stable LogEI of Ament et al. (2023), and fantasy conditioning for batch selection; on
CPU in float64 with the torch seed fixed from our generator, fitting and scoring are deterministic.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from botorch.acquisition.analytic import LogExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
from gpytorch.mlls import ExactMarginalLogLikelihood

DTYPE = torch.float64


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch single-threaded: on GPs this small, thread hand-off costs more than it saves
    (measured 13x slower with 2 threads on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=float), dtype=DTYPE)


class UtilityGP:
    """A fitted GP over feature rows; predictions and log-EI are reported in utility units."""

    def __init__(self, model: SingleTaskGP, y_mean: float, y_std: float):
        self.model, self.y_mean, self.y_std = model, y_mean, y_std

    @classmethod
    def fit(cls, X: np.ndarray, y: np.ndarray, seed: int, maxiter: int = 100) -> UtilityGP:
        """Standardise ``y``, fit Matérn-5/2 ARD hyper-parameters by marginal likelihood
        (L-BFGS-B capped at ``maxiter`` steps: later steps barely move the likelihood)."""
        y = np.asarray(y, dtype=float)
        y_mean = float(y.mean())
        y_std = float(y.std()) if y.size > 1 and y.std() > 1e-12 else 1.0
        train_x, train_y = _t(X), _t((y - y_mean) / y_std).unsqueeze(-1)
        # fork_rng: the fit's random restarts draw from torch, seeded from our generator, without
        # touching the caller's global torch RNG.
        with torch.random.fork_rng(), warnings.catch_warnings(), _one_thread():
            torch.manual_seed(seed)
            warnings.simplefilter("ignore")  # optimiser chatter on tiny data sets; the fit still returns
            # Dimension-scaled log-normal lengthscale prior (Hvarfner et al. 2024): keeps ARD sane with
            # more features than observations, which is the normal case here.
            kernel = get_covar_module_with_dim_scaled_prior(ard_num_dims=train_x.shape[-1],
                                                            use_rbf_kernel=False)
            model = SingleTaskGP(train_x, train_y, covar_module=kernel, outcome_transform=None)
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model),
                             optimizer_kwargs={"options": {"maxiter": maxiter}})
        model.eval()
        return cls(model, y_mean, y_std)

    def mean(self, X: np.ndarray) -> np.ndarray:
        """Posterior mean utility at each row of ``X``."""
        with torch.no_grad(), _one_thread():
            m = self.model.posterior(_t(X)).mean.squeeze(-1).numpy()
        return m * self.y_std + self.y_mean

    def log_ei(self, X: np.ndarray, best_f: float) -> np.ndarray:
        """log EI(x) over ``best_f``, both in utility units (EI scales with the target std)."""
        acq = LogExpectedImprovement(self.model, best_f=(best_f - self.y_mean) / self.y_std)
        with torch.no_grad(), _one_thread():
            val = acq(_t(X).unsqueeze(-2)).numpy()
        return val + math.log(self.y_std)

    def condition(self, x: np.ndarray, y: float) -> UtilityGP:
        """The GP with one fantasy observation added, hyper-parameters kept (kriging believer)."""
        y_std = torch.tensor([[(y - self.y_mean) / self.y_std]], dtype=DTYPE)
        with torch.no_grad(), _one_thread():
            model = self.model.condition_on_observations(_t(x).reshape(1, -1), y_std)
        return UtilityGP(model, self.y_mean, self.y_std)
