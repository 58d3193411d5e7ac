"""Task-aware NAS: the dictionary, the search in the closest baseline's space, the comparison, the CLI."""
import json

import pytest
import torch

import ftdfast
from ftdfast.nas import SearchSpace
from ftdfast.nas import tanas as T
from ftdfast.nas.evaluate import compare, to_markdown
from ftdfast.tasks import Task

TINY = T.Budget(iterations=1, candidates=2, rounds=1, w_steps=3, alpha_steps=1, batch_size=32, channels=4, layers=3)


@pytest.fixture(scope="module")
def tasks():
    digits = ftdfast.load_dataset("digits").subset(train=300, test=90)
    specs = [Task("zero", (0,), binary=True), Task("six", (6,), binary=True), Task("low", (0, 1, 2), other=True)]
    return [t.build(digits, seed=0) for t in specs]


@pytest.fixture(scope="module")
def dictionary(tasks, tmp_path_factory):
    root = tmp_path_factory.mktemp("dict")
    path = str(root / "dictionary.json")
    d = T.build_dictionary(tasks[:2], budget=TINY, seeds=1, config=ftdfast.TrainConfig(epochs=1),
                           cache_dir=str(root / "cache"), path=path, progress=False)
    return d, path


def test_dictionary_holds_each_baseline_and_round_trips(dictionary, tasks):
    d, path = dictionary
    assert d.names() == ["zero", "six"]
    for entry, td in zip(d.entries, tasks):
        assert entry.fingerprint == td.fingerprint() and entry.task == td.task.to_dict()
        assert d.general_space.contains(entry.genotype)
    again = T.TaskDictionary.load(path)
    assert again.to_dict() == d.to_dict()
    assert again.distance["arch"] == "small_cnn" and again.distance["seeds"] == [0]


def test_dictionary_build_resumes_without_searching_again(dictionary, tasks, monkeypatch):
    d, path = dictionary

    def boom(*a, **k):
        raise AssertionError("a baseline already in the file was searched again")
    monkeypatch.setattr(T, "fuse_search", boom)
    again = T.build_dictionary(tasks[:2], budget=TINY, seeds=1, config=ftdfast.TrainConfig(epochs=1),
                               cache_dir=d.distance["cache_dir"], path=path, progress=False)
    assert [e.genotype for e in again.entries] == [e.genotype for e in d.entries]


def test_search_uses_the_closest_baselines_restricted_space(dictionary, tasks):
    d, _ = dictionary
    out = T.TaskAwareNAS(d, tasks[:2]).search(tasks[2], TINY, progress=False)
    assert set(out.distances) == {"zero", "six"} and all(0 < v <= 1 for v in out.distances.values())
    assert out.closest == min(out.distances, key=out.distances.get)
    want = d.general_space.restrict_to(d[out.closest].genotype)
    assert out.space == want and want.contains(out.genotype)
    assert set(out.genotype.op_set) <= set(d[out.closest].genotype.op_set)
    assert out.seconds > 0 and len(out.history) == TINY.iterations


def test_distances_equal_the_distance_matrix_column(dictionary, tasks):
    d, _ = dictionary
    mean, _ = T.TaskAwareNAS(d, tasks[:2]).distances(tasks[2], progress=False)
    m = ftdfast.distance_matrix(tasks, "small_cnn", [0], epochs=1, cache_dir=d.distance["cache_dir"],
                                progress=False)
    assert mean["zero"] == pytest.approx(m.mean[0, 2], rel=1e-12)
    assert mean["six"] == pytest.approx(m.mean[1, 2], rel=1e-12)


def test_incumbent_keeps_its_weights_across_iterations(tasks, monkeypatch):
    seen = []
    real = T.fuse

    def spy(cands, *a, **k):
        seen.append(list(cands))
        return real(cands, *a, **k)
    monkeypatch.setattr(T, "fuse", spy)
    budget = T.Budget(iterations=2, candidates=2, rounds=1, w_steps=2, alpha_steps=1, channels=4, layers=3)
    out = T.fuse_search(SearchSpace(), tasks[2], budget, progress=False)
    assert isinstance(seen[1][0], torch.nn.Module)  # the first run's winner, trained, joins the second run
    assert all(isinstance(c, ftdfast.nas.Genotype) for c in seen[1][1:])
    assert out.genotype is not None


def test_comparison_rows_and_resume(dictionary, tasks, tmp_path, monkeypatch):
    d, _ = dictionary
    rows = compare(tasks[2], d, tasks[:2], TINY, epochs=1, hand_designed=("small_cnn",), out_dir=str(tmp_path),
                   progress=False)
    assert [r["method"] for r in rows] == ["TA-NAS (ours)", "FUSE, general space", "Random search, general space",
                                           "small_cnn"]
    for r in rows:
        assert 0 <= r["test_accuracy"] <= 1 and r["params_m"] > 0 and r["budget"] == TINY.to_dict()
    table = to_markdown(rows)
    assert "| TA-NAS (ours) |" in table and "Closest baseline" in table

    monkeypatch.setattr(T.TaskAwareNAS, "search", lambda *a, **k: pytest.fail("row not resumed"))
    again = compare(tasks[2], d, tasks[:2], TINY, epochs=1, hand_designed=("small_cnn",), out_dir=str(tmp_path),
                    progress=False)
    assert again == rows


def test_random_search_trains_each_candidate_alone(tasks):
    out = T.random_search(SearchSpace(), tasks[2], TINY, progress=False)
    assert len(out.history) == TINY.iterations * TINY.candidates
    best = max(h["val_accuracy"] for h in out.history)
    assert any(h["genotype"] == out.genotype.to_dict() and h["val_accuracy"] == best for h in out.history)


# ------------------------------------------------------------------------------------------ bad input
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


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    (json.dumps({"format": "something else"}), "not a task dictionary"),
    (json.dumps({"format": T.FORMAT, "version": 1, "entries": [{"name": "x"}], "input_shape": [1, 8, 8],
                 "general_space": SearchSpace().to_dict(), "distance": {}}), "malformed"),
    (json.dumps({"format": T.FORMAT, "version": 1, "entries": [], "input_shape": [1, 8, 8],
                 "general_space": SearchSpace().to_dict(), "distance": {}}), "no baseline task"),
])
def test_malformed_dictionary_files(tmp_path, content, match):
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        T.TaskDictionary.load(str(path))


def test_missing_dictionary_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dictionary build"):
        T.TaskDictionary.load(str(tmp_path / "none.json"))


@pytest.mark.parametrize("kw", [{"iterations": 0}, {"candidates": -1}, {"seconds": 0}])
def test_bad_budget(kw):
    with pytest.raises(ValueError, match="Budget"):
        T.Budget(**kw)


def test_empty_baselines():
    with pytest.raises(ValueError, match="at least one baseline"):
        T.build_dictionary([])


def test_cli_dictionary_and_search(tmp_path, capsys):
    from ftdfast.cli import main
    small = ["--iterations", "1", "--candidates", "2", "--rounds", "1", "--w-steps", "2", "--alpha-steps", "1",
             "--channels", "4", "--epochs", "1", "--no-progress"]
    path = str(tmp_path / "dict.json")
    assert main(["dictionary", "build", "--tasks", "0,3", "--max-train", "300", "--max-test", "90", "--out", path]
                + small) == 0
    assert main(["search", "--dictionary", path, "--target", "digits:2", "--hand-designed", "",
                 "--out", str(tmp_path / "search")] + small) == 0
    out = capsys.readouterr().out
    assert "Task-aware search for digits:2" in out and "Closest baseline" in out
    assert (tmp_path / "search" / "table.md").exists()
    assert main(["search", "--dictionary", path, "--target", "digits", "--out", str(tmp_path)] + small) == 2
    assert "DATASET:TASK_INDEX" in capsys.readouterr().err


def test_search_in_a_space_smaller_than_the_budget(tasks):
    from ftdfast.nas import uniform_genotype
    tiny_space = SearchSpace().restrict_to(uniform_genotype("conv_3x3", 3))
    assert tiny_space.size() == 1
    out = T.fuse_search(tiny_space, tasks[2], TINY, progress=False)
    assert out.genotype == tiny_space.sample(0)
