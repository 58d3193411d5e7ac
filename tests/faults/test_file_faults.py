"""FisherDiagonal files: damaged, foreign or implausible files are refused with the file's name.

Each case: a readable id, how the file is made from a good one, and a fragment of the reason
in ``ValueError("PATH is not a readable FisherDiagonal file (reason)")``.
"""
from __future__ import annotations

import io
import os

import pytest
import torch

from ftdfast import FisherDiagonal
from ftdfast.cache import MAGIC
from ftdfast.framing import frame
from ftdfast.fisher.result import FILE_MAGIC


def good() -> FisherDiagonal:
    g = torch.Generator().manual_seed(0)
    return FisherDiagonal({"fc.weight": torch.rand(40, 30, generator=g, dtype=torch.float64),
                           "fc.bias": torch.rand(40, generator=g, dtype=torch.float64)}, 17, {"loss": "mse"})


def framed(payload) -> bytes:
    buf = io.BytesIO()
    torch.save(payload, buf)
    return frame(buf.getvalue(), FILE_MAGIC)


def payload_with(**changes):
    f = good()
    p = {"format": "ftdfast.FisherDiagonal", "version": 2, "values": dict(f), "num_samples": 17, "meta": {}}
    p.update(changes)
    return p


def flip_bytes(raw: bytes, count: int = 64) -> bytes:
    out = bytearray(raw)
    step = len(out) // (count + 1)
    for i in range(1, count + 1):
        out[i * step] ^= 0xFF
    return bytes(out)


CASES = [
    # (id, bytes of the file from the bytes of a good one, fragment of the reason)
    ("empty", lambda raw: b"", "it is empty"),
    ("truncated-half", lambda raw: raw[:len(raw) // 2], "truncated"),
    ("truncated-in-header", lambda raw: raw[:len(FILE_MAGIC) + 10], "header is truncated"),
    ("64-flipped-bytes", flip_bytes, "checksum"),
    ("one-flipped-byte-in-the-body", lambda raw: raw[:-100] + bytes([raw[-100] ^ 1]) + raw[-99:], "checksum"),
    ("text-file", lambda raw: b"hello, I am a text file\n", "does not start with the header"),
    ("cache-entry", lambda raw: frame(b"x", MAGIC), "does not start with the header"),
    ("other-torch-file", lambda raw: _torch_bytes({"x": 1}), "holds no ftdfast.FisherDiagonal record"),
    ("framed-pickle-of-code", lambda raw: frame(b"\x80\x02cos\nsystem\n.", FILE_MAGIC), "torch.load failed"),
    ("negative-values", lambda raw: framed(payload_with(values={"w": torch.tensor([1.0, -2.0])})),
     "values['w'] has negative entries"),
    ("nan-values", lambda raw: framed(payload_with(values={"w": torch.tensor([1.0, float("nan")])})),
     "values['w'] has NaN or infinite entries"),
    ("integer-values", lambda raw: framed(payload_with(values={"w": torch.tensor([1, 2])})), "not a floating dtype"),
    ("zero-samples", lambda raw: framed(payload_with(num_samples=0)), "num_samples is 0"),
    ("old-format-with-negative-values",
     lambda raw: _torch_bytes({**payload_with(values={"w": torch.tensor([-1.0])}), "version": 1}), "negative"),
]


def _torch_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


@pytest.mark.parametrize("damage,fragment", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_file_is_refused_naming_the_file(tmp_path, damage, fragment):
    path = tmp_path / "fisher.pt"
    good().save(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ValueError) as info:
        FisherDiagonal.load(path)
    msg = str(info.value)
    assert msg.startswith(f"{path} is not a readable FisherDiagonal file (") and fragment in msg, msg
    assert "weights_only=False" not in msg


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        FisherDiagonal.load(tmp_path / "nope.pt")


def test_round_trip_is_exact(tmp_path):
    f, path = good(), tmp_path / "f.pt"
    f.save(path)
    assert path.read_bytes().startswith(FILE_MAGIC)
    g = FisherDiagonal.load(path)
    assert list(g) == list(f) and g.num_samples == 17 and g.meta == f.meta
    assert all(torch.equal(f[k], g[k]) for k in f)


def test_files_of_format_version_1_still_load(tmp_path):
    """Written by ftdfast before the checksum: a bare torch.save of the same payload."""
    f, path = good(), tmp_path / "old.pt"
    torch.save({**payload_with(), "version": 1, "meta": dict(f.meta)}, path)
    g = FisherDiagonal.load(path)
    assert g.num_samples == 17 and all(torch.equal(f[k], g[k]) for k in f)


def test_a_newer_format_asks_for_an_upgrade(tmp_path):
    path = tmp_path / "new.pt"
    path.write_bytes(framed(payload_with(version=99)))
    with pytest.raises(ValueError, match="upgrade ftdfast"):
        FisherDiagonal.load(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0], ids=["nan", "inf", "negative"])
def test_save_refuses_what_load_would_refuse(tmp_path, value):
    path = tmp_path / "f.pt"
    with pytest.raises(ValueError, match="cannot save"):
        FisherDiagonal({"w": torch.tensor([1.0, value])}, 1).save(path)
    assert not os.path.exists(path)
