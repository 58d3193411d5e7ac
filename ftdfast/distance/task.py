"""``task_distance``: the distance from task a to task b, given the two trained networks."""
from __future__ import annotations

from typing import Any, Tuple

import torch.nn as nn

from ..fisher import fisher_diagonal
from .measures import DEFAULT_MEASURE, get_measure

#: The Fisher kind of every task distance unless ``fisher=`` says otherwise: ``task_distance``,
#: ``distance_matrix`` (and ``ftdfast distance``) and the transfer estimator ``ftd``. The label-free Fisher
#: (``"exact"``): it depends only on the network and b's inputs, so the arbitrary correspondence between a's
#: output indices and b's labels plays no part; chosen by the ablation in ``docs/paper/REPORT.md`` (the same
#: closest source across seeds, architectures and head policies, where the empirical Fisher flips with the head
#: policy) and no worse than the empirical one on the transfer ground truth (``docs/transfer/README.md``).
#: The paper's formula read literally is ``fisher="empirical"``.
DEFAULT_FISHER = "exact"


def check_same_parameters(net_a: nn.Module, net_b: nn.Module) -> None:
    """Both networks have the same trainable parameter names and shapes (else a ValueError naming the first)."""
    pa = {n: p.shape for n, p in net_a.named_parameters() if p.requires_grad}
    pb = {n: p.shape for n, p in net_b.named_parameters() if p.requires_grad}
    hint = ("The Fisher task distance compares the same parameters of both networks: build them with the same "
            "head width (num_outputs = the largest class count of the task set), or use head='legacy' "
            "(zero padding of the smaller head, ftdfast.distance.pad_to_common) as in the authors' code")
    for name, shape in pa.items():
        if name not in pb:
            raise ValueError(f"trainable parameter {name!r} of net_a is not a trainable parameter of net_b. {hint}")
        if shape != pb[name]:
            raise ValueError(f"parameter {name!r} has shape {list(shape)} in net_a but {list(pb[name])} in net_b. "
                             f"{hint}")
    for name in pb:
        if name not in pa:
            raise ValueError(f"trainable parameter {name!r} of net_b is not a trainable parameter of net_a. {hint}")


def resolve_test_data(test_data: Any) -> Tuple[Any, Any]:
    """``(data for fisher_diagonal, default loss or None)``.

    An object with ``x_test``/``y_test`` attributes (a ``TaskData`` or ``LabeledData``) gives
    ``(x_test, y_test)`` and its ``loss`` attribute, if any; anything else is passed through.
    """
    if hasattr(test_data, "x_test") and hasattr(test_data, "y_test"):
        return (test_data.x_test, test_data.y_test), getattr(test_data, "loss", None)
    if not isinstance(test_data, (tuple, list)) and iter_is_self(test_data):
        raise ValueError("test_data_b is a one-shot iterator, but task_distance reads it twice (once per "
                         "network); pass a DataLoader, a list of (inputs, targets) batches or a tuple (x, y)")
    return test_data, None


def iter_is_self(obj: Any) -> bool:
    try:
        return iter(obj) is obj
    except TypeError:
        return False


def task_distance(net_a: nn.Module, net_b: nn.Module, test_data_b: Any, *, method: str = DEFAULT_MEASURE,
                  **fisher_options: Any) -> float:
    """The distance from source task a to target task b (asymmetric: ``d(a, b) != d(b, a)``).

    ``F_ab = fisher_diagonal(net_a, test_data_b)`` is the Fisher of the network trained on a,
    evaluated on b's test data; ``F_bb = fisher_diagonal(net_b, test_data_b)`` that of b's own
    network on the same data; the result compares the two.

    Args:
        net_a, net_b: the networks trained on tasks a and b (same architecture: same trainable
            parameter names and shapes), in eval mode where they have BatchNorm or dropout.
        test_data_b: task b's test data: a tuple ``(x, y)``, anything
            :func:`~ftdfast.fisher.fisher_diagonal` accepts (a DataLoader, a list of batches), or
            an object with ``x_test``/``y_test`` (e.g. ``TaskData``; its ``loss`` attribute, if
            any, is the default ``loss``).
        method: a name in :data:`~ftdfast.distance.MEASURES`: ``"fisher"`` (:func:`fisher_task_distance`),
            ``"cosine"`` (:func:`cosine_distance`, the baseline) or ``"legacy"`` (:func:`legacy_distance`,
            the square of the Fisher distance as the authors report it). This picks the formula
            only; the Fisher estimate is set by ``fisher_options`` (e.g. ``backend="legacy"``).
        **fisher_options: passed to both :func:`~ftdfast.fisher.fisher_diagonal` calls
            (``loss``, ``fisher`` (default :data:`DEFAULT_FISHER`), ``backend``, ``batch_size``,
            ``max_samples``, ``device``, ``progress``...).

    Returns:
        The distance as a float.
    """
    measure = get_measure(method)
    for net, name in ((net_a, "net_a"), (net_b, "net_b")):
        if not isinstance(net, nn.Module):
            raise TypeError(f"{name} must be an nn.Module, got {type(net).__name__}")
    check_same_parameters(net_a, net_b)
    data, loss = resolve_test_data(test_data_b)
    if loss is not None:
        fisher_options.setdefault("loss", loss)
    fisher_options.setdefault("fisher", DEFAULT_FISHER)
    F_ab = fisher_diagonal(net_a, data, **fisher_options)
    F_bb = fisher_diagonal(net_b, data, **fisher_options)
    return measure(F_ab, F_bb)
