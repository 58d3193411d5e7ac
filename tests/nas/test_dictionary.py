"""The task dictionary: build, resume, seeds per baseline, the schema checked on load, the quality report."""
import json

import pytest

import ftdfast
from ftdfast.nas import Budget, SearchSpace, derive_seed
from ftdfast.nas import dictionary as D

from .conftest import TINY_BUDGET


def test_dictionary_holds_each_baseline_and_round_trips(dictionary, tasks):
    d, path = dictionary
    assert d.names() == ["zero", "six"]
    for entry, td in zip(d.entries, tasks):
        assert entry.fingerprint == td.fingerprint() and entry.task == td.task.to_dict()
        assert d.general_space.contains(entry.genotype)
        assert entry.genotype in entry.candidates and len(entry.candidates) == TINY_BUDGET["candidates"]
        assert entry.seed == derive_seed(0, "baseline", td.fingerprint())
    assert d.entries[0].seed != d.entries[1].seed
    again = D.TaskDictionary.load(path)
    assert again.to_dict() == d.to_dict()
    assert again.distance["arch"] == "small_cnn" and again.distance["seeds"] == [0]


def test_dictionary_build_resumes_without_searching_again(dictionary, tasks, monkeypatch):
    d, path = dictionary

    def boom(*a, **k):
        raise AssertionError("a baseline already in the file was searched again")
    monkeypatch.setattr(D, "fuse_search", boom)
    again = D.build_dictionary(tasks[:2], budget=Budget(**TINY_BUDGET), seeds=1,
                               config=ftdfast.TrainConfig(epochs=1), cache_dir=d.distance["cache_dir"], path=path,
                               progress=False)
    assert [e.genotype for e in again.entries] == [e.genotype for e in d.entries]


def _file(distance, entries=None):
    return json.dumps({"format": D.FORMAT, "version": 1, "entries": entries if entries is not None else [],
                       "input_shape": [1, 8, 8], "general_space": SearchSpace().to_dict(), "distance": distance})


GOOD_DISTANCE = {"arch": "small_cnn", "seeds": [0], "config": {"epochs": 1}, "cache_dir": None}


@pytest.mark.parametrize("content,match", [
    ("{not json", "not valid JSON"),
    (json.dumps({"format": "something else"}), "not a task dictionary"),
    (_file(GOOD_DISTANCE, [{"name": "x"}]), "malformed"),
    (_file(GOOD_DISTANCE), "no baseline task"),
    (_file({"seeds": [0], "config": {}}), r"distance settings lack 'arch'"),
    (_file({}), r"distance settings lack 'arch', 'seeds', 'config'"),
    (_file([1, 2]), "distance settings are a list"),
    (_file({**GOOD_DISTANCE, "arch": 3}), "have arch 3"),
    (_file({**GOOD_DISTANCE, "seeds": []}), r"have seeds \[\]"),
    (_file({**GOOD_DISTANCE, "seeds": ["0"]}), r"have seeds \['0'\]"),
    (_file({**GOOD_DISTANCE, "config": {"epochs": -1}}), "invalid config"),
    (_file({**GOOD_DISTANCE, "cache_dir": 5}), "have cache_dir 5"),
    (_file({**GOOD_DISTANCE, "fisher_options": [1]}), "have fisher_options"),
])
def test_malformed_dictionary_files(tmp_path, content, match):
    path = tmp_path / "d.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        D.TaskDictionary.load(str(path))


def test_schema_error_names_the_fix(dictionary, tmp_path):
    d, _ = dictionary
    payload = d.to_dict()
    del payload["distance"]["arch"]
    path = tmp_path / "no_arch.json"
    path.write_text(json.dumps(payload))
    with pytest.raises(ValueError, match=r"no_arch.json is a malformed task dictionary: .*lack 'arch'.*rebuild it"):
        D.TaskDictionary.load(str(path))


def test_missing_dictionary_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="dictionary build"):
        D.TaskDictionary.load(str(tmp_path / "none.json"))


def test_empty_baselines():
    with pytest.raises(ValueError, match="at least one baseline"):
        D.build_dictionary([])


def test_quality_report(dictionary, tasks):
    d, _ = dictionary
    rows = D.dictionary_report(d, tasks[:2], epochs=1, progress=False)
    assert [r["name"] for r in rows] == ["zero", "six"]
    for r, e in zip(rows, d.entries):
        assert r["candidates"] == len(e.candidates) == len(r["accuracies"])
        assert r["cell"] == r["accuracies"][e.candidates.index(e.genotype)]
        assert r["best"] == max(r["accuracies"]) and min(r["accuracies"]) <= r["median"] <= r["best"]
        assert r["rank"] == 1 + sum(a > r["cell"] for a in r["accuracies"])
    table = D.report_markdown(rows)
    assert table.count("\n") == 2 + len(rows) and "| zero |" in table
    with pytest.raises(ValueError, match="no TaskData given for baseline 'six'"):
        D.dictionary_report(d, tasks[:1], epochs=1, progress=False)
