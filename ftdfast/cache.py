"""An on-disk cache for trained networks and Fisher results: atomic, checksummed, safe to load.

Layout: ``<root>/<kind>/<key>.pt``.  Each file is one record::

    b"ftdfast-cache 1\\n"  b"sha256 <64 hex> <body bytes>\\n"  <body: torch.save({"kind", "key", "obj", "meta"})>

written to a unique temporary file in the same folder (name with the pid), fsync'ed, then renamed
over the final name (``os.replace``), so a reader sees either no entry or a complete one, and several
processes can fill different keys at once.  :meth:`Cache.load` checks the checksum and reads the body
with ``torch.load(weights_only=True)``; a damaged entry is never trusted: it is moved aside to
``<key>.pt.corrupt`` with a warning naming the file, and ``load`` returns ``None`` so the caller
recomputes it.

Objects stored must be plain data: dicts, lists, tuples, str, int, float, bool, None, tensors,
``torch.Size``/dtype/device, and :class:`ftdfast.FisherDiagonal` (encoded and rebuilt automatically).
Models are stored as state dicts plus their build arguments (see :func:`ftdfast.train.get_trained`).
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import warnings
from typing import Any, Optional

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .framing import CorruptEntry, frame, unframe
from .fisher import FisherDiagonal

MAGIC = b"ftdfast-cache 1\n"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_TYPE_TAG = "__ftdfast_type__"


# ------------------------------------------------------------------------------------------ keys
def _jsonable(value: Any, where: str) -> Any:
    """``value`` as JSON-ready data with a single spelling (tuples become lists, numpy scalars Python)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"Cache.key: {where} is {value}, which has no canonical JSON form")
        return value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"Cache.key: {where} has a non-string key {k!r}; use string keys")
            out[k] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return _jsonable(value.to_dict(), where)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value), where)
    if isinstance(value, (torch.dtype, torch.device)):
        return str(value)
    raise TypeError(f"Cache.key: {where} is a {type(value).__name__}, which has no canonical JSON form; "
                    "pass str/int/float/bool/None, lists, dicts or objects with to_dict()")


# ------------------------------------------------------------------------------------------ payloads
def _encode(value: Any, where: str) -> Any:
    if isinstance(value, FisherDiagonal):
        return {_TYPE_TAG: "FisherDiagonal", "values": {k: v.detach().cpu() for k, v in value.items()},
                "num_samples": value.num_samples, "meta": _encode(dict(value.meta), f"{where}.meta")}
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Size, torch.dtype, torch.device)):
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, dict):
        return {k: _encode(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_encode(v, f"{where}[{i}]") for i, v in enumerate(value))
    raise TypeError(f"Cache.save: {where} is a {type(value).__name__}; the cache stores plain data only "
                    "(dicts, lists, tuples, numbers, str, tensors, FisherDiagonal): store e.g. a state_dict "
                    "or to_dict() instead")


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if value.get(_TYPE_TAG) == "FisherDiagonal":
            return FisherDiagonal(value["values"], value["num_samples"], _decode(value["meta"]))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_decode(v) for v in value)
    return value


class Cache:
    """A folder of cached results, ``<root>/<kind>/<key>.pt`` (see the module docstring).

    ``kind`` groups entries (e.g. ``"model"``, ``"fisher"``); ``key`` is usually :meth:`key` of
    everything the entry depends on.  Both must be simple names (letters, digits, ``_ . -``).
    """

    def __init__(self, root: str | os.PathLike):
        self.root = os.path.abspath(os.path.expanduser(os.fspath(root)))

    def __repr__(self) -> str:
        return f"Cache({self.root!r})"

    @staticmethod
    def key(**parts: Any) -> str:
        """sha256 hex digest of the canonical JSON (sorted keys, no spaces) of ``parts``.

        Values may be JSON data, tuples, numpy scalars or objects with ``to_dict()``; 1 and 1.0 differ.
        """
        if not parts:
            raise ValueError("Cache.key needs at least one part, e.g. key(task=..., seed=0)")
        text = json.dumps(_jsonable(parts, "parts"), sort_keys=True, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def path(self, kind: str, key: str) -> str:
        """Where the entry ``kind/key`` lives (it may not exist)."""
        for what, name in (("kind", kind), ("key", key)):
            if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
                raise ValueError(f"Cache: {what} must be a simple name (letters, digits, '_', '.', '-'), "
                                 f"got {name!r}")
        return os.path.join(self.root, kind, key + ".pt")

    def __contains__(self, kind_key) -> bool:
        kind, key = kind_key
        return os.path.exists(self.path(kind, key))

    # -------------------------------------------------------------------------------------- write
    def save(self, kind: str, key: str, obj: Any, meta: Optional[dict] = None) -> str:
        """Store ``obj`` (and ``meta``, a dict of plain data) under ``kind/key`` atomically; returns the path."""
        path = self.path(kind, key)
        payload = {"kind": kind, "key": key, "obj": _encode(obj, "obj"), "meta": _encode(meta, "meta")}
        buf = io.BytesIO()
        torch.save(payload, buf)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        atomic_write_bytes(path, frame(buf.getvalue(), MAGIC))
        _fsync_dir(folder)
        return path

    # -------------------------------------------------------------------------------------- read
    def load(self, kind: str, key: str, *, with_meta: bool = False) -> Any:
        """The object stored under ``kind/key``, or ``None`` when there is none or it is damaged.

        A damaged entry (bad header, checksum or size mismatch, unreadable body, wrong kind/key)
        is moved aside to ``<path>.corrupt`` with a RuntimeWarning naming the file.
        ``with_meta=True`` returns ``(obj, meta)`` instead (``None`` on a miss).
        """
        path = self.path(kind, key)
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            return self._discard(path, f"it cannot be read ({e})")
        try:
            payload = _parse(raw, kind, key)
        except CorruptEntry as e:
            return self._discard(path, str(e))
        obj, meta = _decode(payload["obj"]), _decode(payload["meta"])
        return (obj, meta) if with_meta else obj

    def _discard(self, path: str, why: str) -> None:
        aside = path + ".corrupt"
        try:
            os.replace(path, aside)
            where = f"moved to {aside}"
        except OSError:
            try:
                os.unlink(path)
                where = "deleted"
            except OSError:
                where = "left in place (it could not be moved)"
        warnings.warn(f"ftdfast cache: {path} is damaged: {why}; it was {where} and will be recomputed",
                      RuntimeWarning, stacklevel=3)
        return None


def read_payload(raw: bytes) -> Any:
    """What an entry file's bytes ``raw`` hold (an entry's dict of ``kind``, ``key``, ``obj``, ``meta``, still
    encoded), whatever its kind and key; :class:`CorruptEntry` saying what is wrong when it cannot be read."""
    body = unframe(raw, MAGIC)
    try:
        payload = torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to unpickle means an unusable entry
        raise CorruptEntry(f"torch.load failed ({type(e).__name__}: {e})") from None
    return payload


def _parse(raw: bytes, kind: str, key: str) -> dict:
    payload = read_payload(raw)
    if not isinstance(payload, dict) or payload.get("kind") != kind or payload.get("key") != key:
        raise CorruptEntry(f"it is not the entry {kind}/{key}")
    return payload


def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
