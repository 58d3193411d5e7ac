"""distance_matrix on 2 gloo processes: the items are split over the ranks, met in the shared cache,
and every rank assembles the same matrix as a single process."""
import os

import numpy as np
import pytest
import torch

import ftdfast
from ftdfast.tasks import Task
from tests.test_distributed import _free_port, _init, _spawn

SEEDS = [0, 1]


def _tasks():
    digits = ftdfast.load_dataset("digits").subset(train=300, test=90)
    return [t.build(digits, seed=0) for t in (Task("zero", (0,), binary=True), Task("six", (6,), binary=True),
                                               Task("low", (0, 1, 2), other=True))]


def _worker(rank: int, tmp: str, port: int) -> None:
    _init(rank, port)
    m = ftdfast.distance_matrix(_tasks(), "small_cnn", SEEDS, epochs=1, cache_dir=os.path.join(tmp, "cache"),
                                progress=False)
    torch.save({"per_seed": m.per_seed, "world": m.meta["world_size"]}, os.path.join(tmp, f"matrix{rank}.pt"))


def test_distributed_matrix_equals_single_process(tmp_path):
    _spawn(_worker, str(tmp_path), _free_port(), deadline_s=300)  # two cold starts on a shared 2-core machine
    ranks = [torch.load(tmp_path / f"matrix{r}.pt", weights_only=False) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    np.testing.assert_array_equal(ranks[0]["per_seed"], ranks[1]["per_seed"])
    single = ftdfast.distance_matrix(_tasks(), "small_cnn", SEEDS, epochs=1, progress=False)
    # the ranks run on 1 thread, this process on several: float32 training rounds differently (~1e-8)
    np.testing.assert_allclose(ranks[0]["per_seed"], single.per_seed, rtol=1e-6)
    # every item ran once: 3 tasks x 2 seeds trained networks, 2 x 9 Fisher passes
    assert len(list((tmp_path / "cache" / "model").glob("*.pt"))) == 6
    assert len(list((tmp_path / "cache" / "fisher").glob("*.pt"))) == 18


def test_distributed_matrix_needs_a_shared_cache(monkeypatch):
    from ftdfast import distributed
    monkeypatch.setattr(distributed, "world", lambda group=None: (0, 2))
    with pytest.raises(ValueError, match="needs cache_dir"):
        ftdfast.distance_matrix(_tasks(), "small_cnn", 1, epochs=1, progress=False)
