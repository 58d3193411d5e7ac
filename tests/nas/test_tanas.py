"""Task-aware NAS: the search in the closest baseline's space, the comparison, the CLI."""
import pytest
import torch

import ftdfast
from ftdfast.nas import Budget, derive_seed
from ftdfast.nas import evaluate as E
from ftdfast.nas import tanas as T
from ftdfast.tasks import Task

from .conftest import TINY_BUDGET

TINY = Budget(**TINY_BUDGET)


def test_search_uses_the_closest_baselines_restricted_space(dictionary, tasks):
    d, _ = dictionary
    out = T.TaskAwareNAS(d, tasks[:2]).search(tasks[2], TINY, progress=False)
    assert set(out.distances) == {"zero", "six"} and all(0 < v <= 1 for v in out.distances.values())
    assert out.closest == min(out.distances, key=out.distances.get)
    want = d.general_space.restrict_to(d[out.closest].genotype)
    assert out.space == want and want.contains(out.genotype)
    assert set(out.genotype.op_set) <= set(d[out.closest].genotype.op_set)
    assert 0 < out.distance_seconds < out.seconds and len(out.history) == TINY.iterations


def test_distances_equal_the_distance_matrix_column(dictionary, tasks):
    d, _ = dictionary
    mean, _ = T.TaskAwareNAS(d, tasks[:2]).distances(tasks[2], progress=False)
    m = ftdfast.distance_matrix(tasks, "small_cnn", [0], epochs=1, cache_dir=d.distance["cache_dir"],
                                progress=False)
    assert mean["zero"] == pytest.approx(m.mean[0, 2], rel=1e-12)
    assert mean["six"] == pytest.approx(m.mean[1, 2], rel=1e-12)


def test_comparison_rows_and_resume(dictionary, tasks, tmp_path, monkeypatch):
    d, _ = dictionary
    rows = E.compare(tasks[2], d, tasks[:2], TINY, epochs=1, final_seeds=(0, 1), hand_designed=("small_cnn",),
                     out_dir=str(tmp_path), progress=False)
    assert [r["method"] for r in rows] == ["TA-NAS (ours)", "FUSE, general space", "Random search, general space",
                                           "small_cnn"]
    for r in rows:
        assert 0 <= r["test_accuracy"] <= 1 and r["params_m"] > 0 and r["budget"] == TINY.to_dict()
        assert len(r["test_accuracy_per_seed"]) == 2 and r["test_accuracy_std"] is not None
        assert r["test_accuracy"] == pytest.approx(sum(r["test_accuracy_per_seed"]) / 2, rel=1e-12)
    seeds = [r["search_seed"] for r in rows[:3]]
    assert seeds == [derive_seed(0, m) for m in ("ta_nas", "fuse_general", "random_general")]
    assert rows[0]["distance_seconds"] > 0 and rows[1]["distance_seconds"] is None
    table = E.to_markdown(rows)
    assert "| TA-NAS (ours) |" in table and "Closest baseline" in table and "(2 seeds)" in table

    monkeypatch.setattr(T.TaskAwareNAS, "search", lambda *a, **k: pytest.fail("row not resumed"))
    again = E.compare(tasks[2], d, tasks[:2], TINY, epochs=1, final_seeds=(0, 1), hand_designed=("small_cnn",),
                      out_dir=str(tmp_path), progress=False)
    assert again == rows


def test_one_final_seed_gives_no_std(dictionary, tasks):
    d, _ = dictionary
    rows = E.compare(tasks[2], d, tasks[:2], TINY, epochs=1, hand_designed=(), progress=False)
    assert all(r["test_accuracy_std"] is None for r in rows)
    assert "n/a (1 seed)" in E.to_markdown(rows)


def test_target_with_another_input_shape_is_refused(dictionary, tasks):
    d, _ = dictionary
    other = ftdfast.from_tensors(torch.rand(40, 1, 6, 6), torch.arange(40) % 2, torch.rand(20, 1, 6, 6),
                                 torch.arange(20) % 2)
    with pytest.raises(ValueError, match=r"inputs are \(1, 6, 6\).*baselines take \(1, 8, 8\)"):
        T.TaskAwareNAS(d, tasks[:2]).search(Task("tiny").build(other), TINY, progress=False)


def test_baselines_of_other_data_are_refused(dictionary, tasks):
    d, _ = dictionary
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        T.TaskAwareNAS(d, [tasks[0], tasks[2]])


def test_cli_dictionary_and_search(tmp_path, capsys):
    from ftdfast.cli import main
    small = ["--iterations", "1", "--candidates", "2", "--rounds", "1", "--w-steps", "2", "--alpha-steps", "20",
             "--channels", "4", "--epochs", "1", "--no-progress"]
    path = str(tmp_path / "dict.json")
    assert main(["dictionary", "build", "--tasks", "0,3", "--max-train", "300", "--max-test", "90", "--out", path,
                 "--report-epochs", "2", "--epsilon", "0.5"] + small) == 0
    out = capsys.readouterr().out
    assert "trained alone for 2 epochs" in out       # --report-epochs, apart from --epochs 1
    config = T.TaskDictionary.load(path).distance["config"]     # --epsilon: the distance defaults' epsilon mode
    assert config["until_epsilon"] and config["epsilon"] == 0.5 and config["epochs"] == 1
    assert "Dictionary quality" in out and "| its cell (%) | best candidate (%) | median candidate (%)" in out
    assert main(["search", "--dictionary", path, "--target", "digits:2", "--hand-designed", "", "--seed", "3",
                 "--final-seeds", "0,1", "--out", str(tmp_path / "search")] + small) == 0
    out = capsys.readouterr().out
    assert "Task-aware search for digits:2" in out and "Closest baseline" in out and "(2 seeds)" in out
    assert (tmp_path / "search" / "table.md").exists()
    assert main(["search", "--dictionary", path, "--target", "digits", "--out", str(tmp_path)] + small) == 2
    assert "DATASET:TASK_INDEX" in capsys.readouterr().err
    assert main(["search", "--dictionary", path, "--target", "digits:2", "--final-seeds", "x",
                 "--out", str(tmp_path)] + small) == 2
    assert "--final-seeds must be comma-separated integers" in capsys.readouterr().err


def test_one_distance_seed_gives_no_spread():
    rows = [{"method": "TA-NAS (ours)", "test_accuracy": 0.5, "test_accuracy_std": None,
             "test_accuracy_per_seed": [0.5], "params_m": 0.1, "search_seconds": 3.0, "distance_seconds": 1.0,
             "closest": "a", "distances": {"a": 0.3, "b": 0.4}, "distance_std": {"a": 0.0, "b": 0.0},
             "distance_seeds": 1}]
    table = E.to_markdown(rows)
    assert "a 0.300 ± n/a, b 0.400 ± n/a (one distance seed: no spread)." in table
    rows[0].update(distance_seeds=3, distance_std={"a": 0.01, "b": 0.02})
    assert "a 0.300 ± 0.010, b 0.400 ± 0.020 (mean ± std over 3 distance seeds)." in E.to_markdown(rows)
