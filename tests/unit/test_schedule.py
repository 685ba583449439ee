"""The learning-rate schedule and the divergence guard (pure; real numbers, no model)."""

import numpy as np
import pytest

from autoqra.schedule import DivergenceGuard, lr_factor
from autoqra.train import TrainSettings


def factors(total, **kw):
    f = lr_factor(TrainSettings(**kw), total)
    return [f(step) for step in range(total)]  # the factor used by optimizer step step+1


def test_linear_schedule_warms_up_then_decays_to_zero():
    f = factors(10, lr_schedule="linear", warmup_steps=2)
    assert f[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])  # warm-up, then the peak
    assert f[2:] == pytest.approx([(10 - s) / 8 for s in range(2, 10)])  # HF Trainer's linear decay
    assert f[-1] == pytest.approx(1 / 8) and lr_factor(TrainSettings(lr_schedule="linear"), 10)(10) == 0.0


def test_warmup_ratio_and_the_other_schedules():
    assert TrainSettings(warmup_ratio=0.1).warmup(40) == 4 and TrainSettings(warmup_ratio=0.03).warmup(10) == 1
    assert factors(5, lr_schedule="linear", warmup_ratio=0.2) == pytest.approx([0.5, 1.0, 0.75, 0.5, 0.25])
    assert factors(4, lr_schedule="constant") == [1.0] * 4
    cos = factors(5, lr_schedule="cosine", warmup_steps=1)
    assert cos[1] == pytest.approx(1.0) and cos[3] == pytest.approx(0.5) and cos == sorted(cos[:1]) + sorted(cos[1:], reverse=True)
    with pytest.raises(ValueError, match="not both"):
        TrainSettings(warmup_steps=2, warmup_ratio=0.1)
    with pytest.raises(ValueError, match="warmup_ratio"):
        TrainSettings(warmup_ratio=1.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        TrainSettings(lr_schedule="step")
    # an unset warmup_ratio leaves the cache keys of the search's evaluations as they were
    assert "warmup_ratio" not in TrainSettings().key() and TrainSettings(warmup_ratio=0.1).key()["warmup_ratio"] == 0.1


def first_flag(losses, factor=3.0):
    guard = DivergenceGuard(factor)
    for step, loss in enumerate(losses, start=1):
        if guard.update(loss):
            return step
    return None


def healthy(n=300, seed=0):
    """A healthy run's per-batch losses: 3.3 decaying to ~0.97, log-normal batch noise (σ 0.25) and
    single-batch spikes of 3.4x the current level (the kind that stopped a run at step 55)."""
    rng = np.random.default_rng(seed)
    level = 0.97 + 2.3 * np.exp(-np.arange(n) / 15)
    losses = level * rng.lognormal(0, 0.25, n)
    spikes = [i for i in (54, 120, 121, 250) if i < n]
    losses[spikes] = 3.4 * level[spikes]
    return losses


@pytest.mark.parametrize("seed", range(5))
def test_noisy_healthy_runs_are_not_flagged(seed):
    losses = healthy(seed=seed)
    assert first_flag(losses) is None
    # the single-batch spike at step 55 is what the old rule (one batch vs a reference) called divergence
    assert losses[54] > 3 * 0.975


def test_real_divergence_is_flagged():
    # healthy for 100 steps, then the loss grows 15 % per step (lr too high): caught within a few steps
    losses = np.concatenate([healthy(100), 1.0 * 1.15 ** np.arange(1, 60)])
    step = first_flag(losses)
    assert step is not None and 100 < step < 100 + 20
    # a blow-up (x100) right after the first step, as inject_failure: diverge does, trips at step 2
    assert first_flag([3.0] + [300.0] * 5) == 2
    # a sustained jump to a plateau 5x above the best level is divergence too
    assert first_flag(np.concatenate([healthy(80), np.full(30, 5.0)])) is not None
    # switched off: never
    assert first_flag([3.0] + [300.0] * 5, factor=None) is None


def test_the_guard_reports_the_smoothed_loss_and_its_minimum():
    guard = DivergenceGuard(3.0)
    assert guard.update(2.0) is None and guard.ema == pytest.approx(2.0)  # bias-corrected from step 1
    assert guard.update(1.0) is None and guard.ema == pytest.approx((0.09 * 2 + 0.1 * 1) / 0.19)
    reason = guard.update(100.0)
    assert reason.startswith("diverged: smoothed loss") and "× its minimum 1.474" in reason
