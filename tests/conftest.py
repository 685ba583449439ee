"""Fixtures shared by the integration and reliability tests."""

import os
from pathlib import Path

import pytest
from workflow_runner import MICRO, snakemake


@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """The whole micro DAG (every stage, every method, tables and figures), run once per session.
    Tests may read it; only the paper-figures test rewrites (and restores) paper_figures/."""
    reuse = os.environ.get("AUTOQRA_TEST_MICRO_RUN")  # a finished run's directory, while iterating on tests
    if reuse:
        return Path(reuse)
    work = tmp_path_factory.mktemp("micro")
    res = snakemake(work, "--configfile", str(MICRO))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return work
