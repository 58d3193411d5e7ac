"""ftdfast.cache.Cache: canonical keys, atomic checksummed entries, damaged entries recomputed."""
import os
import threading
from dataclasses import dataclass

import pytest
import torch

import ftdfast.cache as cache_mod
from ftdfast import FisherDiagonal
from ftdfast.cache import MAGIC, Cache
from ftdfast.train import TrainConfig
from tests.fake_taskdata import one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


def entry():
    g = torch.Generator().manual_seed(0)
    return {"state_dict": {"fc.weight": torch.randn(3, 4, generator=g), "fc.bias": torch.zeros(3)},
            "build": {"arch": "small_cnn", "input_size": 8}, "history": [2.5, 1.0], "shape": (3, 4),
            "flag": None}


def assert_same(a, b):
    assert type(a) is type(b)
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    else:
        assert a == b


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".pt"))


# ------------------------------------------------------------------------------------- keys
def test_key_is_canonical():
    k = Cache.key(task={"name": "a", "classes": (1, 2)}, seed=0, arch="lenet")
    assert k == Cache.key(arch="lenet", seed=0, task={"classes": [1, 2], "name": "a"})
    assert len(k) == 64 and int(k, 16) >= 0
    assert k != Cache.key(task={"name": "a", "classes": (2, 1)}, seed=0, arch="lenet")
    assert k != Cache.key(task={"name": "a", "classes": (1, 2)}, seed=1, arch="lenet")
    assert Cache.key(lr=1) != Cache.key(lr=1.0) and Cache.key(x=True) != Cache.key(x=1)


def test_key_accepts_objects_with_to_dict_and_dataclasses():
    @dataclass
    class Point:
        x: int
        y: float

    cfg = TrainConfig(epochs=3)
    assert Cache.key(config=cfg, p=Point(1, 2.0)) == Cache.key(config=cfg.to_dict(), p={"x": 1, "y": 2.0})
    assert Cache.key(dtype=torch.float64) == Cache.key(dtype="torch.float64")


@pytest.mark.parametrize("parts,error,match", [
    ({"x": float("nan")}, ValueError, "parts.x is nan"),
    ({"x": {"y": [1, object()]}}, TypeError, r"parts.x.y\[1\] is a object"),
    ({"x": {1: 2}}, TypeError, "non-string key 1"),
    ({}, ValueError, "at least one part"),
])
def test_key_rejects_what_has_no_canonical_form(parts, error, match):
    with pytest.raises(error, match=match):
        Cache.key(**parts)


@pytest.mark.parametrize("kind,key", [("../x", "k"), ("model", "a/b"), ("model", ""), ("model", ".."),
                                      ("", "k"), ("model", 5)])
def test_path_refuses_names_that_could_escape_the_folder(tmp_path, kind, key):
    with pytest.raises(ValueError, match="must be a simple name"):
        Cache(tmp_path).path(kind, key)


# ------------------------------------------------------------------------------------- round trips
def test_round_trip_and_miss(tmp_path):
    cache = Cache(tmp_path / "new" / "folder")  # created on the first save
    key = Cache.key(name="x")
    assert cache.load("model", key) is None
    path = cache.save("model", key, entry(), meta={"task": "x", "seed": 0})
    assert path == cache.path("model", key) and os.path.isfile(path) and ("model", key) in cache
    assert_same(cache.load("model", key), entry())
    obj, meta = cache.load("model", key, with_meta=True)
    assert meta == {"task": "x", "seed": 0}
    assert cache.load("fisher", key) is None  # kinds are separate
    assert leftovers(tmp_path / "new" / "folder" / "model") == []


def test_overwrite_replaces_the_entry(tmp_path):
    cache = Cache(tmp_path)
    cache.save("r", "k", {"v": 1})
    cache.save("r", "k", {"v": 2})
    assert cache.load("r", "k") == {"v": 2}


def test_fisher_diagonal_round_trip(tmp_path):
    f = FisherDiagonal({"fc.weight": torch.rand(3, 4, dtype=torch.float64), "fc.bias": torch.rand(3)}, 17,
                       {"loss": "cross_entropy", "backend": "rules"})
    cache = Cache(tmp_path)
    cache.save("fisher", "k", {"F": f, "seed": 2})
    got = cache.load("fisher", "k")
    assert isinstance(got["F"], FisherDiagonal) and got["seed"] == 2
    assert got["F"].num_samples == 17 and dict(got["F"].meta) == dict(f.meta)
    for name in f:
        assert torch.equal(got["F"][name], f[name])


def test_unsupported_objects_are_refused_before_writing(tmp_path):
    cache = Cache(tmp_path)
    with pytest.raises(TypeError, match=r"obj\['model'\] is a Linear.*state_dict"):
        cache.save("model", "k", {"model": torch.nn.Linear(2, 2)})
    assert not os.path.exists(cache.path("model", "k"))


def test_files_are_readable_with_the_usual_permissions(tmp_path):
    path = Cache(tmp_path).save("r", "k", {"v": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


# ------------------------------------------------------------------------------------- damage
def damage_truncate(raw):
    return raw[: len(raw) // 2]


def damage_flip_body_byte(raw):
    i = len(raw) - 40
    return raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1:]


def damage_flip_checksum(raw):
    i = len(MAGIC) + 10
    return raw[:i] + (b"0" if raw[i:i + 1] != b"0" else b"1") + raw[i + 1:]


def damage_garbage(raw):
    return b"not a cache file at all"


def damage_empty(raw):
    return b""


def damage_header_only(raw):
    return MAGIC


@pytest.mark.parametrize("damage", [damage_truncate, damage_flip_body_byte, damage_flip_checksum, damage_garbage,
                                    damage_empty, damage_header_only], ids=lambda f: f.__name__[7:])
def test_a_damaged_entry_warns_is_moved_aside_and_recomputed(tmp_path, damage):
    cache = Cache(tmp_path)
    path = cache.save("model", "k", entry())
    with open(path, "rb") as f:
        raw = f.read()
    with open(path, "wb") as f:
        f.write(damage(raw))
    with pytest.warns(RuntimeWarning, match=f"{path} is damaged.*moved to {path}.corrupt.*will be recomputed"):
        assert cache.load("model", "k") is None
    assert not os.path.exists(path) and os.path.exists(path + ".corrupt")
    assert cache.load("model", "k") is None  # now a plain miss, no second warning
    cache.save("model", "k", entry())
    assert_same(cache.load("model", "k"), entry())


def test_an_entry_copied_under_another_key_is_not_trusted(tmp_path):
    cache = Cache(tmp_path)
    a = cache.save("model", "a", {"v": 1})
    os.makedirs(os.path.dirname(cache.path("model", "b")), exist_ok=True)
    with open(a, "rb") as src, open(cache.path("model", "b"), "wb") as dst:
        dst.write(src.read())
    with pytest.warns(RuntimeWarning, match="not the entry model/b"):
        assert cache.load("model", "b") is None
    assert cache.load("model", "a") == {"v": 1}


class NotPlainData:
    pass


def test_a_valid_checksum_over_an_arbitrary_pickle_is_not_loaded(tmp_path):
    """Checksums catch damage, not forgery: the body is read with weights_only=True, so no code runs."""
    import hashlib
    import io
    cache = Cache(tmp_path)
    buf = io.BytesIO()
    torch.save({"kind": "model", "key": "k", "obj": NotPlainData(), "meta": None}, buf)
    body = buf.getvalue()
    path = cache.path("model", "k")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(MAGIC + f"sha256 {hashlib.sha256(body).hexdigest()} {len(body)}\n".encode() + body)
    with pytest.warns(RuntimeWarning, match="torch.load failed"):
        assert cache.load("model", "k") is None


# ------------------------------------------------------------------------------------- atomicity
def test_a_failed_save_leaves_no_file_and_keeps_the_old_entry(tmp_path, monkeypatch):
    cache = Cache(tmp_path)
    cache.save("model", "old", {"v": 1})
    real_save = torch.save

    def half_then_fail(obj, f, *a, **k):
        real_save({"partial": 1}, f, *a, **k)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(cache_mod.torch, "save", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        cache.save("model", "new", {"v": 2})
    with pytest.raises(OSError, match="simulated"):
        cache.save("model", "old", {"v": 3})
    monkeypatch.undo()
    assert not os.path.exists(cache.path("model", "new"))
    assert cache.load("model", "old") == {"v": 1}
    assert leftovers(tmp_path / "model") == []


def test_a_failure_while_writing_the_file_leaves_no_temporary(tmp_path, monkeypatch):
    cache = Cache(tmp_path)

    def no_fsync(fd):
        raise OSError("I/O error (simulated)")

    monkeypatch.setattr(cache_mod.os, "fsync", no_fsync)
    with pytest.raises(OSError, match="simulated"):
        cache.save("model", "k", {"v": 1})
    monkeypatch.undo()
    assert not os.path.exists(cache.path("model", "k")) and leftovers(tmp_path / "model") == []


def test_concurrent_writers_of_different_keys(tmp_path):
    cache = Cache(tmp_path)
    errors = []

    def work(i):
        try:
            for j in range(5):
                cache.save("model", f"k{i}-{j}", {"i": i, "j": j, "t": torch.full((50,), float(i))})
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(4):
        for j in range(5):
            got = cache.load("model", f"k{i}-{j}")
            assert got["i"] == i and got["j"] == j and torch.equal(got["t"], torch.full((50,), float(i)))
    assert leftovers(tmp_path / "model") == []
