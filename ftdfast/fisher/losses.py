"""Per-sample losses and the output gradients that define each Fisher kind.

Every backend reduces the Fisher to one primitive: given the model output ``z``
(n, *out) and a set of K output-gradient tensors ``v_k`` (each (n, *out)),

    F_i = (1/N) * sum_n sum_k ( <d z_n / d theta_i, v_kn> )^2

that is, the squared per-sample parameter gradient obtained by back-propagating
``v_k`` from the output, summed over k. The kind of Fisher only changes the
``v_k``:

- ``"empirical"``: K = 1, ``v = d loss_n / d z_n`` with the true labels.
- ``"exact"``: the expectation over labels drawn from the model's own predictive
  distribution, in closed form: K = C classes for cross-entropy
  (``v_c = sqrt(p_c) (p - e_c)``), K = D output elements for MSE and BCE.
- ``"mc"``: K = ``mc_samples`` labels drawn from the model, ``v_k = g(y_k) / sqrt(K)``.

Each built-in loss is the negative log-likelihood (up to constants) of a
distribution, which is what ``"exact"`` and ``"mc"`` sample from:

- ``"cross_entropy"``: logits (n, C) or (n, C, d...) and integer labels;
  categorical. Extra dimensions are averaged per sample.
- ``"mse"``: ``loss_n = mean_k (z_nk - y_nk)^2`` over the D non-batch elements;
  the NLL of a Gaussian with variance D/2 per element.
- ``"bce_with_logits"``: ``loss_n = mean_k BCE(z_nk, y_nk)``; independent Bernoulli.
- a callable ``(outputs, targets) -> (n,)`` per-sample losses: empirical only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F

LossArg = Union[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]
FISHER_KINDS = ("empirical", "exact", "mc")


def _mean_per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1) if x.dim() > 1 else x


def _ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _mean_per_sample(F.cross_entropy(z, y, reduction="none"))


def _mse(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _mean_per_sample(F.mse_loss(z, y, reduction="none"))


def _bce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _mean_per_sample(F.binary_cross_entropy_with_logits(z, y, reduction="none"))


@dataclass(frozen=True)
class LossSpec:
    """A per-sample loss and how to build output gradients for each Fisher kind."""

    name: str
    per_sample: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    # ----------------------------------------------------------------- checks
    def check(self, outputs: torch.Tensor, targets: torch.Tensor, batch_index: int) -> None:
        """Raise a ValueError naming the problem when targets do not fit the outputs."""
        where = f"batch {batch_index}"
        if outputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"{where}: the model returned {outputs.shape[0]} outputs for {targets.shape[0]} targets; "
                "the model must keep the batch dimension first")
        if self.name == "cross_entropy":
            if outputs.dim() < 2:
                raise ValueError(
                    f"{where}: cross_entropy needs logits of shape (n, C), got {tuple(outputs.shape)}; "
                    "use loss='bce_with_logits' for a single logit or loss='mse' for regression")
            if targets.is_floating_point():
                if targets.shape != outputs.shape:
                    raise ValueError(
                        f"{where}: float targets for cross_entropy must be class probabilities of the "
                        f"output's shape {tuple(outputs.shape)}, got {tuple(targets.shape)}")
                return
            num_classes = outputs.shape[1]
            if targets.shape != outputs.shape[:1] + outputs.shape[2:]:
                raise ValueError(
                    f"{where}: labels of shape {tuple(targets.shape)} do not fit logits of shape "
                    f"{tuple(outputs.shape)}; expected labels of shape {tuple(outputs.shape[:1] + outputs.shape[2:])}")
            if targets.numel():
                lo, hi = int(targets.min()), int(targets.max())
                if lo < 0 or hi >= num_classes:
                    bad = lo if lo < 0 else hi
                    raise ValueError(
                        f"{where}: label {bad} is outside the model's output range [0, {num_classes}): "
                        f"the model has {num_classes} outputs; relabel the data to 0..{num_classes - 1} "
                        "or widen the model's last layer")
        elif self.name in ("mse", "bce_with_logits"):
            if targets.shape != outputs.shape:
                raise ValueError(
                    f"{where}: {self.name} needs targets of the output's shape {tuple(outputs.shape)}, "
                    f"got {tuple(targets.shape)}")

    # --------------------------------------------------------- output grads
    def output_grads(self, outputs: torch.Tensor, targets: torch.Tensor, fisher: str, *,
                     mc_samples: int = 1, generator: Optional[torch.Generator] = None,
                     batch_index: int = 0) -> Iterator[torch.Tensor]:
        """Yield the output gradients ``v_k`` (each shaped like ``outputs``) for ``fisher``.

        ``outputs`` is detached here; the yielded tensors carry no graph.
        """
        z = outputs.detach()
        if fisher == "empirical":
            yield self.empirical_grad(z, targets, batch_index)
        elif fisher == "exact":
            yield from self._exact(z)
        elif fisher == "mc":
            scale = 1.0 / math.sqrt(mc_samples)
            for _ in range(mc_samples):
                y = self.sample(z, generator)
                yield self.empirical_grad(z, y, batch_index) * scale
        else:
            raise ValueError(f"fisher={fisher!r} is not one of {FISHER_KINDS}")

    def empirical_grad(self, z: torch.Tensor, targets: torch.Tensor, batch_index: int) -> torch.Tensor:
        """``d loss_n / d z_n`` for every sample: one backward through the loss only.

        Cross-entropy on logits (n, C) with integer labels takes its closed form,
        ``softmax(z_n) - e_(y_n)``, without autograd; where some logit is not finite, the
        general path below names the sample whose loss is not finite.
        """
        if self.name == "cross_entropy" and z.dim() == 2 and not targets.is_floating_point() \
                and bool(torch.isfinite(z.sum())):
            grad = torch.softmax(z, dim=1)
            grad[torch.arange(z.shape[0], device=z.device), targets.long()] -= 1.0
            return grad
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            losses = self.per_sample(zz, targets)
            if losses.shape != zz.shape[:1]:
                raise ValueError(
                    f"batch {batch_index}: the loss returned shape {tuple(losses.shape)}; a loss callable "
                    f"must return one loss per sample, shape ({zz.shape[0]},)")
            losses_seen = losses.detach()
            if not torch.isfinite(losses_seen).all():
                bad = int((~torch.isfinite(losses_seen)).nonzero()[0, 0])
                raise FloatingPointError(
                    f"batch {batch_index}: the loss of sample {bad} in this batch is not finite "
                    f"({float(losses_seen[bad])}); check the inputs and the model's weights for inf/nan")
            (grad,) = torch.autograd.grad(losses.sum(), zz)
        return grad

    def sample(self, z: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Draw labels from the model's predictive distribution at outputs ``z``."""
        if self.name == "cross_entropy":
            probs = torch.softmax(z.movedim(1, -1).reshape(-1, z.shape[1]).double(), dim=-1)
            y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            return y.reshape(z.movedim(1, -1).shape[:-1])
        if self.name == "bce_with_logits":
            p = torch.sigmoid(z.double())
            return torch.bernoulli(p, generator=generator).to(z.dtype)
        if self.name == "mse":
            std = math.sqrt(z[0].numel() / 2.0)
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
            return z + std * noise
        raise ValueError(f"fisher='mc' needs a loss with a known distribution, not {self.name!r}; "
                         "use one of 'cross_entropy', 'mse', 'bce_with_logits', or fisher='empirical'")

    def _exact(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        if self.name == "cross_entropy":
            if z.dim() != 2:
                raise ValueError(
                    "fisher='exact' with cross_entropy needs logits of shape (n, C); for outputs with "
                    "extra dimensions use fisher='mc'")
            p = torch.softmax(z, dim=1)
            sqrt_p = p.sqrt()
            for c in range(z.shape[1]):
                v = p.clone()
                v[:, c] -= 1
                yield v * sqrt_p[:, c:c + 1]
            return
        if self.name in ("mse", "bce_with_logits"):
            flat = z.reshape(z.shape[0], -1)
            d = flat.shape[1]
            if self.name == "mse":
                weight = torch.full_like(flat, math.sqrt(2.0 / d))
            else:
                s = torch.sigmoid(flat)
                weight = (s * (1 - s)).sqrt() / d
            for k in range(d):
                v = torch.zeros_like(flat)
                v[:, k] = weight[:, k]
                yield v.reshape(z.shape)
            return
        raise ValueError(f"fisher='exact' needs a loss with a known distribution, not {self.name!r}; "
                         "use one of 'cross_entropy', 'mse', 'bce_with_logits', or fisher='empirical'")


_BUILTIN = {
    "cross_entropy": _ce,
    "mse": _mse,
    "bce_with_logits": _bce,
}


def resolve_loss(loss: LossArg) -> LossSpec:
    """Turn the ``loss`` argument of :func:`fisher_diagonal` into a :class:`LossSpec`."""
    if isinstance(loss, str):
        if loss not in _BUILTIN:
            raise ValueError(f"loss={loss!r} is not one of {sorted(_BUILTIN)}; or pass a callable "
                             "(outputs, targets) -> per-sample losses of shape (n,)")
        return LossSpec(loss, _BUILTIN[loss])
    if callable(loss):
        return LossSpec("callable:" + getattr(loss, "__name__", type(loss).__name__), loss)
    raise TypeError(f"loss must be a name or a callable, got {type(loss).__name__}")
