"""build_dictionary on 2 gloo processes: one baseline search per rank, met in the shared folder."""
import os

import torch

import ftdfast
from ftdfast.nas import Budget
from ftdfast.nas import dictionary as T
from ftdfast.tasks import Task
from tests.test_distributed import _free_port, _init, _spawn

TINY = Budget(iterations=1, candidates=2, rounds=1, w_steps=2, alpha_steps=20, batch_size=32, channels=4, layers=3)


def _baselines():
    digits = ftdfast.load_dataset("digits").subset(train=200, test=60)
    return [Task(n, c, binary=True).build(digits, seed=0) for n, c in (("zero", (0,)), ("six", (6,)))]


def _worker(rank: int, tmp: str, port: int) -> None:
    _init(rank, port)
    seen = []
    real = T.fuse_search

    def spy(space, td, *a, **k):
        seen.append(td.task.name)
        return real(space, td, *a, **k)
    T.fuse_search = spy
    d = T.build_dictionary(_baselines(), budget=TINY, config=ftdfast.TrainConfig(epochs=1),
                           path=os.path.join(tmp, "dictionary.json"), progress=False)
    torch.save({"dict": d.to_dict(), "searched": seen}, os.path.join(tmp, f"rank{rank}.pt"))


def test_distributed_dictionary_searches_each_baseline_once(tmp_path):
    _spawn(_worker, str(tmp_path), _free_port())
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert sorted(ranks[0]["searched"] + ranks[1]["searched"]) == ["six", "zero"]  # one search per baseline
    assert ranks[0]["dict"] == ranks[1]["dict"]
    assert T.TaskDictionary.load(str(tmp_path / "dictionary.json")).names() == ["zero", "six"]
    assert len(list((tmp_path / "entries").glob("*.json"))) == 2
