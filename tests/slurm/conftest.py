"""Fixtures of the real-Slurm tests: a single-node Slurm on localhost, started once per session."""

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "reliability"))  # result comparison helpers

import localslurm  # noqa: E402


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    why = localslurm.missing()
    if why:
        pytest.skip(f"real-Slurm test skipped: {why}")
    cluster = localslurm.LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
