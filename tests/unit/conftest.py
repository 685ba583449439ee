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
