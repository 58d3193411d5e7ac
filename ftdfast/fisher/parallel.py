"""``fisher_diagonal`` over the W processes of a ``torch.distributed`` job.

Each rank r streams its own shard of the data, sums its squares per parameter as in a
single process, and the ranks then add their sums and sample counts in ONE all-reduce
(a flat buffer of all P sums in the accumulation dtype, with the count and a failure
flag appended), so every rank ends with the same ``F = (sum over ranks of S_r) / N``.

Sharding (``shard=``):

- ``"auto"`` (default):
    - a tuple ``(X, y)`` that is the same on every rank: the first ``max_samples``
      samples (all by default) are cut into W contiguous blocks
      (:func:`ftdfast.distributed.shard_indices`); rank r streams block r, a view (no
      copy). A tuple that differs between ranks (e.g. ``(X[r::W], y[r::W])``, each
      rank's share) is this rank's own shard, used as it is. "The same" is decided
      once per call by :func:`tuple_fingerprint` (shapes and a few sampled rows),
      gathered from every rank: one all-gather of 5 numbers. Equal data seen as
      different costs only work (every rank then uses all of it: the same Fisher);
      different data that happened to match in every sampled row would be split.
    - a ``DataLoader`` with a ``DistributedSampler`` (as the sampler or inside its
      batch sampler): used as it is. The sampler pads its index list by repeating
      samples when ``len(dataset) % W != 0`` (``drop_last=False``); the repeats are the
      last sample of some ranks' streams and are skipped, so every sample counts once
      and the result equals the single-process Fisher. With ``drop_last=True`` the
      sampler leaves out up to W-1 samples: a warning gives the count.
    - anything else (a DataLoader without a DistributedSampler, any iterable of
      batches): taken as this rank's own shard, used as it is. A DataLoader without a
      DistributedSampler also gets a warning, since a loader over the whole data set on
      every rank would count every sample W times (the same Fisher, W times the work).
- ``"none"``: every rank's ``data`` is its own shard, used as it is (tuples too, and
  no padding correction for a DistributedSampler).

``max_samples`` is global: at most that many samples over all ranks. Tuples and
DistributedSampler loaders use exactly the first ``max_samples`` samples (of the
sampler's order); data that each rank holds as its own shard is cut to the rank's
share of ``max_samples`` (``len(range(r, max_samples, W))``), so the total is at most
``max_samples``, and exactly that when every shard is long enough.
"""
from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn as nn

from .. import distributed as D
from .backends import ParamTable
from .data import iter_tensors, map_tensors, num_samples_hint, split_tuple

SHARD_MODES = ("auto", "none")


def _compiled_module_class() -> Optional[type]:
    """``torch.compile``'s wrapper class, where torch's compiler is loaded (a compiled model implies it is)."""
    dynamo = sys.modules.get("torch._dynamo.eval_frame")
    return getattr(dynamo, "OptimizedModule", None)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers (any depth).

    Hooks go on the inner module and parameter names carry no ``module.`` or
    ``_orig_mod.`` prefix; the wrapper's forward (gradient synchronization, scatter to
    devices, the compiled graph) is not used: a compiled model's Fisher is computed on
    its eager module, the same function. A compiled graph would not run the per-layer
    hooks, and its backward (with donated buffers) cannot be taken twice.
    """
    from torch.nn.parallel import DataParallel, DistributedDataParallel
    compiled = _compiled_module_class()
    while True:
        if isinstance(model, (DistributedDataParallel, DataParallel)):
            model = model.module
        elif compiled is not None and isinstance(model, compiled):
            model = model._orig_mod
        else:
            return model


def use_distributed(distributed: Optional[bool]) -> bool:
    """Resolve ``fisher_diagonal(distributed=...)``: None = auto (an initialized group of > 1 process)."""
    if distributed is None:
        return D.is_distributed()
    if distributed is False:
        return False
    if distributed is True:
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "distributed=True but no torch.distributed process group is initialized: call "
                "torch.distributed.init_process_group (or ftdfast.distributed.init_from_env) in every process, "
                "launched with torchrun --nproc-per-node N script.py")
        return True
    raise TypeError(f"distributed must be None (auto), True or False, got {distributed!r}")


@dataclass
class Shard:
    """This rank's data, the cap on its sample count, and that count when cheap to know."""

    data: Any
    max_samples: Optional[int]
    total: Optional[int]


def distributed_sampler_of(loader: Any):
    """The ``DistributedSampler`` a DataLoader draws from (as its sampler or in its batch sampler), else None."""
    from torch.utils.data.distributed import DistributedSampler
    batch_sampler = getattr(loader, "batch_sampler", None)
    for sampler in (getattr(batch_sampler, "sampler", None), getattr(loader, "sampler", None)):
        if isinstance(sampler, DistributedSampler):
            return sampler
    return None


def _own_shard(data: Any, max_samples: Optional[int], rank: int, world: int) -> Shard:
    hint = num_samples_hint(data)
    if max_samples is None:
        return Shard(data, None, hint)
    cap = len(range(rank, max_samples, world))
    if cap == 0:
        return Shard([], None, 0)
    return Shard(data, cap, cap if hint is None else min(hint, cap))


# Rows of a tuple that tuple_fingerprint reads (evenly spaced, first and last included).
FINGERPRINT_ROWS = 16


def tuple_fingerprint(data: tuple) -> torch.Tensor:
    """4 float64 numbers that tell tuples ``(X, y)`` apart cheaply: N, the total entry count, and the
    plain and position-weighted sums of up to :data:`FINGERPRINT_ROWS` evenly spaced samples of every
    tensor (NaN and inf mapped to finite numbers, so equal data gives equal numbers)."""
    x, y, n = split_tuple(data)
    rows = torch.linspace(0, n - 1, min(n, FINGERPRINT_ROWS)).round().long()
    count, total, weighted = 0, 0.0, 0.0
    for k, t in enumerate([*iter_tensors(x), y]):
        v = torch.nan_to_num(t[rows.to(t.device)].detach().to("cpu", torch.float64).reshape(-1))
        position = torch.arange(1, v.numel() + 1, dtype=torch.float64) * (k + 1)
        count += t.numel()
        total += float(v.sum())
        weighted += float((v * position).sum())
    return torch.tensor([n, count, total, weighted], dtype=torch.float64)


def tuple_is_replicated(data: tuple, world: int) -> bool:
    """Whether every rank holds the same tuple (by :func:`tuple_fingerprint`). Collective.

    A rank whose tuple is malformed still joins the gather, then raises its error.
    """
    import torch.distributed as dist
    error = None
    try:
        mine = torch.cat([tuple_fingerprint(data), torch.zeros(1, dtype=torch.float64)])
    except Exception as e:  # noqa: BLE001 - raised after the gather, so no rank is left waiting
        mine, error = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0], dtype=torch.float64), e
    where = D.collective_device()
    gathered = [torch.empty(5, dtype=torch.float64, device=where) for _ in range(world)]
    dist.all_gather(gathered, mine.to(where))
    if error is not None:
        raise error
    return all(torch.equal(g.cpu(), gathered[0].cpu()) for g in gathered)


def shard_data(data: Any, *, mode: str, max_samples: Optional[int], rank: int, world: int) -> Shard:
    """Rank ``rank``'s part of ``data`` under ``shard=mode`` (see the module docs)."""
    from torch.utils.data import DataLoader, IterableDataset
    if mode == "none":
        return _own_shard(data, max_samples, rank, world)
    if isinstance(data, tuple) and not tuple_is_replicated(data, world):
        return _own_shard(data, max_samples, rank, world)
    if isinstance(data, tuple):
        x, y, n = split_tuple(data)
        block = D.shard_indices(n if max_samples is None else min(n, max_samples), rank, world)
        cut = (map_tensors(x, lambda t: t[block.start:block.stop]), y[block.start:block.stop])
        return Shard(cut, None, len(block))
    sampler = distributed_sampler_of(data)
    if sampler is not None:
        if (sampler.num_replicas, sampler.rank) != (world, rank):
            raise ValueError(
                f"the DataLoader's DistributedSampler has num_replicas={sampler.num_replicas}, "
                f"rank={sampler.rank}, but this process is rank {rank} of {world}; create the sampler after "
                "init_process_group without num_replicas/rank (it reads them from the process group)")
        size = len(sampler.dataset)
        used = sampler.total_size if sampler.drop_last else size  # distinct samples in the sampler's list
        if used < size:
            warnings.warn(
                f"ftdfast: the DistributedSampler has drop_last=True and leaves out {size - used} of the "
                f"{size} samples; the Fisher is over the other {used}. Use drop_last=False (the repeated "
                "samples it pads with are skipped) to use every sample", stacklevel=3)
        cap = len(range(rank, used if max_samples is None else min(used, max_samples), world))
        if cap == 0:
            return Shard([], None, 0)
        return Shard(data, cap, min(cap, sampler.num_samples))
    if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
        warnings.warn(
            f"ftdfast: fisher_diagonal runs on {world} processes and the DataLoader has no "
            "DistributedSampler, so each rank uses it as its own shard of the data. If every rank holds the "
            f"same loader, every sample is used {world} times (the same Fisher, {world} times the work): give "
            "it a DistributedSampler, or pass shard='none' when each rank's loader holds only its share",
            stacklevel=3)
    return _own_shard(data, max_samples, rank, world)


def _all_reduce(t: torch.Tensor) -> None:
    """``all_reduce`` (sum) over the default group; a failure (a timeout) says what usually causes it."""
    import torch.distributed as dist
    try:
        dist.all_reduce(t)
    except Exception as e:
        rank, world = D.world()
        raise RuntimeError(
            f"fisher_diagonal: the all-reduce of the Fisher sums failed on rank {rank} of {world} ({e}). "
            "Every rank of the process group must call fisher_diagonal, with the same model; to compute it "
            "on some ranks only, pass distributed=False there") from e


def all_reduce_sums(table: ParamTable, totals: Optional[Dict[str, torch.Tensor]], seen: int,
                    error: Optional[BaseException], *, dtype: torch.dtype,
                    device: torch.device) -> Tuple[Dict[str, torch.Tensor], int]:
    """Sum every rank's per-parameter sums and sample count; the same result on every rank.

    ``totals``: this rank's sums (name -> tensor of the parameter's shape, ``dtype``), or
    None when this rank's work raised ``error``. Collective: every rank must call it.

    float64 (the default): ONE all-reduce of a flat buffer ``[sums (P), count, failed]``
    (the count is exact up to 2^53). Other dtypes cannot hold a large count exactly:
    one all-reduce of ``[count, failed]`` in int64, then one of the P sums. If any rank
    failed, every rank raises (see :func:`ftdfast.distributed.raise_on_any_failure`).
    The sums are written back into ``totals`` in place. Returns ``(totals, N)``.
    """
    shapes = [(name, p.shape, p.numel()) for name, p in table.params.items()]
    numel = sum(k for _, _, k in shapes)
    where = D.collective_device(device)
    failed = int(error is not None)

    def flat_sums(extra: int) -> torch.Tensor:
        flat = torch.zeros(numel + extra, dtype=dtype, device=where)
        if totals is not None:
            offset = 0
            for name, _, k in shapes:
                flat[offset:offset + k].copy_(totals[name].reshape(-1))
                offset += k
        return flat

    if dtype == torch.float64:
        flat = flat_sums(2)
        flat[numel], flat[numel + 1] = seen, failed
        _all_reduce(flat)
        count, failures = int(flat[numel].item()), int(flat[numel + 1].item())
    else:
        stats = torch.tensor([seen, failed], dtype=torch.int64, device=D.collective_device())
        _all_reduce(stats)
        count, failures = int(stats[0].item()), int(stats[1].item())
        flat = flat_sums(0) if failures == 0 else None
        if flat is not None:
            _all_reduce(flat)
    D.raise_on_any_failure(error, what="fisher_diagonal", known_failures=failures)
    assert totals is not None and flat is not None
    offset = 0
    for name, shape, k in shapes:
        totals[name].copy_(flat[offset:offset + k].view(shape))
        offset += k
    return totals, count
