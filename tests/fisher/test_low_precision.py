"""float16 / bfloat16 models: squares and per-batch sums are formed in float32, never in 16 bits.

Reference: the float64 per-sample loop on the same weights and inputs, rounded to the
16-bit dtype first, so that only the 16-bit computation differs. What remains is the
16-bit forward and backward's own rounding (activations and output gradients); the
tolerances below are per dtype and were measured with ``benchmarks/evidence/lowprec_error.py``
(see docs/precision.md): bfloat16 keeps 8 bits (unit roundoff 3.9e-3), float16 11 bits
(4.9e-4). Models use smooth activations: a ReLU whose input is rounded across 0 changes
which entries are zero in the model's own 16-bit gradient (the loop sees that too).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import ftdfast
from ftdfast.native import _ext

# dtype -> (median, 99th percentile) of |F - F_ref| / F_ref over the reference's non-zero entries
TOLERANCE = {torch.bfloat16: (1e-2, 1e-1), torch.float16: (2e-3, 3e-2)}
# batch 1 against batch 8: float32 rounding of the per-batch sums only
BATCH_RTOL = 2e-5
BACKENDS = ["rules", "func", "loop"] + (["native"] if _ext.HAS_NATIVE else [])
DTYPES = [torch.bfloat16, torch.float16]


class Cnn(nn.Module):
    """Conv (bias, groups, stride), BatchNorm (eval), GroupNorm, GELU/tanh, Linear."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(),
            nn.Conv2d(8, 6, 3, stride=2, groups=2), nn.GroupNorm(2, 6), nn.Tanh())
        self.head = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        return self.head(self.body(x).flatten(1))


class CausalLM(nn.Module):
    """A transformers GPT-2 whose forward returns the logits (n, t, V) only."""

    def __init__(self):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel
        self.lm = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=101, n_positions=32,
                                             bos_token_id=0, eos_token_id=0))

    def forward(self, ids):
        return self.lm(input_ids=ids).logits


def next_token_loss(logits, ids):
    """Per sequence: the mean next-token cross-entropy (n,), in float32."""
    return F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none").mean(dim=1)


def _cnn_data(g):
    return torch.randn(8, 3, 9, 9, generator=g), torch.randint(0, 5, (8,), generator=g)


def _lm_data(g):
    ids = torch.randint(0, 101, (8, 10), generator=g)
    return ids, ids


@dataclass(frozen=True)
class LowPrecisionProblem:
    id: str
    model: Callable[[], nn.Module]
    data: Callable[[torch.Generator], tuple]
    loss: object = "cross_entropy"

    def build(self, dtype):
        """(16-bit model, its float64 twin with the same rounded weights, 16-bit inputs, float64 inputs, y)."""
        torch.manual_seed(0)
        model = self.model()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.running_mean.normal_(0, 0.3)
                    m.running_var.uniform_(0.5, 2.0)
        low = model.to(dtype).eval()
        twin = self.model()
        twin.load_state_dict(low.state_dict())
        twin = twin.double().eval()
        x, y = self.data(torch.Generator().manual_seed(1))
        if x.is_floating_point():
            return low, twin, x.to(dtype), x.to(dtype).double(), y
        return low, twin, x, x, y


PROBLEMS = [
    LowPrecisionProblem("cnn", Cnn, _cnn_data),
    LowPrecisionProblem("gpt2_tiny", CausalLM, _lm_data, next_token_loss),
]


def fisher(model, x, y, loss, **kw):
    return ftdfast.fisher_diagonal(model, (x, y), loss=loss, progress=False, **kw)


def flat(f):
    return torch.cat([v.reshape(-1).double() for v in f.values()])


@pytest.fixture(scope="module")
def reference():
    cache = {}

    def get(problem, dtype):
        key = (problem.id, dtype)
        if key not in cache:
            _, twin, _, x64, y = problem.build(dtype)
            cache[key] = flat(fisher(twin, x64, y, problem.loss, backend="loop"))
        return cache[key]
    return get


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_no_entry_lost_and_error_within_tolerance(problem, dtype, backend, reference):
    model, _, x, _, y = problem.build(dtype)
    got = fisher(model, x, y, problem.loss, backend=backend)
    assert all(v.dtype == torch.float64 for v in got.values())
    want = reference(problem, dtype)
    f = flat(got)
    nonzero = want > 0
    assert nonzero.float().mean() > 0.9
    lost = int((f[nonzero] == 0).sum())
    assert lost == 0, f"{lost} non-zero entries of the float64 reference are 0"
    rel = ((f - want).abs() / want)[nonzero]
    median, p99 = float(rel.median()), float(rel.quantile(0.99))
    tol_median, tol_p99 = TOLERANCE[dtype]
    assert median <= tol_median and p99 <= tol_p99, (median, p99)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "loop"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.id)
def test_batch_size_does_not_change_the_result(problem, dtype, backend):
    model, _, x, _, y = problem.build(dtype)
    one = flat(fisher(model, x, y, problem.loss, backend=backend, batch_size=1))
    eight = flat(fisher(model, x, y, problem.loss, backend=backend, batch_size=8))
    assert float((one > 0).float().mean()) > 0.9  # zeros: embedding rows of ids that never occur
    torch.testing.assert_close(eight, one, rtol=BATCH_RTOL, atol=0.0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_a_16_bit_accumulator_is_refused(dtype):
    model, _, x, _, y = PROBLEMS[0].build(torch.float32)
    with pytest.raises(ValueError, match="pass dtype=torch.float32 or torch.float64"):
        fisher(model, x, y, "cross_entropy", dtype=dtype)


class DataDependent(nn.Module):
    """A forward that branches on a tensor's value (as transformers' attention-mask shortcut does)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x) if bool((x > -10).all()) else -self.fc(x)


def test_func_says_why_it_cannot_run_data_dependent_control_flow():
    model = DataDependent().to(torch.bfloat16).eval()
    x, y = torch.randn(4, 4, dtype=torch.bfloat16), torch.tensor([0, 1, 2, 0])
    with pytest.raises(RuntimeError, match="backend='auto'"):
        fisher(model, x, y, "cross_entropy", backend="func")
    assert fisher(model, x, y, "cross_entropy", backend="rules").trace() > 0
