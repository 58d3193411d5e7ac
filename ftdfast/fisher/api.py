"""``fisher_diagonal``: the exact diagonal Fisher of any model on any data source."""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

from ..native import _ext
from .._version import __version__
from .. import distributed as D
from ..progress import progress_bar
from . import rules as _builtin_rules  # noqa: F401  (registers the built-in rules)
from .backends import BACKENDS, ParamTable
from .checks import check_parameters, checked_batches
from .data import TargetsArg, check_count, check_targets_arg, num_samples_hint, stream_batches
from .losses import FISHER_KINDS, LossArg, resolve_loss
from .parallel import SHARD_MODES, Shard, all_reduce_sums, shard_data, unwrap_model, use_distributed
from .result import FisherDiagonal

BACKEND_NAMES = ("auto",) + tuple(BACKENDS)

_RANDOMIZING = (nn.modules.dropout._DropoutNd,)


def check_eval_mode(model: nn.Module) -> None:
    """Refuse modules whose training-mode behaviour mixes or randomizes samples. The model is never changed."""
    for name, m in model.named_modules():
        where = f"{name or '<model>'} ({type(m).__qualname__})"
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.training:
                raise ValueError(
                    f"{where} is in training mode: its batch statistics mix the samples of a batch, so "
                    "per-sample gradients are not defined. Call model.eval() before fisher_diagonal")
            if m.running_mean is None:
                raise ValueError(
                    f"{where} has track_running_stats=False, so it normalizes with batch statistics even in "
                    "eval mode and mixes samples; the diagonal Fisher per sample is not defined for it")
        elif m.training and (isinstance(m, _RANDOMIZING) and m.p > 0
                             or isinstance(m, nn.MultiheadAttention) and m.dropout > 0):
            raise ValueError(
                f"{where} is in training mode: dropout randomizes every sample's gradient. "
                "Call model.eval() before fisher_diagonal")


def check_batch_independent_backward(model: nn.Module) -> None:
    """Refuse modules whose backward scales a sample's gradient by statistics of the whole batch.

    ``nn.Embedding``/``nn.EmbeddingBag(scale_grad_by_freq=True)`` divide each table row's gradient by
    that id's count in the mini-batch: the per-sample gradient of the batch's backward is not defined
    apart from the batch, so any number returned would depend on how the data was batched.
    """
    for name, m in model.named_modules():
        if isinstance(m, (nn.Embedding, nn.EmbeddingBag)) and m.scale_grad_by_freq:
            raise ValueError(
                f"{name or '<model>'} ({type(m).__qualname__}) has scale_grad_by_freq=True: its backward divides "
                "each row's gradient by the id's frequency in the whole mini-batch, so a per-sample gradient "
                "(and the diagonal Fisher) is not defined apart from the batch. Set "
                "module.scale_grad_by_freq = False while computing the Fisher (the forward is unchanged), or "
                "use backend='legacy' for the squared mini-batch gradient")


def _pick_backend(backend: str) -> str:
    """The backend name that runs: ``"auto"`` becomes ``"native"`` where the extension is built, else ``"rules"``."""
    if backend not in BACKEND_NAMES:
        raise ValueError(f"backend={backend!r} is not one of {BACKEND_NAMES}")
    if backend == "native":
        _ext.require_native("backend='native'")
    if backend == "auto":
        return "native" if _ext.HAS_NATIVE else "rules"
    return backend


def fisher_diagonal(model: nn.Module, data: Any, *, loss: LossArg = "cross_entropy", fisher: str = "empirical",
                    backend: str = "auto", batch_size: int = 128, max_samples: Optional[int] = None,
                    device: Optional[torch.device | str] = None, dtype: torch.dtype = torch.float64,
                    progress: bool = True, mc_samples: int = 1, generator: Optional[torch.Generator] = None,
                    strict: bool = False, chunk_size: Optional[int] = None,
                    distributed: Optional[bool] = None, shard: str = "auto",
                    targets: TargetsArg = None) -> FisherDiagonal:
    """The diagonal Fisher ``F_i = (1/N) sum_n (d loss_n / d theta_i)^2`` of ``model`` on ``data``.

    Args:
        model: any ``nn.Module`` returning one output tensor (n, *out), or an output with a
            ``.logits`` tensor (a Hugging Face ``ModelOutput``), which is read. It must be in
            eval mode where BatchNorm or dropout would mix or randomize samples (an error
            says so otherwise); it is never modified, and ``.grad`` is left untouched.
            ``DistributedDataParallel`` / ``DataParallel`` / ``torch.compile`` wrappers are
            unwrapped: the result's names are those of the inner module (no ``module.`` or
            ``_orig_mod.`` prefix), and a compiled model's Fisher is computed on its eager
            module. Gradient checkpointing needs ``use_reentrant=False`` (an error says so).
            The forward must be deterministic: randomness that eval mode does not switch
            off, such as a functional ``F.dropout(x, p, training=True)`` (write
            ``training=self.training``), randomizes every gradient; two identical forwards
            of the first batch's first samples are compared and an error says so when
            they differ.
        data: a ``DataLoader``, any iterable of batches, or a tuple ``(X, y)`` of
            tensors/arrays (n first) that is sliced into ``batch_size`` batches. A batch is
            an ``(inputs, targets)`` pair; a mapping (a dict, a Hugging Face
            ``BatchEncoding``: what HF collators return), whose targets are under the key
            ``targets`` (default ``"labels"``) and whose other entries go to
            ``model(**inputs)``; or a longer tuple/list (a ``TensorDataset`` of several
            tensors) with ``targets`` naming the targets' position. Batches stream: memory
            does not grow with N.
        loss: the per-sample loss, a name or a :class:`ftdfast.fisher.losses.Loss`:
            ``"cross_entropy"`` (logits (n, C), labels (n,); alias
            ``"sequence_classification"``), ``"mse"``, ``"bce_with_logits"``; for token
            logits (n, t, V) with labels (n, t), ``-100`` ignored: ``"causal_lm"`` (shifted:
            logits at t predict the label at t + 1), ``"masked_lm"`` and
            ``"token_classification"`` (not shifted). For these one sample is one sequence,
            its loss the mean over its label tokens (``"..._sum"``: their sum;
            ``"..._token"``: every label token a sample, N = the number of label tokens,
            one backward per position); see :class:`ftdfast.fisher.losses.TokenCrossEntropy`.
            Or a callable ``(outputs, targets) -> (n,)`` per-sample losses (empirical only).
        fisher: ``"empirical"`` (true labels, the paper's definition), ``"exact"``
            (expectation over the model's predictive distribution, in closed form: one
            backward per class / output element) or ``"mc"`` (``mc_samples`` labels drawn
            from the model with ``generator``). For the token losses ``"exact"`` takes
            one backward per label position and class and is refused above
            ``EXACT_MAX_BACKWARDS`` (4096; a language model's vocabulary): use ``"mc"``,
            which draws every label token from the model, -100 positions left out.
        backend: ``"rules"`` (per-layer closed forms, one forward and backward per batch),
            ``"native"`` (the same with the C++/CUDA kernels), ``"func"`` (whole-model
            torch.func), ``"loop"`` (one batched forward and one backward per sample: the
            reference), ``"loop1"`` (a forward and backward per sample, each a batch of
            one: a second reference), ``"legacy"``
            (the square of each batch-mean gradient as in the authors' code: NOT this
            quantity, batch-size dependent), ``"auto"`` (native where built, else rules).
        batch_size: batch size when ``data`` is a tuple. The result does not depend on it.
        max_samples: stop after this many samples (rows: sequences for the token losses; in all,
            over every rank when distributed).
        device: where to run; default: the device of the model's parameters.
        dtype: accumulation dtype, float32 or float64. float64 by default: sums of 10^5 and
            more squares lose digits in float32. Each batch's per-sample gradients, their
            squares and the batch's sum are formed in the model's dtype, or in float32 for a
            float16/bfloat16 model (in 16 bits, squares below 6e-8 underflow to 0 in float16
            and a sum keeps 3 digits in bfloat16), then added to the accumulator in
            ``dtype``. The result then does not depend on the batch size beyond float32
            rounding; the error that remains is the 16-bit forward and backward's own (see
            docs/precision.md). Passing the model's dtype (float32) halves the result's
            memory and skips the conversion: the first batch's sum becomes the accumulator.
            Each later batch then adds a relative rounding of about 6e-8. A 16-bit ``dtype``
            is refused.
        progress: show a progress bar.
        strict: raise instead of using the torch.func fallback for modules without a rule.
        chunk_size: samples per vmap chunk for ``backend="func"`` (default: the ``FTDFAST_WORKSPACE_MB`` budget).
        distributed: data-parallel over the processes of a ``torch.distributed`` job.
            None (default): when a process group of more than one process is
            initialized; False: never (each process computes on its own data alone);
            True: requires an initialized group. Every rank must call
            ``fisher_diagonal`` with the same arguments except the data: each rank
            streams its shard (see ``shard``), the per-parameter sums and the sample
            counts are added in one all-reduce at the end, and every rank returns the
            same result, equal to the single-process Fisher on all the data up to
            rounding. If the computation raises on one rank, every rank raises (the
            others :class:`ftdfast.distributed.RemoteRankError`). The all-reduce runs
            where the process group's backend wants it: on the accumulators' GPU for
            NCCL (call ``torch.cuda.set_device(local_rank)`` first), on the CPU for gloo.
            ``backend="legacy"`` is single-process only. With ``fisher="mc"`` each rank
            draws its own labels from ``generator``: a valid draw, not the
            single-process one.
        shard: how a rank finds its share of ``data`` when distributed. ``"auto"``: a
            tuple ``(X, y)`` that is the same on every rank is split into contiguous
            blocks, one that differs (e.g. ``(X[r::W], y[r::W])``) is this rank's share; a
            ``DataLoader`` with a ``DistributedSampler`` is used as is (the samples it
            repeats to pad are skipped); any other data is taken as this rank's own
            shard. ``"none"``: every rank's data is its own shard, used as it is. See
            :mod:`ftdfast.fisher.parallel`.
        targets: where each batch keeps its targets. None (default): the second item of a
            pair, the key ``"labels"`` of a mapping (Hugging Face's name). A str: the key of
            mapping batches (e.g. ``"label"``); it is removed from the model's inputs, so a
            Hugging Face model does not compute its own loss. An int: the position in
            tuple/list batches (e.g. ``-1``: the last; the others are the model's
            positional inputs, in order); required for tuples of more than two items.

    Returns:
        A :class:`FisherDiagonal` mapping each trainable parameter's name to a tensor of
        its shape (dtype ``dtype``), with ``num_samples`` = N (over all ranks; label tokens
        for a ``"..._token"`` loss) and
        ``meta["world_size"]`` = the number of processes that computed it.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if fisher not in FISHER_KINDS:
        raise ValueError(f"fisher={fisher!r} is not one of {FISHER_KINDS}")
    if fisher == "mc" and (not isinstance(mc_samples, int) or mc_samples < 1):
        raise ValueError(f"mc_samples must be a positive integer, got {mc_samples!r}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch dtype, got {dtype!r}")
    if dtype.itemsize < 4:
        raise ValueError(
            f"dtype={dtype} is too narrow to accumulate squared gradients (float16 squares below 6e-8 "
            "become 0, a bfloat16 sum keeps 3 digits); pass dtype=torch.float32 or torch.float64 (the default). "
            "A float16/bfloat16 model is fine: its squares and sums are formed in float32")
    used = _pick_backend(backend)
    engine_cls, options = BACKENDS[used]
    if fisher not in engine_cls.fisher_kinds:
        raise ValueError(f"backend={used!r} computes fisher={engine_cls.fisher_kinds} only, not {fisher!r}")
    batch_size = check_count(batch_size, "batch_size")
    max_samples = check_count(max_samples, "max_samples", optional=True)
    check_targets_arg(targets)
    if shard not in SHARD_MODES:
        raise ValueError(f"shard={shard!r} is not one of {SHARD_MODES}")
    parallel = use_distributed(distributed)
    rank, world = D.world() if parallel else (0, 1)
    if parallel and not engine_cls.distributed:
        raise ValueError(f"backend={used!r} is not data-parallel (it reproduces single-process code); "
                         "pass distributed=False to run it in each process on its own data")
    model = unwrap_model(model)
    spec = resolve_loss(loss)
    table = ParamTable(model)
    if not table.params:
        raise ValueError("the model has no trainable parameters (every parameter has requires_grad=False); "
                         "unfreeze the parameters whose Fisher you want")
    check_parameters(table.params)
    if device is None:
        device = next(iter(table.params.values())).device
    device = torch.device(device)

    seen, totals, error, engine = 0, None, None, None
    try:
        check_eval_mode(model)
        if engine_cls.per_sample:
            check_batch_independent_backward(model)
        if parallel:
            part = shard_data(data, mode=shard, max_samples=max_samples, rank=rank, world=world)
        else:
            part = Shard(data, max_samples, num_samples_hint(data))
            if max_samples is not None and part.total is not None:
                part.total = min(part.total, max_samples)
        engine = engine_cls(model, table, strict=strict, chunk_size=chunk_size, loss_spec=spec, fisher=fisher,
                            **options)
        engine.start(dtype)
        desc = f"Fisher ({used}, rank 0 of {world})" if parallel else f"Fisher ({used})"
        with progress_bar(total=part.total, enabled=progress and rank == 0, desc=desc, unit="sample") as bar:
            for batch in checked_batches(stream_batches(part.data, batch_size=batch_size,
                                                        max_samples=part.max_samples, device=device,
                                                        targets=targets),
                                         model, lambda: engine.acc):
                def grads_for(out, batch=batch):
                    spec.check(out, batch.targets, batch.index)
                    return spec.output_grads(out, batch.targets, fisher, mc_samples=mc_samples,
                                             generator=generator, batch_index=batch.index)
                engine.accumulate(batch, grads_for)
                seen += spec.count(batch.targets)
                bar.update(batch.n)
        totals = engine.totals()
    except Exception as e:
        if not parallel or D.is_fatal(e):
            raise
        error = e  # every rank must still reach the all-reduce; there every rank raises
    if parallel:
        totals, seen = all_reduce_sums(table, totals, seen, error, dtype=dtype, device=device)
    if seen == 0:
        raise ValueError("the data is empty: no samples to compute the Fisher on")

    values = engine.finish(totals, seen)
    meta = {"loss": spec.name, "fisher": fisher, "backend": used, "dtype": str(dtype).replace("torch.", ""),
            "model": type(model).__qualname__, "torch": str(torch.__version__), "ftdfast": __version__,
            "world_size": world}
    if fisher == "mc":
        meta["mc_samples"] = mc_samples
    return FisherDiagonal(values, seen, meta)
