"""Fixtures shared by the unit tests."""

import pytest


@pytest.fixture(scope="module")
def one_thread():
    """Run a module single-threaded: micro-model matmuls are tiny, and on a shared 2-core runner a
    second intra-op thread only spins (measured 10-20x slower under load)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


MICRO_SPEC = {"source": "micro", "id": None, "revision": None, "micro": None}


@pytest.fixture(scope="session")
def micro_model_dir(tmp_path_factory):
    """One prepared micro random Llama (seed 0) for the whole session; tests only read it."""
    from autoqra.models import prepare_model

    d = tmp_path_factory.mktemp("micro") / "m"
    prepare_model(MICRO_SPEC, d, seed=0)
    return d
