"""One spec per native op: what the self-check, the tests and the GPU check know about it.

An :class:`OpSpec` holds, for one op ``torch.ops.ftdfast.<name>``, its pure-PyTorch reference
(the fallback and the oracle), its input check, its fake kernel (shapes for ``torch.compile`` and
``opcheck``), its sample problems and its tolerance per dtype. The specs of the ops are defined
next to their references in :mod:`ftdfast.native.reference` (``SPECS``) and read by
:mod:`ftdfast.native.selfcheck` (first-use check), :mod:`ftdfast.native.ops` (fake kernels),
``tests/native/test_specs.py`` (every op on every sample, CPU and CUDA, and ``opcheck``) and
``benchmarks/gpu/gpu_ops_check.py``, as ``sample_inputs`` serve pytorch/extension-cpp's correctness
and ``opcheck`` tests.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

import torch

# Sample problems: readable id -> the op's arguments, tensors in float64 on the CPU.
Problems = Dict[str, tuple]


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """The Python side of one native op ``torch.ops.ftdfast.<name>``.

    Attributes:
        name: the op's name in the ``ftdfast`` namespace, e.g. ``"sq_grad_sum_linear"``.
        reference: the pure-PyTorch implementation, same arguments and errors as the op.
        check: the op's input check (shapes, dtypes, devices), same wording as the kernel's.
        fake: the fake (meta) kernel: the output's shape and dtype from the inputs'.
        samples: small, odd problems covering every kernel path, built from a CPU generator; the
            first-use self-check runs them, so together they take milliseconds.
        awkward_samples: the tests' further problems: empty dimensions, one sample, outputs of
            several tiles, chunks or sample splits.
        tolerance: the largest allowed error of the op on the samples, per dtype (see :meth:`error`).
        relative: the error is relative to ``max |reference|`` (sums of squares) rather than
            absolute (distances, which lie in [0, 1]).
    """
    name: str
    reference: Callable[..., torch.Tensor]
    check: Callable[..., None]
    fake: Callable[..., torch.Tensor]
    samples: Callable[[torch.Generator], Problems]
    awkward_samples: Callable[[torch.Generator], Problems]
    tolerance: Mapping[torch.dtype, float]
    relative: bool

    @property
    def qualname(self) -> str:
        """``"ftdfast::<name>"``, the name the dispatcher and the self-check use."""
        return f"ftdfast::{self.name}"

    def native(self, *args) -> torch.Tensor:
        """Call ``torch.ops.ftdfast.<name>`` (needs the extension)."""
        return getattr(torch.ops.ftdfast, self.name)(*args)

    def sample_inputs(self, gen: torch.Generator, device: torch.device | str, dtype: torch.dtype, *,
                      awkward: bool = False) -> Iterator[Tuple[str, list]]:
        """(id, args) of each sample (or awkward sample), its tensors rounded to ``dtype`` on ``device``."""
        problems = (self.awkward_samples if awkward else self.samples)(gen)
        for pid, args in problems.items():
            yield pid, moved(args, torch.device(device), dtype)

    def error(self, got: torch.Tensor, want: torch.Tensor, device: torch.device, dtype: torch.dtype) -> float:
        """max |got - want| (relative to max |want| when :attr:`relative`); inf for a wrong shape, dtype or
        device, or NaN. ``want`` is the reference's float64 CPU result."""
        if (not isinstance(got, torch.Tensor) or got.shape != want.shape or got.dtype != dtype
                or got.device != device):
            return float("inf")
        if want.numel() == 0:
            return 0.0
        err = (got.detach().cpu().double() - want).abs().max().item()
        if self.relative:
            err /= max(want.abs().max().item(), 1e-300)
        return err if err == err else float("inf")  # NaN -> inf


def moved(args: Sequence, device: torch.device, dtype: torch.dtype) -> List:
    """``args`` with every tensor (also inside a list) on ``device`` in ``dtype``; other arguments as they are."""
    def move(x):
        if isinstance(x, torch.Tensor):
            return x.to(device=device, dtype=dtype)
        if isinstance(x, list) and x and isinstance(x[0], torch.Tensor):
            return [t.to(device=device, dtype=dtype) for t in x]
        return x
    return [move(x) for x in args]
