"""The command line of ftdfast.uses: ftdfast merge and ftdfast fisher --saliency."""
import numpy as np
import pytest
import torch

import ftdfast
from ftdfast.cli import main
from ftdfast.data.formats import read_npz_split
from ftdfast.uses import fisher_merge, fisher_saliency
from tests.cli_models import tiny_cnn


@pytest.fixture
def npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x_test=rng.integers(0, 255, (7, 6, 6), dtype=np.uint8), y_test=np.arange(7) % 4)
    return path


def two_models(tmp_path):
    """tiny_cnn's weights and a perturbed copy, saved as state_dict files (the second as {"state_dict": ...})."""
    a = tiny_cnn()
    b = tiny_cnn()
    with torch.no_grad():
        for p in b.parameters():
            p.add_(0.3 * torch.randn_like(p))
    torch.save(a.state_dict(), tmp_path / "wa.pt")
    torch.save({"state_dict": b.state_dict()}, tmp_path / "wb.pt")
    return a, b


def test_merge_command_matches_the_library(npz, tmp_path, capsys):
    a, b = two_models(tmp_path)
    x, y = read_npz_split(str(npz), "test")
    fa = ftdfast.fisher_diagonal(a.eval(), (x, y), progress=False)
    fb = ftdfast.fisher_diagonal(b.eval(), (x[:4], y[:4]), progress=False)
    fa.save(tmp_path / "fa.pt")
    fb.save(tmp_path / "fb.pt")
    out = tmp_path / "sub" / "merged.pt"
    rc = main(["merge", "--fisher", str(tmp_path / "fa.pt"), str(tmp_path / "fb.pt"),
               "--weights", str(tmp_path / "wa.pt"), str(tmp_path / "wb.pt"), "--coef", "2", "1", "--out", str(out)])
    assert rc == 0
    assert "4 of 4 tensors Fisher-weighted" in capsys.readouterr().out
    got = torch.load(out, weights_only=True)
    want = fisher_merge([a, b], [fa, fb], weights=[2, 1])
    assert list(got) == list(want)
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    assert not list(out.parent.glob("*.tmp"))  # the atomic write left no temporary file
    tiny_cnn().load_state_dict(got)


def test_merge_command_errors(npz, tmp_path, capsys):
    a, _ = two_models(tmp_path)
    x, y = read_npz_split(str(npz), "test")
    ftdfast.fisher_diagonal(a.eval(), (x, y), progress=False).save(tmp_path / "fa.pt")
    rc = main(["merge", "--fisher", str(tmp_path / "fa.pt"), "--weights", str(tmp_path / "wa.pt"),
               str(tmp_path / "wb.pt"), "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "ftdfast merge: error: --fisher has 1 files but --weights 2" in capsys.readouterr().err
    rc = main(["merge", "--fisher", str(tmp_path / "nope.pt"), "--weights", str(tmp_path / "wa.pt"),
               "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "nope.pt: no such file (--fisher)" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    rc = main(["merge", "--fisher", str(tmp_path / "nope.pt"), "--weights", str(tmp_path / "junk.pt"),
               "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "junk.pt: not a readable torch.save state_dict file" in capsys.readouterr().err
    torch.save({"other.weight": torch.ones(1)}, tmp_path / "bad.pt")
    rc = main(["merge", "--fisher", str(tmp_path / "fa.pt"), str(tmp_path / "fa.pt"),
               "--weights", str(tmp_path / "wa.pt"), str(tmp_path / "bad.pt"), "--out", str(tmp_path / "m.pt")])
    assert rc == 2 and "models[1] has an entry 'other.weight' that models[0] lacks" in capsys.readouterr().err
    assert not (tmp_path / "m.pt").exists()


def test_fisher_saliency_table(npz, tmp_path, capsys):
    rc = main(["fisher", "--model", "tests.cli_models:tiny_cnn", "--data", str(npz), "--no-progress", "--saliency"])
    assert rc == 0
    text = capsys.readouterr().out
    table = text.split("saliency F * theta^2 / 2 per parameter:\n")[1].splitlines()
    x, y = read_npz_split(str(npz), "test")
    model = tiny_cnn().eval()
    want = fisher_saliency(model, ftdfast.fisher_diagonal(model, (x, y), progress=False))
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert list(rows)[:-1] == list(want) and "total" in rows
    for name, s in want.items():
        assert int(rows[name][1]) == s.numel()
        assert float(rows[name][2]) == pytest.approx(float(s.sum()), rel=1e-4)
