"""The command line: ftdfast fisher and ftdfast demo."""
import numpy as np
import pytest
import torch

import ftdfast
from ftdfast.cli import main
from ftdfast.data.formats import read_npz_split


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x_train=rng.integers(0, 255, (5, 6, 6), dtype=np.uint8), y_train=np.arange(5) % 4,
             x_test=rng.integers(0, 255, (7, 6, 6), dtype=np.uint8), y_test=np.arange(7) % 4)
    return path


def test_fisher_command_writes_the_file_and_prints_the_table(npz, tmp_path, capsys):
    out = tmp_path / "f.pt"
    rc = main(["fisher", "--model", "tests.cli_models:tiny_cnn", "--data", str(npz), "--out", str(out),
               "--no-progress", "--backend", "rules"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "total" in text and "N = 7" in text
    f = ftdfast.FisherDiagonal.load(out)
    from tests.cli_models import tiny_cnn
    x, y = read_npz_split(str(npz), "test")
    want = ftdfast.fisher_diagonal(tiny_cnn().eval(), (x, y), backend="loop", progress=False)
    for k in want:
        torch.testing.assert_close(f[k], want[k], rtol=1e-5, atol=1e-9)


def test_read_npz_split_layouts(tmp_path):
    path = tmp_path / "c.npz"
    np.savez(path, x=np.zeros((3, 4, 4, 3), dtype=np.uint8) + 255, y=np.array([0, 1, 2]))
    x, y = read_npz_split(str(path), "test")
    assert x.shape == (3, 3, 4, 4) and float(x.max()) == 1.0 and y.dtype == torch.long


@pytest.mark.parametrize("argv,match", [
    (["fisher", "--model", "tests.cli_models:tiny_cnn", "--data", "missing.npz"], "no such file"),
    (["fisher", "--model", "tests.cli_models", "--data", "x.npz"], "module:factory"),
    (["fisher", "--model", "tests.cli_models:nope", "--data", "x.npz"], "cannot import"),
])
def test_bad_arguments(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ftdfast fisher: error: ") and match in err


def test_errors_from_the_library_are_reported_not_raised(npz, tmp_path, capsys):
    rc = main(["fisher", "--model", "tests.cli_models:tiny_cnn", "--data", str(npz), "--loss", "mse",
               "--no-progress"])
    assert rc == 2
    assert "mse needs targets of the output's shape" in capsys.readouterr().err


def test_demo_runs_end_to_end(capsys, tmp_path):
    out = tmp_path / "demo"
    rc = main(["demo", "--epochs", "1", "--seeds", "1", "--no-search", "--no-progress", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "closest source" in text and "digits:3" in text
    m = ftdfast.DistanceMatrix.load(out / "distance_small_cnn.json")
    assert m.tasks == ["digits:0", "digits:1", "digits:2", "digits:3"] and m.per_seed.shape == (1, 4, 4)
    for name in ("distance_small_cnn.md", "distance_small_cnn_mean.png", "atlas_small_cnn.png", "summary.md"):
        assert (out / name).stat().st_size > 0


def test_distance_command_writes_everything_and_resumes(tmp_path, capsys):
    out = tmp_path / "res"
    argv = ["distance", "--dataset", "digits", "--tasks", "0,2", "--seeds", "2", "--epochs", "1",
            "--max-train", "300", "--max-test", "90", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    first = ftdfast.DistanceMatrix.load(out / "distance_small_cnn.json")
    assert first.per_seed.shape == (2, 2, 2) and first.closest("digits:0") == "digits:2"
    entries = sorted(p.name for p in (out / "cache").rglob("*.pt"))
    assert len(entries) == 2 * 2 + 2 * 4  # trained nets + Fisher passes
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*.pt")}
    assert main(argv) == 0  # a rerun resumes: nothing is recomputed
    assert {p: p.stat().st_mtime_ns for p in (out / "cache").rglob("*.pt")} == mtimes
    again = ftdfast.DistanceMatrix.load(out / "distance_small_cnn.json")
    np.testing.assert_array_equal(again.per_seed, first.per_seed)


@pytest.mark.parametrize("argv,match", [
    (["distance", "--dataset", "nowhere.npz"], "nowhere.npz"),
    (["distance", "--tasks", "0,9"], "need at least two indices"),
    (["distance", "--tasks", "zero"], "--tasks must be"),
])
def test_distance_command_bad_arguments(argv, match, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path)]) == 2
    assert match in capsys.readouterr().err
