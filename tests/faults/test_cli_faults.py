"""The command line on bad files and options: ``ftdfast <cmd>: error: <file>: <what is wrong>``, exit code 2,
before any work, never a traceback.

Each case: a readable id, the arguments (``{d}`` is a folder of prepared files), and a fragment of the
error line.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from ftdfast.cli import main

FISHER = ["fisher", "--model", "tests.cli_models:tiny_cnn", "--no-progress"]


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "good.npz", x=rng.integers(0, 255, (7, 6, 6), dtype=np.uint8), y=np.arange(7) % 4)
    np.savez(tmp_path / "strings.npz", x=np.array(["a", "b"]), y=np.array([0, 1]))
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "text.npz").write_text("x,y\n1,2\n")
    (tmp_path / "corrupt.pt").write_bytes(bytes(range(256)) * 3)
    (tmp_path / "text.pt").write_text("not weights\n")
    torch.save({"nope.weight": torch.zeros(2)}, tmp_path / "other.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    (tmp_path / "a-file").write_text("")
    return tmp_path


CASES = [
    # (id, arguments, fragment of the error line)
    ("weights-corrupt", FISHER + ["--data", "{d}/good.npz", "--weights", "{d}/corrupt.pt"],
     "{d}/corrupt.pt: not a readable torch.save state_dict file"),
    ("weights-text", FISHER + ["--data", "{d}/good.npz", "--weights", "{d}/text.pt"],
     "{d}/text.pt: not a readable torch.save state_dict file"),
    ("weights-other-model", FISHER + ["--data", "{d}/good.npz", "--weights", "{d}/other.pt"],
     "{d}/other.pt: does not fit --model"),
    ("weights-not-a-dict", FISHER + ["--data", "{d}/good.npz", "--weights", "{d}/list.pt"],
     "{d}/list.pt: holds a list, not a state_dict"),
    ("weights-missing", FISHER + ["--data", "{d}/good.npz", "--weights", "{d}/none.pt"], "{d}/none.pt: no such file"),
    ("data-strings", FISHER + ["--data", "{d}/strings.npz"], "{d}/strings.npz: array x has dtype <U1"),
    ("data-objects", FISHER + ["--data", "{d}/objects.npz"], "{d}/objects.npz: array x or y cannot be read"),
    ("data-text-file", FISHER + ["--data", "{d}/text.npz"], "{d}/text.npz: not a readable .npz archive"),
    ("data-npy-file", FISHER + ["--data", "{d}/single.npy"], "{d}/single.npy: a single .npy array"),
    ("data-missing", FISHER + ["--data", "{d}/none.npz"], "{d}/none.npz: no such file"),
    ("distance-dataset-text-file", ["distance", "--dataset", "{d}/text.npz", "--out", "{d}/out"],
     "{d}/text.npz: not a readable .npz archive"),
    ("out-under-a-file", FISHER + ["--data", "{d}/good.npz", "--out", "{d}/a-file/fisher.pt"], "{d}/a-file"),
    # numeric options: refused when parsed, before any data is read or any network trained
    ("distance-fisher-samples-0", ["distance", "--fisher-samples", "0"], "--fisher-samples: must be an integer >= 1"),
    ("distance-seeds-0", ["distance", "--seeds", "0"], "--seeds: must be an integer >= 1"),
    ("distance-epochs-negative", ["distance", "--epochs", "-1"], "--epochs: must be an integer >= 1"),
    ("distance-batch-size-float", ["distance", "--batch-size", "2.5"], "--batch-size: must be an integer >= 1"),
    ("fisher-mc-samples-0", FISHER + ["--data", "x.npz", "--mc-samples", "0"], "--mc-samples: must be an integer"),
    ("fisher-max-samples-0", FISHER + ["--data", "x.npz", "--max-samples", "0"], "--max-samples: must be an integer"),
    ("search-budget-seconds-0", ["search", "--dictionary", "d.json", "--target", "digits:2", "--budget-seconds", "0"],
     "--budget-seconds: must be a finite number > 0"),
    ("search-hand-width-nan", ["search", "--dictionary", "d.json", "--target", "digits:2", "--hand-width", "nan"],
     "--hand-width: must be a finite number > 0"),
    ("dictionary-w-steps-0", ["dictionary", "build", "--w-steps", "0"], "--w-steps: must be an integer >= 1"),
    ("dictionary-report-epochs-0", ["dictionary", "build", "--report-epochs", "0"],
     "--report-epochs: must be an integer >= 1"),
    ("dictionary-epsilon-1", ["dictionary", "build", "--epsilon", "1"], "--epsilon: must be a number in (0, 1)"),
    ("dictionary-epsilon-text", ["dictionary", "build", "--epsilon", "x"], "--epsilon: must be a number in (0, 1)"),
    ("search-weight-loss", ["search", "--dictionary", "d.json", "--target", "digits:2", "--weight-loss", "sum"],
     "--weight-loss: invalid choice"),
]


def run_cli(argv):
    """(exit code, stderr) of ``main(argv)``; argparse's errors exit through SystemExit."""
    try:
        return main(argv)
    except SystemExit as e:
        return e.code


@pytest.mark.parametrize("argv,fragment", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_is_one_error_line_with_exit_code_2(files, argv, fragment, capsys, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    argv = [a.format(d=files) for a in argv]
    assert run_cli(argv) == 2
    err = capsys.readouterr().err
    command = argv[0]
    assert f"ftdfast {command}" in err and "error: " in err, err
    assert fragment.format(d=files) in err, err
    assert "Traceback" not in err and "weights_only=False" not in err and "allow_pickle" not in err


def test_an_unwritable_out_folder_is_reported(files, capsys, monkeypatch):
    """As root a read-only folder is writable, so the PermissionError is raised where the file is written."""
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(files / "ro" / "fisher.pt"))

    monkeypatch.setattr("ftdfast.fisher.result.atomic_write_bytes", refuse)
    assert run_cli(FISHER + ["--data", str(files / "good.npz"), "--out", str(files / "ro" / "fisher.pt")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"ftdfast fisher: error: {files / 'ro' / 'fisher.pt'}: Permission denied"
