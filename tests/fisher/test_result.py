"""FisherDiagonal: a read-only mapping with normalization, tables and atomic files."""
import math
import os

import pytest
import torch

import ftdfast
from ftdfast import FisherDiagonal


def example():
    return FisherDiagonal({"a.weight": torch.tensor([[1.0, 3.0], [0.0, 4.0]], dtype=torch.float64),
                           "a.bias": torch.tensor([2.0, 0.0], dtype=torch.float64),
                           "b.weight": torch.tensor([10.0], dtype=torch.float64)},
                          num_samples=7, meta={"loss": "cross_entropy", "fisher": "empirical"})


def test_mapping_is_read_only():
    f = example()
    assert list(f) == ["a.weight", "a.bias", "b.weight"] and len(f) == 3
    with pytest.raises(TypeError):
        f["a.bias"] = torch.zeros(2)
    with pytest.raises(AttributeError):
        f.update({})


def test_trace_normalized_sqrt_flat():
    f = example()
    assert f.trace() == 20.0 and f.numel() == 7 and f.num_samples == 7
    p = f.normalized()
    assert math.isclose(p.trace(), 1.0)
    torch.testing.assert_close(p["b.weight"], torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(f.sqrt()["a.weight"], torch.tensor([[1.0, 3.0 ** 0.5], [0.0, 2.0]],
                                                                  dtype=torch.float64))
    torch.testing.assert_close(f.flat(), torch.tensor([1.0, 3, 0, 4, 2, 0, 10], dtype=torch.float64))
    assert f.to(torch.float32)["a.bias"].dtype == torch.float32
    assert f.normalized().meta["normalized"] is True and f.num_samples == f.normalized().num_samples


def test_normalizing_zeros_is_an_error():
    with pytest.raises(ValueError, match="all zeros"):
        FisherDiagonal({"w": torch.zeros(3)}, 1).normalized()


def test_per_layer_table():
    rows = example().per_layer()
    assert rows == [("a", 6, 10.0, 0.5), ("b", 1, 10.0, 0.5)]
    text = example().format_table()
    assert "50.00%" in text and text.splitlines()[-1].startswith("total")


def test_save_load_roundtrip_is_atomic(tmp_path):
    f = example()
    path = tmp_path / "sub" / "fisher.pt"
    f.save(path)
    assert sorted(os.listdir(path.parent)) == ["fisher.pt"]  # no temporary file left behind
    g = FisherDiagonal.load(path)
    assert list(g) == list(f) and g.num_samples == 7 and g.meta == f.meta
    for k in f:
        assert torch.equal(f[k], g[k])


def test_save_failure_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "fisher.pt"
    example().save(path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        FisherDiagonal({"w": torch.ones(2)}, 1).save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["fisher.pt"]


def test_load_rejects_other_files(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"x": 1}, path)
    with pytest.raises(ValueError, match="is not a readable FisherDiagonal file"):
        FisherDiagonal.load(path)


def test_metadata_from_fisher_diagonal():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    f = ftdfast.fisher_diagonal(model, (torch.randn(4, 3), torch.tensor([0, 1, 1, 0])), progress=False)
    assert f.meta["loss"] == "cross_entropy" and f.meta["fisher"] == "empirical"
    assert f.meta["torch"] == torch.__version__ and f.meta["dtype"] == "float64"
    assert f.meta["backend"] in ("rules", "native") and f.num_samples == 4
