"""Classification tasks carved out of a :class:`~ftdfast.data.LabeledData`.

Four kinds, by the fields of :class:`Task`:

- full (``classes=None``): every sample, labels unchanged;
- subset (``classes`` only): the samples of the listed classes, labelled 0..k-1 in list order;
- other (``other=True``): the listed classes keep all their samples and labels 0..k-1; the rest
  become class k ("other"), downsampled uniformly without replacement to the smallest listed
  class's count in that split (all of the rest if fewer);
- binary (``binary=True``): "is it one of ``classes``?": label 1 for the listed classes, 0 for
  the rest, balanced per split to k = min(#positives, #negatives) of each (positives and
  negatives each drawn uniformly without replacement; so when negatives are scarce the
  positives are downsampled).

Every built split is in a seeded random order; the draws come from one generator seeded with
``seed`` (train split first, then test), so ``build(data, seed)`` is a function of its inputs.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..data.labeled import LabeledData
from .taskdata import TaskData

ClassRef = Union[int, str]


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]+", " ", name.strip().lower())


def resolve_classes(classes: Sequence[ClassRef], names: Sequence[str]) -> Tuple[int, ...]:
    """Class indices for ``classes`` given as indices or names of ``names``.

    A name matches exactly, else case-insensitively with ``_``/``-``/space treated alike
    (also against each comma-separated synonym of a class name such as "tench, Tinca tinca").
    """
    out = []
    for c in classes:
        if isinstance(c, (bool, np.bool_)):
            raise TypeError(f"class {c!r}: give a class index (int) or a class name (str), not a bool")
        if isinstance(c, (int, np.integer)):
            if not 0 <= int(c) < len(names):
                raise ValueError(f"class index {int(c)} is out of range: the data has {len(names)} classes "
                                 f"(0..{len(names) - 1})")
            out.append(int(c))
        elif isinstance(c, str):
            out.append(_resolve_name(c, names))
        else:
            raise TypeError(f"class {c!r}: give a class index (int) or a class name (str), not {type(c).__name__}")
    dup = sorted({names[i] for i in out if out.count(i) > 1})
    if dup:
        raise ValueError(f"classes {list(classes)} name the same class more than once: {dup}")
    return tuple(out)


def _resolve_name(c: str, names: Sequence[str]) -> int:
    if c in names:
        return list(names).index(c)
    key = _norm(c)
    hits = [i for i, n in enumerate(names) if key == _norm(n) or key in (_norm(s) for s in n.split(","))]
    if len(hits) == 1:
        return hits[0]
    shown = ", ".join(repr(n) for n in names[:40]) + (f", ... ({len(names)} in all)" if len(names) > 40 else "")
    why = "matches several classes" if hits else "is not a class of this dataset"
    raise ValueError(f"class name {c!r} {why}; valid names: {shown}")


@dataclass(frozen=True)
class Task:
    """A classification task on a labelled dataset (see the module docstring for the four kinds).

    Attributes:
        name: e.g. ``"mnist:0"``.
        classes: the listed classes as indices or names (resolved against ``data.classes`` at
            build time); None = all classes.
        other: add an "other" class (label ``len(classes)``) for the rest.
        binary: "is it one of ``classes``?" (label 1) versus the rest (label 0), balanced 50/50.
    """

    name: str
    classes: Optional[Tuple[ClassRef, ...]] = None
    other: bool = False
    binary: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"a task needs a non-empty name, got {self.name!r}")
        classes = self.classes
        if classes is not None:
            if isinstance(classes, (str, int, np.integer)):
                classes = (classes,)
            classes = tuple(int(c) if isinstance(c, np.integer) else c for c in classes)
            object.__setattr__(self, "classes", classes)
            if not classes:
                raise ValueError(f"task {self.name!r}: classes is empty; pass classes=None for the full task")
            for c in classes:
                if isinstance(c, bool) or not isinstance(c, (int, str)):
                    raise TypeError(f"task {self.name!r}: class {c!r} must be an int index or a str name")
                if isinstance(c, int) and c < 0:
                    raise ValueError(f"task {self.name!r}: class index {c} is negative")
            dup = sorted({repr(c) for c in classes if classes.count(c) > 1})
            if dup:
                raise ValueError(f"task {self.name!r}: duplicate classes {', '.join(dup)}")
        if self.binary and self.other:
            raise ValueError(f"task {self.name!r}: binary and other exclude each other")
        if (self.binary or self.other) and classes is None:
            raise ValueError(f"task {self.name!r}: binary and other tasks need the listed classes")

    @property
    def kind(self) -> str:
        """"full", "subset", "other" or "binary"."""
        if self.classes is None:
            return "full"
        return "binary" if self.binary else "other" if self.other else "subset"

    @property
    def num_classes(self) -> int:
        """Number of labels; a full task's depends on the data: use :meth:`num_classes_for`."""
        if self.classes is None:
            raise ValueError(f"task {self.name!r} uses every class of its data: use num_classes_for(data)")
        return 2 if self.binary else len(self.classes) + (1 if self.other else 0)

    def num_classes_for(self, data: LabeledData) -> int:
        return data.num_classes if self.classes is None else self.num_classes

    def to_dict(self) -> Dict[str, Any]:
        return {"kind": "classification", "name": self.name,
                "classes": None if self.classes is None else list(self.classes),
                "other": self.other, "binary": self.binary}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Task":
        if d.get("kind", "classification") != "classification":
            raise ValueError(f"not a classification task: kind={d.get('kind')!r} (use ftdfast.tasks.task_from_dict)")
        classes = d.get("classes")
        return cls(d["name"], None if classes is None else tuple(classes), bool(d.get("other", False)),
                   bool(d.get("binary", False)))

    def key(self) -> str:
        """A stable string identifying the task: canonical JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def build(self, data: LabeledData, seed: int = 0) -> TaskData:
        """The task's tensors from ``data`` (see the module docstring); deterministic in ``seed``."""
        idx = None if self.classes is None else resolve_classes(self.classes, data.classes)
        g = torch.Generator().manual_seed(int(seed))
        out = []
        for split in ("train", "test"):
            x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
            sel, labels = self._select(y, idx, data, g, split)
            perm = torch.randperm(sel.numel(), generator=g)
            out += [x[sel[perm]], labels[perm]]
        return TaskData(self, *out, num_classes=self.num_classes_for(data), loss="cross_entropy",
                        source=data.name)

    def _select(self, y: torch.Tensor, idx: Optional[Tuple[int, ...]], data: LabeledData, g: torch.Generator,
                split: str) -> Tuple[torch.Tensor, torch.Tensor]:
        """(sample indices, new labels) of one split, before shuffling."""
        if idx is None:
            return torch.arange(y.numel()), y.clone()
        listed = torch.tensor(idx, dtype=torch.int64)
        member = torch.isin(y, listed)
        pos, rest = member.nonzero()[:, 0], (~member).nonzero()[:, 0]
        where = f"task {self.name!r}, {split} split of {data.name!r}"
        if self.binary:
            k = min(pos.numel(), rest.numel())
            if k == 0:
                raise ValueError(f"{where}: {pos.numel()} samples of the listed classes and {rest.numel()} of the "
                                 "rest; a binary task needs both")
            pos = pos[torch.randperm(pos.numel(), generator=g)[:k]].sort().values
            neg = rest[torch.randperm(rest.numel(), generator=g)[:k]].sort().values
            return torch.cat([pos, neg]), torch.cat([torch.ones(k, dtype=torch.int64),
                                                     torch.zeros(k, dtype=torch.int64)])
        lut = torch.full((data.num_classes,), len(idx), dtype=torch.int64)
        lut[listed] = torch.arange(len(idx))
        if self.other:
            counts = torch.bincount(y[pos], minlength=data.num_classes)[listed]
            if int(counts.min()) == 0 or rest.numel() == 0:
                empty = [data.classes[i] for i, n in zip(idx, counts.tolist()) if n == 0] or ["other"]
                raise ValueError(f"{where}: no samples of class(es) {empty}; every class of the task needs some")
            m = int(counts.min())
            chosen = rest[torch.randperm(rest.numel(), generator=g)[:m]].sort().values
            sel = torch.cat([pos, chosen]).sort().values
        else:
            if pos.numel() == 0:
                raise ValueError(f"{where}: no samples of the listed classes")
            sel = pos
        return sel, lut[y[sel]]
