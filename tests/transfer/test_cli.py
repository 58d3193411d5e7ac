"""``ftdfast transfer rank`` end to end on tiny data (scikit-learn's 8x8 digits), and its file formats."""
import json
import os
import warnings

import numpy as np
import pytest
import torch

from ftdfast import Cache, TrainConfig, get_trained
from ftdfast.cli import main
from ftdfast.experiment import _paper_task_data
from ftdfast.transfer import get
from ftdfast.transfer.report import load_model_file, parse_method

TINY = ["--max-train", "200", "--max-test", "80", "--epochs", "1", "--seeds", "1", "--no-progress"]


def run(argv, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # networks of one epoch miss epsilon, and say so
        code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def check_ranking(r):
    sign = 1 if r["lower_is_better"] else -1
    assert r["order"] == sorted(r["scores"], key=lambda n: (sign * r["scores"][n], n))


def test_source_tasks_against_a_dataset_target(tmp_path, capsys):
    out_json, out_png = tmp_path / "r.json", tmp_path / "r.png"
    code, out, err = run(["transfer", "rank", "--source-tasks", "digits:0,3", "--target", "digits:2",
                          "--target-train", "40", "--method", "ftd,ftd[params=body;fisher=empirical],leep", *TINY,
                          "--json", str(out_json), "--plot", str(out_png)], capsys)
    assert code == 0, err
    d = json.loads(out_json.read_text())
    assert d["sources"] == ["digits:0", "digits:3"] and d["target"] == "digits:2"
    assert list(d["rankings"]) == ["ftd", "ftd[params=body,fisher=empirical]", "leep"]
    for label, r in d["rankings"].items():
        check_ranking(r)
        assert f"{label} (" in out and all(name in out for name in r["order"])
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_model_files_against_an_npz_target(tmp_path, capsys):
    cache = Cache(str(tmp_path / "cache"))
    _, tasks = _paper_task_data("digits", None, [0, 3], max_train=200, max_test=80)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nets = [get_trained(cache, t, "small_cnn", 0, TrainConfig(epochs=1), num_outputs=10, progress=False)[0]
                for t in tasks]
    entries = sorted(os.listdir(tmp_path / "cache" / "model"))
    plain = tmp_path / "plain.pt"
    torch.save({"build": dict(arch="small_cnn", in_channels=1, num_classes=10, input_size=8),
                "state_dict": nets[0].state_dict()}, plain)
    _, (target,) = _paper_task_data("digits", None, [2], max_train=200, max_test=80)
    npz = tmp_path / "target.npz"
    np.savez(npz, x_train=target.x_train.numpy(), y_train=target.y_train.numpy(), x_test=target.x_test.numpy(),
             y_test=target.y_test.numpy())
    out_json = tmp_path / "r.json"
    code, out, err = run(["transfer", "rank", "--source-model",
                          *[str(tmp_path / "cache" / "model" / e) for e in entries], f"mine={plain}",
                          "--target", str(npz), "--target-train", "50", "--method", "leep,nce", "--json",
                          str(out_json), "--no-progress"], capsys)
    assert code == 0, err
    d = json.loads(out_json.read_text())
    assert sorted(d["sources"]) == ["digits:0/seed0", "digits:3/seed0", "mine"]
    leep = d["rankings"]["leep"]["scores"]
    assert leep["mine"] == pytest.approx(leep["digits:0/seed0"])  # the same network, two file formats


def test_a_file_that_is_not_a_trained_model(tmp_path, capsys):
    bad = tmp_path / "state.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, bad)
    code, _, err = run(["transfer", "rank", "--source-model", str(bad), "--target", "digits:2"], capsys)
    assert code == 2 and "not a trained model" in err and "'build'" in err
    with pytest.raises(ValueError, match="not a readable trained-model file"):
        (tmp_path / "junk.pt").write_bytes(b"junk")
        load_model_file(str(tmp_path / "junk.pt"))


def test_unknown_method_and_missing_sources(capsys):
    code, _, err = run(["transfer", "rank", "--source-tasks", "digits:0", "--target", "digits:2", "--method",
                        "kl"], capsys)
    assert code == 2 and "known: ftd, fisher_cosine" in err
    code, _, err = run(["transfer", "rank", "--target", "digits:2"], capsys)
    assert code == 2 and "no sources" in err


@pytest.mark.parametrize("est", [get("leep"), get("ftd", head="probe", fisher="exact"),
                                 get("task2vec", max_samples=200)], ids=lambda e: e.label)
def test_parse_method_reads_labels_back(est):
    assert parse_method(est.label).label == est.label
    with pytest.raises(ValueError, match="option=value"):
        parse_method("ftd[probe]")
