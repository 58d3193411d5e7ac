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
  (``v_c = sqrt(p_c) (p - e_c)``), K = D output elements for MSE and BCE,
  K = C x T (classes x label positions) for the token losses.
- ``"mc"``: K = ``mc_samples`` labels drawn from the model, ``v_k = g(y_k) / sqrt(K)``.

Each loss is a :class:`Loss`: one protocol (``per_sample``, ``count``, ``check``,
``empirical_grad``, ``sample``, ``exact_grads``), no switches on names. The built-in
ones, by name (:data:`LOSSES`), are negative log-likelihoods (up to constants) of a
distribution, which is what ``"exact"`` and ``"mc"`` sample from:

- ``"cross_entropy"`` (alias ``"sequence_classification"``): logits (n, C) or
  (n, C, d...) and integer labels; categorical. Extra dimensions are averaged per sample.
- ``"mse"``: ``loss_n = mean_k (z_nk - y_nk)^2`` over the D non-batch elements;
  the NLL of a Gaussian with variance D/2 per element.
- ``"bce_with_logits"``: ``loss_n = mean_k BCE(z_nk, y_nk)``; independent Bernoulli.
- the token losses (:class:`TokenCrossEntropy`): logits (n, t, V) with the classes
  LAST (Hugging Face's layout) and labels (n, t), ``-100`` where a position has no
  label. ``"causal_lm"`` shifts (logits at t predict the label at t + 1, as Hugging
  Face's ``...ForCausalLM`` loss); ``"masked_lm"`` and ``"token_classification"``
  (the same loss) do not. One sample is one sequence and its loss is the MEAN over
  its label tokens (what ``model(**one_sequence).loss`` returns); ``"..._sum"``: the
  sum over them; ``"..._token"``: every label token is a sample of its own.
- a callable ``(outputs, targets) -> (n,)`` per-sample losses: empirical only.
"""
from __future__ import annotations

import math
from typing import Callable, Iterator, Optional, Union

import torch
import torch.nn.functional as F

FISHER_KINDS = ("empirical", "exact", "mc")
IGNORE_INDEX = -100  # a label position without a label (torch's ignore_index default, Hugging Face's padding)
# fisher="exact" on a token loss takes one backward per (label position, class) of a batch; above this
# count it refuses (GPT-2: 50,257 classes x T positions) and names fisher="mc".
EXACT_MAX_BACKWARDS = 4096


def _mean_per_sample(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).mean(dim=1) if x.dim() > 1 else x


class Loss:
    """A per-sample loss and how to build output gradients for each Fisher kind (the protocol).

    A loss has ``m = count(targets)`` samples in a batch: one per row (n) for every built-in
    loss but the token-level ones, where each label token is one. ``per_sample`` returns their
    m losses; the output gradients ``v_k`` are shaped like the output ``z`` (n, *out), and
    the per-sample gradient of sample ``n`` for ``v_k`` is the backward of row ``n`` of ``v_k``.
    """

    name = "loss"

    def per_sample(self, z: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The m per-sample losses, shape (m,), differentiable in ``z``."""
        raise NotImplementedError

    def count(self, targets: torch.Tensor) -> int:
        """How many samples a batch with these targets holds (its share of N): one per row."""
        return int(targets.shape[0])

    def check(self, outputs: torch.Tensor, targets: torch.Tensor, batch_index: int) -> None:
        """Raise a ValueError naming the problem when targets do not fit the outputs."""
        if outputs.shape[0] != targets.shape[0]:
            raise ValueError(
                f"batch {batch_index}: the model returned {outputs.shape[0]} outputs for {targets.shape[0]} "
                "targets; the model must keep the batch dimension first")

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
            yield from self.exact_grads(z, targets)
        elif fisher == "mc":
            scale = 1.0 / math.sqrt(mc_samples)
            for _ in range(mc_samples):
                y = self.sample(z, targets, generator)
                yield self.empirical_grad(z, y, batch_index) * scale
        else:
            raise ValueError(f"fisher={fisher!r} is not one of {FISHER_KINDS}")

    def empirical_grad(self, z: torch.Tensor, targets: torch.Tensor, batch_index: int) -> torch.Tensor:
        """``d loss / d z`` summed over the batch's samples: one backward through the loss only."""
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            losses = self.per_sample(zz, targets)
            m = self.count(targets)
            if losses.shape != (m,):
                raise ValueError(
                    f"batch {batch_index}: the loss returned shape {tuple(losses.shape)}; a loss callable "
                    f"must return one loss per sample, shape ({m},)")
            losses_seen = losses.detach()
            if not torch.isfinite(losses_seen).all():
                bad = int((~torch.isfinite(losses_seen)).nonzero()[0, 0])
                raise FloatingPointError(
                    f"batch {batch_index}: the loss of sample {bad} in this batch is not finite "
                    f"({float(losses_seen[bad])}); check the inputs and the model's weights for inf/nan")
            (grad,) = torch.autograd.grad(losses.sum(), zz)
        return grad

    def sample(self, z: torch.Tensor, targets: torch.Tensor, generator: Optional[torch.Generator]) -> torch.Tensor:
        """Targets drawn from the model's predictive distribution at outputs ``z`` (shaped like ``targets``)."""
        raise ValueError(f"fisher='mc' needs a loss with a known distribution, not {self.name!r}; "
                         f"use one of {_WITH_DISTRIBUTION}, or fisher='empirical'")

    def exact_grads(self, z: torch.Tensor, targets: torch.Tensor) -> Iterator[torch.Tensor]:
        """The K output gradients whose squared backwards add up to the expectation over the model's labels."""
        raise ValueError(f"fisher='exact' needs a loss with a known distribution, not {self.name!r}; "
                         f"use one of {_WITH_DISTRIBUTION}, or fisher='empirical'")


class CrossEntropy(Loss):
    """Categorical cross-entropy: logits (n, C) or (n, C, d...) (classes on dimension 1), integer labels."""

    def __init__(self, name: str = "cross_entropy"):
        self.name = name

    def per_sample(self, z, targets):
        return _mean_per_sample(F.cross_entropy(z, targets, reduction="none"))

    def check(self, outputs, targets, batch_index):
        super().check(outputs, targets, batch_index)
        where = f"batch {batch_index}"
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
            hint = ""
            if outputs.dim() == 3 and targets.shape == outputs.shape[:2]:
                hint = (": these look like token logits (n, t, V) with labels (n, t), while cross_entropy takes "
                        "the classes on dimension 1 (torch's layout); use loss='causal_lm' (next-token, shifted), "
                        "'masked_lm' or 'token_classification' (not shifted)")
            raise ValueError(
                f"{where}: labels of shape {tuple(targets.shape)} do not fit logits of shape "
                f"{tuple(outputs.shape)}; expected labels of shape {tuple(outputs.shape[:1] + outputs.shape[2:])}"
                + hint)
        if targets.numel():
            lo, hi = int(targets.min()), int(targets.max())
            if lo == IGNORE_INDEX:
                raise ValueError(
                    f"{where}: label {IGNORE_INDEX} marks a position to ignore (Hugging Face's padding label), which "
                    "cross_entropy does not skip: a sample's loss would be undefined. Use loss='causal_lm', "
                    "'masked_lm' or 'token_classification' for token labels (logits (n, t, V)), or drop those samples")
            if lo < 0 or hi >= num_classes:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"{where}: label {bad} is outside the model's output range [0, {num_classes}): "
                    f"the model has {num_classes} outputs; relabel the data to 0..{num_classes - 1} "
                    "or widen the model's last layer")

    def empirical_grad(self, z, targets, batch_index):
        """Logits (n, C) with integer labels take the closed form ``softmax(z_n) - e_(y_n)``, without autograd.

        Where some logit is not finite, the general path names the sample whose loss is not finite.
        """
        if z.dim() == 2 and not targets.is_floating_point() and bool(torch.isfinite(z.sum())):
            grad = torch.softmax(z, dim=1)
            grad[torch.arange(z.shape[0], device=z.device), targets.long()] -= 1.0
            return grad
        return super().empirical_grad(z, targets, batch_index)

    def sample(self, z, targets, generator):
        probs = torch.softmax(z.movedim(1, -1).reshape(-1, z.shape[1]).double(), dim=-1)
        y = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return y.reshape(z.movedim(1, -1).shape[:-1])

    def exact_grads(self, z, targets):
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


class _Elementwise(Loss):
    """A loss averaged over the D output elements of a sample; targets of the output's shape."""

    def check(self, outputs, targets, batch_index):
        super().check(outputs, targets, batch_index)
        if targets.shape != outputs.shape:
            raise ValueError(
                f"batch {batch_index}: {self.name} needs targets of the output's shape {tuple(outputs.shape)}, "
                f"got {tuple(targets.shape)}")

    def element_weight(self, flat: torch.Tensor) -> torch.Tensor:
        """(n, D): the output gradient of element k in the exact Fisher's k-th vector."""
        raise NotImplementedError

    def exact_grads(self, z, targets):
        flat = z.reshape(z.shape[0], -1)
        weight = self.element_weight(flat)
        for k in range(flat.shape[1]):
            v = torch.zeros_like(flat)
            v[:, k] = weight[:, k]
            yield v.reshape(z.shape)


class MSE(_Elementwise):
    name = "mse"

    def per_sample(self, z, targets):
        return _mean_per_sample(F.mse_loss(z, targets, reduction="none"))

    def element_weight(self, flat):
        return torch.full_like(flat, math.sqrt(2.0 / flat.shape[1]))

    def sample(self, z, targets, generator):
        std = math.sqrt(z[0].numel() / 2.0)
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        return z + std * noise


class BCEWithLogits(_Elementwise):
    name = "bce_with_logits"

    def per_sample(self, z, targets):
        return _mean_per_sample(F.binary_cross_entropy_with_logits(z, targets, reduction="none"))

    def element_weight(self, flat):
        s = torch.sigmoid(flat)
        return (s * (1 - s)).sqrt() / flat.shape[1]

    def sample(self, z, targets, generator):
        return torch.bernoulli(torch.sigmoid(z.double()), generator=generator).to(z.dtype)


class CallableLoss(Loss):
    """A user's ``(outputs, targets) -> (n,)`` per-sample losses: empirical Fisher only."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.fn = fn
        self.name = "callable:" + getattr(fn, "__name__", type(fn).__name__)

    def per_sample(self, z, targets):
        return self.fn(z, targets)


SAMPLE_LEVELS = ("sequence", "token")
REDUCTIONS = ("mean", "sum")


class TokenCrossEntropy(Loss):
    """Cross-entropy at the positions of sequences, ``-100`` labels ignored (the heads of language models).

    Shapes: logits z (n, t, V), the classes LAST (Hugging Face's layout); labels y (n, t),
    integers in [0, V) or ``-100`` (:data:`IGNORE_INDEX`) where a position has no label.
    With ``shift`` (next-token prediction) the logits at position t predict the label at t + 1
    (``z[:, :-1]`` against ``y[:, 1:]``), as Hugging Face's ``...ForCausalLM`` models do, so the
    labels are the input ids themselves (padding set to -100).

    Args:
        shift: True for a causal LM; False for a masked LM or token classification.
        reduction: with ``samples="sequence"``, a sequence's loss is the ``"mean"`` over its
            label tokens (L_n of them; what Hugging Face's ``model(**one_sequence).loss`` is) or
            their ``"sum"``.
        samples: ``"sequence"``: one sample is one sequence, F = (1/N_seq) sum_n (grad loss_n)^2.
            ``"token"``: every label token is a sample, F = (1/N_tok) sum_{n,t} (grad loss_nt)^2,
            N_tok the number of label tokens: a different Fisher, computed with one backward
            per label position of the batch (T times the cost of ``"sequence"``).
        name: the name the result's metadata carries (default: from the options).

    A sequence without label tokens has no loss to differentiate under ``samples="sequence"``:
    an error names it. ``fisher="exact"`` sums over the C classes at every label position
    (``v_tc = w_t sqrt(p_tc) (p_t - e_c)`` at position t, w_t = 1/L_n for the mean; the terms
    across positions vanish because each position's score has mean zero under the model): C x T
    backwards per batch, refused above :data:`EXACT_MAX_BACKWARDS`. ``fisher="mc"`` draws every
    label token from the model's predictive distribution at its position; positions labelled
    -100 stay unlabelled.
    """

    def __init__(self, shift: bool, reduction: str = "mean", samples: str = "sequence",
                 name: Optional[str] = None):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r} is not one of {REDUCTIONS}")
        if samples not in SAMPLE_LEVELS:
            raise ValueError(f"samples={samples!r} is not one of {SAMPLE_LEVELS}")
        if samples == "token" and reduction != "mean":
            raise ValueError("reduction applies to samples='sequence' (a sequence's loss over its tokens); with "
                             "samples='token' each token's loss is its own cross-entropy")
        self.shift, self.reduction, self.samples = bool(shift), reduction, samples
        base = "causal_lm" if self.shift else "masked_lm"
        self.family = base
        self.name = name or base + {"mean": "", "sum": "_sum"}[reduction] + ("_token" if samples == "token" else "")

    # ------------------------------------------------------------ alignment
    def _align(self, z: torch.Tensor, y: torch.Tensor):
        """Logits and the labels they predict: (n, t', V), (n, t'); z[:, j] is position j of z either way."""
        return (z[:, :-1], y[:, 1:]) if self.shift else (z, y)

    def _weights(self, ys: torch.Tensor) -> torch.Tensor:
        """(n, t'): each label token's weight in its sample's loss (0 at ignored positions)."""
        mask = (ys != IGNORE_INDEX).to(torch.float64)
        if self.samples == "sequence" and self.reduction == "mean":
            mask = mask / mask.sum(dim=1, keepdim=True).clamp_min(1)
        return mask

    def count(self, targets):
        if self.samples == "token":
            return int((self._align(targets, targets)[1] != IGNORE_INDEX).sum())
        return int(targets.shape[0])

    def per_sample(self, z, targets):
        zs, ys = self._align(z, targets)
        n, t, v = zs.shape
        tok = F.cross_entropy(zs.reshape(n * t, v), ys.reshape(n * t), ignore_index=IGNORE_INDEX,
                              reduction="none").view(n, t)
        if self.samples == "token":
            return tok[ys != IGNORE_INDEX]
        return (tok * self._weights(ys).to(tok.dtype)).sum(dim=1)

    def check(self, outputs, targets, batch_index):
        super().check(outputs, targets, batch_index)
        where = f"batch {batch_index}"
        if outputs.dim() != 3:
            raise ValueError(
                f"{where}: {self.name} needs token logits (n, t, V), got shape {tuple(outputs.shape)}; for one "
                "label per sample use loss='cross_entropy' (or its alias 'sequence_classification')")
        if targets.is_floating_point():
            raise ValueError(f"{where}: {self.name} needs integer token labels (n, t), got {targets.dtype}")
        if targets.shape != outputs.shape[:2]:
            raise ValueError(
                f"{where}: labels of shape {tuple(targets.shape)} do not fit logits of shape {tuple(outputs.shape)}: "
                f"{self.name} needs one label per position, shape {tuple(outputs.shape[:2])} (-100 where there is "
                "none); pad the labels like the input_ids (e.g. with DataCollatorForLanguageModeling or "
                "DataCollatorForTokenClassification)")
        if self.shift and outputs.shape[1] < 2:
            raise ValueError(f"{where}: {self.name} predicts the next token, so sequences need 2 positions or "
                             f"more; got length {outputs.shape[1]}")
        num_classes = outputs.shape[2]
        bad = (targets != IGNORE_INDEX) & ((targets < 0) | (targets >= num_classes))
        if bool(bad.any()):
            i, t = (int(k) for k in bad.nonzero()[0])
            raise ValueError(
                f"{where}: label {int(targets[i, t])} (sample {i}, position {t}) is outside the model's output "
                f"range [0, {num_classes}) and is not {IGNORE_INDEX} (ignored); check the tokenizer's vocabulary "
                "size against the model's")
        if self.samples == "sequence":
            empty = (self._align(targets, targets)[1] != IGNORE_INDEX).sum(dim=1) == 0
            if bool(empty.any()):
                i = int(empty.nonzero()[0, 0])
                after = " after the shift (labels[:, 1:])" if self.shift else ""
                raise ValueError(
                    f"{where}: sample {i} has no label tokens (every label is {IGNORE_INDEX}{after}): as one sample "
                    "of the sequence-level Fisher it has no loss to differentiate. Drop such sequences (empty or "
                    f"all-padding rows), or use loss='{self.family}_token', where each label token is a sample")

    def empirical_grad(self, z, targets, batch_index):
        """Closed form: ``w_nt (softmax(z_nt) - e_(y_nt))`` at every label position, zero elsewhere."""
        zs, ys = self._align(z, targets)
        mask = ys != IGNORE_INDEX
        g = torch.softmax(zs, dim=-1)
        g.scatter_add_(-1, ys.clamp_min(0).unsqueeze(-1), torch.full_like(g[..., :1], -1.0))
        g = torch.where(mask.unsqueeze(-1), g * self._weights(ys).to(g.dtype).unsqueeze(-1), torch.zeros_like(g))
        if not bool(torch.isfinite(g).all()):
            i, t = (int(k) for k in (~torch.isfinite(g)).any(dim=-1).nonzero()[0])
            raise FloatingPointError(
                f"batch {batch_index}: the loss of sample {i} in this batch is not finite (position {t}: its logits "
                "hold inf or nan); check the inputs and the model's weights for inf/nan")
        out = torch.zeros_like(z)
        out[:, :zs.shape[1]] = g
        return out

    def sample(self, z, targets, generator):
        zs, ys = self._align(z, targets)
        mask = ys != IGNORE_INDEX
        probs = torch.softmax(zs[mask].double(), dim=-1)
        drawn = torch.full_like(targets, IGNORE_INDEX)
        if probs.shape[0]:
            self._align(drawn, drawn)[1][mask] = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        return drawn

    def _positions(self, targets: torch.Tensor) -> list:
        """Positions j of z whose logits predict a label somewhere in the batch."""
        ys = self._align(targets, targets)[1]
        return [int(j) for j in (ys != IGNORE_INDEX).any(dim=0).nonzero().flatten()]

    def exact_grads(self, z, targets):
        zs, ys = self._align(z, targets)
        positions = self._positions(targets)
        count = len(positions) * zs.shape[2]
        if count > EXACT_MAX_BACKWARDS:
            raise ValueError(
                f"fisher='exact' with {self.name} takes one backward per label position and class: "
                f"{len(positions)} positions x {zs.shape[2]} classes = {count} backwards for this batch, above the "
                f"limit of {EXACT_MAX_BACKWARDS} (ftdfast.fisher.losses.EXACT_MAX_BACKWARDS); for a language "
                "model's vocabulary (GPT-2: 50,257 x T) the closed form is not sensible. Use fisher='mc' (labels "
                "drawn from the model: one backward per draw), or fisher='empirical'")
        w = self._weights(ys).to(z.dtype)
        p = torch.softmax(zs, dim=-1)
        for j in positions:
            pj, wj = p[:, j], w[:, j]
            for c in range(zs.shape[2]):
                v = torch.zeros_like(z)
                u = pj.clone()
                u[:, c] -= 1
                v[:, j] = u * (pj[:, c].sqrt() * wj).unsqueeze(1)
                yield v

    def output_grads(self, outputs, targets, fisher, **kw):
        """Sequence level: as every loss. Token level: each vector split into one per label position.

        Row n of a position-j slice is the output gradient of token (n, j)'s own loss (a token's
        loss reads only its position's logits), so the primitive squares per-token gradients.
        The exact vectors already hold one position each.
        """
        grads = super().output_grads(outputs, targets, fisher, **kw)
        if self.samples == "sequence" or fisher == "exact":
            yield from grads
            return
        positions = self._positions(targets)
        for v in grads:
            for j in positions:
                u = torch.zeros_like(v)
                u[:, j] = v[:, j]
                yield u


LossArg = Union[str, Loss, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]

# name -> a new Loss; every name here is one meaning (aliases say which loss they are)
LOSSES: dict = {
    "cross_entropy": CrossEntropy,
    "sequence_classification": lambda: CrossEntropy("sequence_classification"),  # HF's ...ForSequenceClassification
    "mse": MSE,
    "bce_with_logits": BCEWithLogits,
    "causal_lm": lambda: TokenCrossEntropy(shift=True),
    "causal_lm_sum": lambda: TokenCrossEntropy(shift=True, reduction="sum"),
    "causal_lm_token": lambda: TokenCrossEntropy(shift=True, samples="token"),
    "masked_lm": lambda: TokenCrossEntropy(shift=False),
    "masked_lm_sum": lambda: TokenCrossEntropy(shift=False, reduction="sum"),
    "masked_lm_token": lambda: TokenCrossEntropy(shift=False, samples="token"),
    "token_classification": lambda: TokenCrossEntropy(shift=False, name="token_classification"),  # = masked_lm
}
_WITH_DISTRIBUTION = sorted(LOSSES)


def resolve_loss(loss: LossArg) -> Loss:
    """Turn the ``loss`` argument of :func:`fisher_diagonal` into a :class:`Loss`."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is not one of {sorted(LOSSES)}; or pass a callable "
                             "(outputs, targets) -> per-sample losses of shape (n,)")
        return LOSSES[loss]()
    if callable(loss):
        return CallableLoss(loss)
    raise TypeError(f"loss must be a name, a Loss or a callable, got {type(loss).__name__}")
