"""How a LoRA run is steered and stopped: the learning-rate schedule (warm-up, then constant,
linear decay or cosine) and the divergence guard on the smoothed loss. Pure; no torch."""

from __future__ import annotations

import math
from typing import Any

DIVERGENCE_BETA = 0.9  # EMA of the step loss: ~10-step window


def lr_factor(settings: Any, total: int):
    """The LR multiplier after ``step`` optimizer steps (LambdaLR's convention) of a ``total``-step run
    with ``settings`` (an autoqra.train.TrainSettings: warmup(), lr_schedule)."""
    warmup = settings.warmup(total)

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        span = max(1, total - warmup)
        if settings.lr_schedule == "linear":
            return max(0.0, (total - step) / span)
        if settings.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / span)))
        return 1.0
    return f


class DivergenceGuard:
    """Flags a run whose smoothed loss (bias-corrected EMA, ``beta``) exceeds ``factor`` × the
    running minimum of that smoothed loss; ``factor`` None or 0 switches it off."""

    def __init__(self, factor: float | None, beta: float = DIVERGENCE_BETA):
        self.factor, self.beta = factor, beta
        self.m, self.n, self.min, self.ema = 0.0, 0, math.inf, math.nan

    def update(self, loss: float) -> str | None:
        """Add one step's loss; the reason when the run has diverged, else None."""
        self.n += 1
        self.m = self.beta * self.m + (1 - self.beta) * loss
        self.ema = self.m / (1 - self.beta ** self.n)
        if self.factor and self.ema > self.factor * self.min:
            return f"diverged: smoothed loss {self.ema:.4g} > {self.factor:g} × its minimum {self.min:.4g}"
        self.min = min(self.min, self.ema)
        return None
