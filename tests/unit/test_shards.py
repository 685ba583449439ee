"""Evaluation jobs are sized by what a phase can hold: no shard is ever scheduled empty."""

import pytest

from autoqra.pipeline.common import evolution_settings, shard_of
from autoqra.pipeline.search import phase_size

SEARCH = {"population": 40, "generations": 12, "promote": 6, "shards": 8}


def test_phase_sizes_follow_the_search_settings():
    multi = evolution_settings(SEARCH, {})
    assert [phase_size(multi, 0, p) for p in ("lf", "hf")] == [40, 40]  # the initial population, twice
    assert [phase_size(multi, 3, p) for p in ("lf", "hf")] == [40, 6]   # offspring at LF, promoted at HF
    single = evolution_settings(SEARCH, {"multi_fidelity": False})
    assert [phase_size(single, g, "lf") for g in (0, 5)] == [0, 0]      # no LF phase at all
    assert [phase_size(single, g, "hf") for g in (0, 5)] == [40, 40]
    fewer = evolution_settings({**SEARCH, "offspring": 3, "promote": 3}, {})
    assert [phase_size(fewer, 1, p) for p in ("lf", "hf")] == [3, 3]
    with pytest.raises(ValueError, match="phase"):
        phase_size(multi, 1, "mf")


@pytest.mark.parametrize("n,shards", [(6, 8), (40, 8), (4, 4), (1, 3)])
def test_min_shards_gives_every_job_a_candidate_and_every_candidate_a_job(n, shards):
    jobs = min(shards, n)
    parts = [shard_of(list(range(n)), k, jobs) for k in range(jobs)]
    assert all(parts) and sorted(i for p in parts for i in p) == list(range(n))
    assert not all(shard_of(list(range(n)), k, shards) for k in range(shards)) or n >= shards
