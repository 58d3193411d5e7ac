"""Shared fixtures of the NAS tests: one torch thread (these networks are tiny: with several threads on a busy
machine OpenMP's fork/join dominates), float64 helpers and scikit-learn's 8x8 digits."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits():
    """(x (1797, 1, 8, 8) float32 in [0, 1], y (1797,) int64)."""
    sklearn = pytest.importorskip("sklearn.datasets")
    d = sklearn.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(d.target, dtype=torch.long)
