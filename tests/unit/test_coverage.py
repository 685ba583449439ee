"""Coverage of the paired interval (``autoqra.report.variance``) on 1,000 simulated studies: per-document
0/1 scores of two methods with a known Δ, a seed effect shared by both methods, a method × seed
interaction and a method × document effect. The 95 % interval of Δ must cover the true Δ in 93-97 %
of the studies, with 3 and with 10 seeds (a percentile bootstrap over 3 seeds covers far less)."""

import numpy as np
import pandas as pd
import pytest

from autoqra.report.uncertainty import bootstrap_model
from autoqra.report.variance import difference, ratio_estimate, t_interval

N_STUDIES, N_DOCS, N_BOOT = 1000, 150, 400
DELTA = 0.04  # true Δ, 4 points


def simulate(rng, n_seeds, n_docs, delta=DELTA, sd_doc=0.05, sd_seed=0.03, sd_method_seed=0.03):
    """(2, seeds, documents) 0/1 scores; E[score] = base_d + μ_m + b[m,d] + c_s + e[m,s] (no clipping)."""
    base = rng.uniform(0.3, 0.7, n_docs)
    mu = np.array([delta / 2, -delta / 2])
    p = (base[None, None] + mu[:, None, None] + rng.normal(0, sd_doc, (2, 1, n_docs))
         + rng.normal(0, sd_seed, (1, n_seeds, 1)) + rng.normal(0, sd_method_seed, (2, n_seeds, 1)))
    return (rng.random(p.shape) < np.clip(p, 0, 1)).astype(float)


def coverage(n_seeds, seed=0):
    rng = np.random.default_rng(seed)
    # the document resamples are independent of the data, so one set of weights serves every study
    doc_w = rng.multinomial(N_DOCS, np.full(N_DOCS, 1 / N_DOCS), size=N_BOOT).astype(float)
    ones = np.ones((n_seeds, N_DOCS))
    hits, widths = 0, []
    for _ in range(N_STUDIES):
        x = simulate(rng, n_seeds, N_DOCS)
        d = difference(ratio_estimate(x[0], ones, False, doc_w), ratio_estimate(x[1], ones, False, doc_w), paired=True)
        lo, hi = t_interval(d)
        hits += lo <= DELTA <= hi
        widths.append(hi - lo)
    return hits / N_STUDIES, float(np.median(widths))


@pytest.mark.parametrize("n_seeds", [3, 10])
def test_interval_covers_the_true_difference(n_seeds):
    cov, width = coverage(n_seeds)
    assert 0.93 <= cov <= 0.97, f"coverage {cov:.3f} with {n_seeds} seeds"
    assert width < 0.5  # an interval, not the whole range


def test_percentile_over_three_seeds_would_undercover():
    """The check can fail: an interval from the document bootstrap alone (seeds ignored) misses often."""
    rng = np.random.default_rng(1)
    doc_w = rng.multinomial(N_DOCS, np.full(N_DOCS, 1 / N_DOCS), size=N_BOOT).astype(float)
    ones, hits = np.ones((3, N_DOCS)), 0
    for _ in range(300):
        x = simulate(rng, 3, N_DOCS)
        d = difference(ratio_estimate(x[0], ones, False, doc_w), ratio_estimate(x[1], ones, False, doc_w), paired=True)
        lo, hi = np.quantile(d.reps, [0.025, 0.975])
        hits += lo <= DELTA <= hi
    assert hits / 300 < 0.9


def _rows(method, x):
    return [{"model": "m", "method": method, "seed": s, "task": "t_mc", "doc_id": d, "metric": "acc", "value": v}
            for s, row in enumerate(x) for d, v in enumerate(row)]


def test_identical_plans_give_exactly_zero():
    """Same plan hash: Δ = 0 [0, 0] and "same plan as"; a different plan on the same seeds is paired."""
    x = simulate(np.random.default_rng(2), 3, 80)
    docs = pd.DataFrame(_rows("autoqra", x[0]) + _rows("qlora_nf4", x[0]) + _rows("sequential", x[1]))
    unc = bootstrap_model(docs, "autoqra", n_boot=300,
                          plan_hashes={"autoqra": "h1", "qlora_nf4": "h1", "sequential": "h2"})
    unc = unc[unc["task"] == "average"].set_index("method")
    q = unc.loc["qlora_nf4"]
    assert (q.delta, q.delta_lo, q.delta_hi) == (0.0, 0.0, 0.0) and q.same_plan_as == "autoqra" and not q.resolved
    s = unc.loc["sequential"]
    assert s.delta_lo < s.delta < s.delta_hi and s.pairing == "seeds + documents" and pd.isna(s.same_plan_as)
    # without plan hashes two copies of one run still give exactly 0 (nothing varies between them)
    plain = bootstrap_model(docs, "autoqra", n_boot=300).query("task == 'average'").set_index("method").loc["qlora_nf4"]
    assert (plain.delta, plain.delta_lo, plain.delta_hi) == (0.0, 0.0, 0.0)
