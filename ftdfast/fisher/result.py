"""``FisherDiagonal``: a read-only mapping from parameter name to its Fisher diagonal."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

from ..atomic import atomic_torch_save

FORMAT_VERSION = 1


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
        """Write atomically: a temporary file in the same folder, then a rename."""
        payload = {"format": "ftdfast.FisherDiagonal", "version": FORMAT_VERSION,
                   "values": {k: v.cpu() for k, v in self._values.items()},
                   "num_samples": self.num_samples, "meta": self.meta}
        atomic_torch_save(payload, path)

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: Any = "cpu") -> "FisherDiagonal":
        """Read a file written by :meth:`save`."""
        payload = torch.load(os.fspath(path), map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != "ftdfast.FisherDiagonal":
            raise ValueError(f"{os.fspath(path)} is not a FisherDiagonal file written by ftdfast")
        if payload.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{os.fspath(path)} has format version {payload['version']}; this ftdfast reads "
                             f"up to {FORMAT_VERSION}: upgrade ftdfast")
        return cls(payload["values"], payload["num_samples"], payload["meta"])

