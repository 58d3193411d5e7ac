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


TINY_BUDGET = dict(iterations=1, candidates=2, rounds=1, w_steps=3, alpha_steps=20, batch_size=32, channels=4,
                   layers=3)


@pytest.fixture(scope="session")
def tasks():
    """Three small digits tasks: "zero" and "six" (binary), "low" (0, 1, 2 and other)."""
    import ftdfast
    from ftdfast.tasks import Task
    digits = ftdfast.load_dataset("digits").subset(train=300, test=90)
    specs = [Task("zero", (0,), binary=True), Task("six", (6,), binary=True), Task("low", (0, 1, 2), other=True)]
    return [t.build(digits, seed=0) for t in specs]


@pytest.fixture(scope="session")
def dictionary(tasks, tmp_path_factory):
    """A dictionary of the "zero" and "six" baselines at the tiny budget, and its path."""
    import ftdfast
    from ftdfast.nas import Budget, build_dictionary
    root = tmp_path_factory.mktemp("dict")
    path = str(root / "dictionary.json")
    d = build_dictionary(tasks[:2], budget=Budget(**TINY_BUDGET), seeds=1, config=ftdfast.TrainConfig(epochs=1),
                         cache_dir=str(root / "cache"), path=path, progress=False)
    return d, path
