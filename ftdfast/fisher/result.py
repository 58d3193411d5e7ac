"""``FisherDiagonal``: a read-only mapping from parameter name to its Fisher diagonal."""
from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from ..atomic import atomic_write_bytes
from ..framing import CorruptEntry, frame, unframe

FORMAT_VERSION = 2  # 1: a bare torch.save of the payload; 2: the same payload inside the cache's checksum framing
FILE_MAGIC = b"ftdfast-fisher 2\n"
_FORMAT = "ftdfast.FisherDiagonal"


def value_problem(values: Mapping, where: str) -> Optional[str]:
    """What is wrong with ``values`` as Fisher diagonals (not tensors, not floating, NaN/inf, negative), or None."""
    for name, v in values.items():
        if not isinstance(name, str) or not isinstance(v, torch.Tensor):
            return f"{where}[{name!r}] is a {type(v).__name__}, not a tensor"
        if not v.is_floating_point():
            return f"{where}[{name!r}] has dtype {v.dtype}, not a floating dtype"
        if v.numel() == 0:
            continue
        if not bool(torch.isfinite(v).all()):
            return f"{where}[{name!r}] has NaN or infinite entries"
        if float(v.min()) < 0:
            return f"{where}[{name!r}] has negative entries (min {float(v.min()):.6g})"
    return None


class FisherDiagonal(Mapping):
    """The diagonal of a Fisher information matrix, one tensor per parameter (same shape).

    The mapping is read-only (no item assignment). ``F[name]`` returns the stored
    tensor itself, without a copy, so it can serve directly as an EWC weight;
    clone it before any in-place edit. ``num_samples`` is N, the number of samples
    averaged; ``meta`` records how it was computed (loss, fisher kind, backend,
    dtype, torch version).
    """

    def __init__(self, values: Dict[str, torch.Tensor], num_samples: int, meta: Optional[Dict[str, Any]] = None):
        for name, v in values.items():
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"FisherDiagonal value {name!r} must be a tensor, got {type(v).__name__}")
        self._values = {k: v.detach() for k, v in values.items()}
        self.num_samples = int(num_samples)
        self.meta: Dict[str, Any] = dict(meta or {})

    # ------------------------------------------------------------- mapping
    def __getitem__(self, name: str) -> torch.Tensor:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return (f"FisherDiagonal({len(self)} tensors, {self.numel()} values, N={self.num_samples}, "
                f"trace={self.trace():.6g}, {self.meta.get('fisher', '?')} / {self.meta.get('loss', '?')})")

    # ------------------------------------------------------------ numbers
    def numel(self) -> int:
        return sum(v.numel() for v in self._values.values())

    def trace(self) -> float:
        """The sum of all diagonal entries over the whole model."""
        return float(sum(v.sum(dtype=torch.float64).item() for v in self._values.values()))

    def _map(self, fn, **meta) -> "FisherDiagonal":
        return FisherDiagonal({k: fn(v) for k, v in self._values.items()}, self.num_samples,
                              {**self.meta, **meta})

    def normalized(self) -> "FisherDiagonal":
        """Scaled to unit trace over the whole model (what the task distance compares)."""
        tr = self.trace()
        if not math.isfinite(tr):
            raise ValueError(f"cannot normalize a Fisher diagonal with trace {tr}: it is not finite (NaN or "
                             "infinite entries, e.g. squared gradients that overflowed); recompute it in float64 "
                             "or with rescaled inputs")
        if not tr > 0:
            raise ValueError(f"cannot normalize a Fisher diagonal with trace {tr}: it is all zeros "
                             "(no gradient reached the parameters)")
        return self._map(lambda v: v / tr, normalized=True)

    def sqrt(self) -> "FisherDiagonal":
        """Elementwise square root."""
        return self._map(torch.sqrt, sqrt=True)

    def flat(self) -> torch.Tensor:
        """All entries as one vector, in the mapping's (parameter) order."""
        if not self._values:
            return torch.empty(0)
        return torch.cat([v.reshape(-1) for v in self._values.values()])

    def to(self, *args, **kwargs) -> "FisherDiagonal":
        """Like ``Tensor.to``: device and/or dtype for every tensor."""
        return self._map(lambda v: v.to(*args, **kwargs))

    # ------------------------------------------------------------- tables
    def per_layer(self) -> List[Tuple[str, int, float, float]]:
        """Rows ``(layer, numel, trace, share of the total trace)`` per module, in parameter order."""
        rows: Dict[str, List[float]] = {}
        for name, v in self._values.items():
            layer = name.rsplit(".", 1)[0] if "." in name else "<model>"
            row = rows.setdefault(layer, [0, 0.0])
            row[0] += v.numel()
            row[1] += float(v.sum(dtype=torch.float64))
        total = sum(r[1] for r in rows.values())
        return [(layer, int(r[0]), r[1], r[1] / total if total > 0 else 0.0) for layer, r in rows.items()]

    def format_table(self) -> str:
        """:meth:`per_layer` as aligned text."""
        rows = self.per_layer()
        width = max([len("layer")] + [len(r[0]) for r in rows])
        lines = [f"{'layer':<{width}}  {'params':>10}  {'trace':>12}  {'share':>7}"]
        for layer, numel, tr, share in rows:
            lines.append(f"{layer:<{width}}  {numel:>10}  {tr:>12.5g}  {100 * share:>6.2f}%")
        lines.append(f"{'total':<{width}}  {self.numel():>10}  {self.trace():>12.5g}  {'100.00%':>7}")
        return "\n".join(lines)

    # ---------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> None:
        """Write atomically (a temporary file in the same folder, then a rename), with a sha256 checksum.

        The file is :data:`FILE_MAGIC`, a checksum line and a ``torch.save`` of plain data
        (the framing of :mod:`ftdfast.framing`); :meth:`load` verifies all of it. Refuses
        NaN, infinite or negative entries (a file that :meth:`load` would refuse).
        """
        problem = value_problem(self._values, "values")
        if problem:
            raise ValueError(f"cannot save {os.fspath(path)}: {problem}")
        payload = {"format": _FORMAT, "version": FORMAT_VERSION,
                   "values": {k: v.cpu() for k, v in self._values.items()},
                   "num_samples": self.num_samples, "meta": self.meta}
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(path, frame(buf.getvalue(), FILE_MAGIC))

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: Any = "cpu") -> "FisherDiagonal":
        """Read a file written by :meth:`save`, after checking it.

        Raises ``ValueError("PATH is not a readable FisherDiagonal file (why)")`` for an empty,
        truncated, altered (checksum) or foreign file, and for one whose values are not
        finite, non-negative floating tensors; ``FileNotFoundError`` when there is no file.
        Files of format version 1 (ftdfast before the checksum, a bare ``torch.save``)
        still load, with the value checks but no checksum: save them again to add one.
        """
        name = os.fspath(path)

        def unreadable(why: str) -> ValueError:
            return ValueError(f"{name} is not a readable FisherDiagonal file ({why})")

        with open(name, "rb") as f:
            raw = f.read()
        if raw.startswith(b"PK\x03\x04"):  # version 1: a bare torch.save (a zip archive)
            body = raw
        else:
            try:
                body = unframe(raw, FILE_MAGIC)
            except CorruptEntry as e:
                raise unreadable(str(e)) from None
        try:
            payload = torch.load(io.BytesIO(body), map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - whatever torch.load says, the file is not ours or is damaged
            first = (str(e).splitlines() or [""])[0]
            if "weights" in first.lower():  # not torch's advice to load untrusted code with weights_only=False
                first = "it holds objects other than tensors and plain data"
            raise unreadable(f"torch.load failed: {type(e).__name__}: {first}") from None
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise unreadable(f"it holds no {_FORMAT} record")
        version = payload.get("version", 0)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(f"{name} has FisherDiagonal format version {version!r}; this ftdfast reads up to "
                             f"{FORMAT_VERSION}: upgrade ftdfast")
        values, n, meta = payload.get("values"), payload.get("num_samples"), payload.get("meta")
        if not isinstance(values, dict):
            raise unreadable("its values are not a dict of tensors")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise unreadable(f"num_samples is {n!r}, not a positive int")
        if not isinstance(meta, dict):
            raise unreadable("its meta is not a dict")
        problem = value_problem(values, "values")
        if problem:
            raise unreadable(problem)
        return cls(values, n, meta)
