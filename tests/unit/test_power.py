"""The power note's machinery on simulated per-document results with known variance components."""

import numpy as np
import pandas as pd
import pytest
from test_coverage import simulate

from autoqra.report.power import delta_components, half_width, power_note, seeds_for


def docs_of(x):
    return pd.DataFrame([{"model": "m", "method": name, "seed": s, "task": "t_mc", "doc_id": d, "metric": "acc",
                          "value": v} for name, m in (("a", x[0]), ("b", x[1]))
                         for s, row in enumerate(m) for d, v in enumerate(row)])


def test_components_recover_the_simulated_method_by_seed_variance():
    x = simulate(np.random.default_rng(0), 12, 400, sd_doc=0.05, sd_method_seed=0.04)
    c = delta_components(docs_of(x), "a", "b", n_boot=400)
    # method × seed: e[a,s] − e[b,s] has variance 2 · 0.04² = 0.0032 (12 seeds: a rough estimate)
    assert 0.001 < c["method_seed_var"] < 0.007 and c["n_seeds"] == 12 and c["n_docs"] == 400
    assert c["doc_var"] == pytest.approx(2 * 0.05 ** 2 / 400, rel=0.6)  # the method × document term over D
    assert half_width(c, 3) > half_width(c, 10) > half_width(c, 100) > 1.96 * np.sqrt(c["doc_var"]) * 0.99
    n = seeds_for(c, 0.02)
    assert n is not None and half_width(c, n) <= 0.02 < half_width(c, n - 1)
    assert seeds_for(c, 0.5 * np.sqrt(c["doc_var"])) is None  # below the document floor: seeds cannot reach it
    note = power_note(c, seconds_per_run=420.0)
    assert note["targets"]["±0.02"]["cpu_hours"] == pytest.approx(n * 2 * 420 / 3600)


def test_components_need_paired_seeds():
    x = simulate(np.random.default_rng(1), 3, 50)
    docs = docs_of(x)
    with pytest.raises(ValueError, match="same ≥ 2 seeds"):
        delta_components(docs[~((docs.method == "b") & (docs.seed == 2))], "a", "b", n_boot=100)
