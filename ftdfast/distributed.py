"""Small helpers for work split over the processes of a ``torch.distributed`` job.

Index letters: r rank, W world size (number of processes), n work items or samples.

Launch one process per GPU (or a few per CPU machine) with torchrun and start the
process group in each::

    torchrun --nproc-per-node 4 script.py            # one machine, 4 processes

    # in script.py
    from ftdfast.distributed import init_from_env
    rank, world = init_from_env(timeout_s=1800)      # NCCL with CUDA, gloo without
    F = ftdfast.fisher_diagonal(model, (X, y))       # each rank: its share of X; the same F everywhere

Without a launcher (``python script.py``) ``init_from_env`` starts nothing and every
helper here acts as a job of one process: ``world() == (0, 1)``.

What is here:

- :func:`world`, :func:`is_distributed`: ``(rank, world_size)`` and "more than one process";
- :func:`shard_indices` (a contiguous block of ``range(n)`` per rank: samples) and
  :func:`assign` (round-robin: independent work items of uneven cost);
- :func:`run_items`: each rank runs its share of independent items, skipping those
  whose result already exists (a shared on-disk cache is the meeting point); when it
  returns, every rank has finished, so rank 0 can assemble the results;
- :func:`raise_on_any_failure`: the meeting point at the end of a collective piece of
  work, where an error on one rank becomes an error on every rank;
- :func:`barrier_with_timeout`, :func:`init_from_env`.

When one rank fails
-------------------
A Python exception inside :func:`ftdfast.fisher_diagonal` or inside the ``fn`` of
:func:`run_items` does not leave the other ranks waiting: every rank still reaches the
closing collective, learns there that a rank failed, and raises. The failing rank
raises its own exception; every other rank raises :class:`RemoteRankError`, which
quotes the failing rank's error, after a short delay (:data:`REMOTE_ERROR_DELAY_S`),
so that a launcher (torchrun, ``torch.multiprocessing.spawn``), which stops the whole
job at the first process that exits with an error, reports the failing rank's own
error first. Under torchrun, decorate ``main`` with
``torch.distributed.elastic.multiprocessing.errors.record`` to see that traceback in
torchrun's summary.

Anything else that stops one rank (an exception in your own code between collectives,
a crash, an out-of-memory kill, a CUDA error, which leaves the device unusable for
collectives) leaves the other ranks waiting in their next collective. A launcher ends
the job at once; without one (processes started by hand, by ``srun`` without
``--kill-on-bad-exit``, ...) only the process group's timeout does. So create the group
with a timeout (:func:`init_from_env` does; otherwise pass
``timeout=datetime.timedelta(seconds=...)`` to ``torch.distributed.init_process_group``),
chosen longer than the longest wait at a meeting point, since a rank that finishes its
share early waits there for the slowest rank: about the work of one rank's share for
:func:`run_items` and ``fisher_diagonal``. With NCCL, a collective that times out aborts
the process (the default ``TORCH_NCCL_ASYNC_ERROR_HANDLING``); with gloo it raises.
"""
from __future__ import annotations

import datetime
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar

import torch

T = TypeVar("T")

REMOTE_ERROR_DELAY_S = 3.0
"""Seconds a rank waits before raising :class:`RemoteRankError` (so the failing rank's error is seen first)."""

_MESSAGE_CHARS = 2000
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _dist():
    import torch.distributed as dist
    return dist


def _initialized() -> bool:
    dist = _dist()
    return dist.is_available() and dist.is_initialized()


def world(group: Any = None) -> Tuple[int, int]:
    """``(rank, world_size)`` of this process in ``group`` (default: the whole job); ``(0, 1)`` without a job."""
    if not _initialized():
        return 0, 1
    dist = _dist()
    return dist.get_rank(group), dist.get_world_size(group)


def is_distributed(group: Any = None) -> bool:
    """True when a process group is initialized and has more than one process."""
    return world(group)[1] > 1


def _check_rank(rank: int, world_size: int) -> None:
    if not (isinstance(world_size, int) and world_size >= 1):
        raise ValueError(f"world size must be a positive integer, got {world_size!r}")
    if not (isinstance(rank, int) and 0 <= rank < world_size):
        raise ValueError(f"rank must be an integer in [0, {world_size}), got {rank!r}")


def shard_indices(n: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous block of ``range(n)``.

    The W blocks are disjoint, cover ``range(n)`` in order, and their sizes differ by at
    most one (the first ``n % W`` ranks get one more). A rank gets an empty range when
    ``n < W``. Contiguous blocks keep each rank's slices of a tensor contiguous.
    """
    _check_rank(rank, world_size)
    if not (isinstance(n, int) and n >= 0):
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (rank < extra))


def assign(items: Sequence[T], rank: int, world_size: int) -> List[T]:
    """Rank ``rank``'s share of ``items``, round-robin: ``items[rank::world_size]``.

    Deterministic: every rank computes the same split from the same sequence. Round-robin
    rather than blocks, so that items listed in order of growing cost spread evenly.
    """
    _check_rank(rank, world_size)
    return list(items)[rank::world_size]


def collective_device(device: torch.device | str | None = None, group: Any = None) -> torch.device:
    """Where tensors for a collective of ``group``'s backend must live, for data on ``device``.

    NCCL: a CUDA device (``device`` itself when it is one, else the current CUDA device);
    gloo: the CPU; a backend per device type (``"cpu:gloo,cuda:nccl"``) or another
    backend: ``device`` itself (the CPU by default).
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    backend = str(_dist().get_backend(group)).lower()
    if ":" in backend:  # e.g. "cpu:gloo,cuda:nccl"
        kinds = {part.split(":", 1)[0] for part in backend.split(",")}
        return device if device.type in kinds else torch.device("cpu")
    if backend == "nccl":
        return device if device.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    if backend == "gloo":
        return torch.device("cpu")
    return device


# ------------------------------------------------------------------ failures
class RemoteRankError(RuntimeError):
    """Raised on a rank whose own work succeeded because another rank's failed.

    ``failures`` lists ``(rank, "ExceptionType: message")`` for every rank that failed.
    """

    def __init__(self, what: str, rank: int, world_size: int, failures: List[Tuple[int, str]]):
        self.rank, self.world_size, self.failures = rank, world_size, failures
        lines = "\n".join(f"  rank {r}: {m}" for r, m in failures)
        super().__init__(f"{what} failed on {len(failures)} of {world_size} ranks; rank {rank} stops too. "
                         f"The failing rank's own traceback is in its output. Errors:\n{lines}")


def describe_error(error: BaseException) -> str:
    """``"ExceptionType: message"``, cut to a couple of thousand characters."""
    text = f"{type(error).__name__}: {error}"
    return text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + " [...]"


def is_fatal(error: BaseException) -> bool:
    """Errors after which this process must not enter another collective (re-raise them at once).

    Not an ``Exception`` (KeyboardInterrupt, SystemExit), a failed collective or store
    (``torch.distributed.DistError``), or a CUDA error that may have left the device unusable.
    """
    if not isinstance(error, Exception):
        return True
    dist = _dist()
    dist_error = getattr(dist, "DistError", None)
    if dist_error is not None and isinstance(error, dist_error):
        return True
    accelerator_error = getattr(torch, "AcceleratorError", None)
    if accelerator_error is not None and isinstance(error, accelerator_error):
        return True
    return isinstance(error, RuntimeError) and ("CUDA error" in str(error) or "NCCL" in str(error))


def raise_on_any_failure(error: Optional[BaseException], *, what: str, group: Any = None,
                         known_failures: Optional[int] = None, message: Optional[str] = None) -> None:
    """A meeting point for every rank of ``group``: if any rank passes an error, every rank raises.

    Every rank must call it (it is a collective), passing the exception its own work
    raised, or None. When no rank failed it returns (after one all-reduce of one
    integer: it is also a barrier). Otherwise the ranks exchange their error messages;
    a failing rank re-raises its own ``error`` and every other rank raises
    :class:`RemoteRankError` after :data:`REMOTE_ERROR_DELAY_S` seconds.

    ``known_failures``: the number of failing ranks when the caller has already summed it
    (piggybacked on its own all-reduce); then the first all-reduce is skipped.
    ``message``: what the other ranks quote for ``error`` (default :func:`describe_error`).
    Without a process group of more than one process: raises ``error`` if given.
    """
    rank, world_size = world(group)
    if world_size == 1:
        if error is not None:
            raise error
        return
    dist = _dist()
    if known_failures is None:
        flag = torch.tensor([int(error is not None)], dtype=torch.int64, device=collective_device(group=group))
        dist.all_reduce(flag, group=group)
        known_failures = int(flag.item())
    if known_failures == 0:
        return
    messages: List[Optional[str]] = [None] * world_size
    if error is not None and message is None:
        message = describe_error(error)
    dist.all_gather_object(messages, None if error is None else message, group=group)
    if error is not None:
        raise error
    time.sleep(REMOTE_ERROR_DELAY_S)
    raise RemoteRankError(what, rank, world_size, [(r, m) for r, m in enumerate(messages) if m is not None])


# ----------------------------------------------------------- meeting points
def barrier_with_timeout(timeout_s: Optional[float] = None, group: Any = None) -> None:
    """Wait for every rank of ``group``; a no-op without a job of more than one process.

    With gloo and ``timeout_s``, a ``monitored_barrier``: after ``timeout_s`` seconds it
    raises an error that names the ranks that did not arrive. With other backends
    (NCCL), a plain barrier, bounded by the process group's own timeout (set when the
    group is created: see :func:`init_from_env`).
    """
    if not is_distributed(group):
        return
    dist = _dist()
    if timeout_s is not None and str(dist.get_backend(group)).lower() == "gloo":
        dist.monitored_barrier(group=group, timeout=datetime.timedelta(seconds=timeout_s), wait_all_ranks=True)
    else:
        dist.barrier(group=group)


def init_from_env(timeout_s: float = 1800.0, *, backend: Optional[str] = None,
                  required: bool = False) -> Tuple[int, int]:
    """Start the default process group from torchrun's environment; return ``(rank, world_size)``.

    Reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` (and ``LOCAL_RANK``),
    which ``torchrun`` sets. ``backend``: default ``"nccl"`` when CUDA is available
    (then ``torch.cuda.set_device(LOCAL_RANK)``: one GPU per process), else ``"gloo"``.
    ``timeout_s``: the process group's timeout, which ends the job when a rank stops
    without a launcher to notice (see the module docs); it must exceed the longest time
    a rank may wait for the others at a meeting point.

    Without those variables (a plain ``python script.py``), nothing is started and
    ``(0, 1)`` is returned, unless ``required`` (then an error says how to launch).
    Calling it again in a process whose group is already started returns its
    ``(rank, world_size)``.
    """
    if _initialized():
        return world()
    missing = [v for v in _TORCHRUN_VARS if v not in os.environ]
    if missing:
        if required:
            raise RuntimeError(
                f"init_from_env: the environment variables {', '.join(missing)} are not set; launch the script "
                "with torchrun, e.g. torchrun --nproc-per-node 2 script.py, or call "
                "torch.distributed.init_process_group yourself")
        return 0, 1
    if not (isinstance(timeout_s, (int, float)) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number of seconds, got {timeout_s!r}")
    dist = _dist()
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; install a build with distributed support")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if "nccl" in backend:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but this machine has {count} CUDA device(s): start at most {count} "
                "processes per machine (torchrun --nproc-per-node), or use backend='gloo'")
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s))
    return world()


# ---------------------------------------------------------------- run_items
@dataclass
class ItemShare:
    """What :func:`run_items` did on this rank. Positions index the ``items`` sequence."""

    rank: int
    world_size: int
    assigned: List[int] = field(default_factory=list)  # this rank's share of the items not done before
    skipped: List[int] = field(default_factory=list)   # done before the call (the same list on every rank)
    results: Dict[int, Any] = field(default_factory=dict)  # fn's return value for each assigned position


def _name_item(error: BaseException, i: int, item: Any, rank: int, world_size: int, stage: str) -> str:
    """Name the item (and rank) in a note on ``error`` (Python >= 3.11); return that text."""
    where = f"run_items: {stage} item {i} ({repr(item)[:200]}) on rank {rank} of {world_size}"
    add_note = getattr(error, "add_note", None)
    if add_note is not None:
        add_note(where)
    return where


def run_items(items: Sequence[T], fn: Callable[[T], Any], *, done: Optional[Callable[[T], bool]] = None,
              group: Any = None, progress: bool = False, desc: str = "items") -> ItemShare:
    """Run ``fn(item)`` for every item that is not ``done``, each on exactly one rank.

    Every rank of ``group`` must call it with the same ``items`` in the same order (it
    is collective). ``fn`` is called for side effects, typically writing its result to
    a cache shared by all ranks (a shared file system); its return value is kept in the
    rank's :class:`ItemShare` only.

    Steps: (1) if ``done`` is given, the ranks split the ``done(item)`` checks
    round-robin and sum the answers (one all-reduce), so they agree on which items are
    left even while results appear; (2) the items left are assigned round-robin
    (:func:`assign`); each rank runs its share in order, and stops at its first error;
    (3) every rank meets at :func:`raise_on_any_failure`: when it returns, every rank
    has finished its share, so rank 0 can assemble the results from the cache. If
    any rank failed, every rank raises: the failing rank its own error (with the item
    named in a note), the others :class:`RemoteRankError` quoting it. Results written
    before the failure stay in the cache, so a rerun only computes what is missing.

    Without a job of more than one process this is a plain loop (errors raise at once).

    Returns:
        This rank's :class:`ItemShare`.
    """
    items = list(items)
    n = len(items)
    rank, world_size = world(group)
    error: Optional[BaseException] = None
    where = ""
    skipped: List[int] = []
    pending = list(range(n))
    if done is not None:
        flags = torch.zeros(n, dtype=torch.int64)
        for i in assign(range(n), rank, world_size):
            try:
                flags[i] = int(bool(done(items[i])))
            except Exception as e:  # noqa: BLE001 - every rank must still reach the collective
                if world_size == 1 or is_fatal(e):
                    _name_item(e, i, items[i], rank, world_size, "checking")
                    raise
                error, where = e, _name_item(e, i, items[i], rank, world_size, "checking")
                break
        if world_size > 1:
            flags_c = flags.to(collective_device(group=group))
            _dist().all_reduce(flags_c, group=group)
            flags = flags_c.cpu()
        skipped = [i for i in range(n) if flags[i]]
        pending = [i for i in range(n) if not flags[i]]
    share = ItemShare(rank, world_size, assigned=assign(pending, rank, world_size), skipped=skipped)
    if error is None:
        from .progress import progress_bar
        with progress_bar(total=len(share.assigned), enabled=progress and rank == 0,
                          desc=f"{desc} (rank 0 of {world_size})" if world_size > 1 else desc, unit="item") as bar:
            for i in share.assigned:
                try:
                    share.results[i] = fn(items[i])
                except Exception as e:  # noqa: BLE001 - every rank must still reach the collective
                    if world_size == 1 or is_fatal(e):
                        _name_item(e, i, items[i], rank, world_size, "running")
                        raise
                    error, where = e, _name_item(e, i, items[i], rank, world_size, "running")
                    break
                bar.update(1)
    raise_on_any_failure(error, what="run_items", group=group,
                         message=None if error is None else f"{where}: {describe_error(error)}")
    return share
