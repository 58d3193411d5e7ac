"""The error of every Fisher backend on bfloat16 and float16 models against the float64 per-sample loop.

Run from the repository root::

    .venv/bin/python -m benchmarks.evidence.lowprec_error                  # all models (~10 min, 2 cores)
    .venv/bin/python -m benchmarks.evidence.lowprec_error --models gpt2_tiny,cnn --out /tmp/x.json

For each model and 16-bit dtype: the model is built in float32 (seeded), cast to the
dtype (its weights rounded), and a float64 twin gets the same rounded weights; the
inputs are rounded to the dtype too. The reference is the ``"loop"`` backend on the
twin (float64 throughout). Each backend then runs on the 16-bit model, and over the
reference's non-zero entries the script reports

- ``median`` and ``p99``: the median and 99th percentile of ``|F - F_ref| / F_ref``;
- ``zeros``: the share of those entries that came out exactly 0;
- ``batch_rel``: the largest ``|F_1 - F_N| / F_N`` between ``batch_size=1`` and one
  batch of all N samples (what the batch size changes; not for GPT-2 124M, see ``models``);
- ``seconds``: the wall time of the one-batch run.

``"loop"`` here is the per-sample loop on the 16-bit model itself (autograd's 16-bit
gradient of each sample, squared in float64): the error the 16-bit forward and backward
leave in any per-sample gradient. A backend can only match it or beat it (the rules
form each per-sample gradient from the 16-bit activations in float32). A ReLU whose
input is rounded across 0 changes which entries are zero in the model's own 16-bit
gradient; such zeros show in ``"loop"`` too.

Results go to ``--out`` (JSON, default ``benchmarks/evidence/lowprec_error.json``).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

import ftdfast
from ftdfast.native import _ext

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


class CausalLM(nn.Module):
    """A transformers GPT-2 LM head model whose forward returns its logits (n, t, V)."""

    def __init__(self, **config):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel
        self.lm = GPT2LMHeadModel(GPT2Config(**config))

    def forward(self, ids):
        return self.lm(input_ids=ids).logits


def next_token_loss(logits, ids):
    """Per sequence: the mean next-token cross-entropy (n,), computed in float32."""
    return F.cross_entropy(logits[:, :-1].float().transpose(1, 2), ids[:, 1:], reduction="none").mean(dim=1)


def cnn() -> nn.Module:
    """A small CIFAR-sized ConvNet: 3 x (conv, BatchNorm, ReLU), pooling, Linear."""
    layers, c = [], 3
    for width, stride in ((16, 1), (32, 2), (32, 2)):
        layers += [nn.Conv2d(c, width, 3, stride=stride, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        c = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(c * 4, 10))


def _tokens(n: int, t: int, vocab: int):
    def data(g):
        ids = torch.randint(0, vocab, (n, t), generator=g)
        return ids, ids
    return data


def _images(g):
    return torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)


@dataclass(frozen=True)
class Model:
    factory: Callable[[], nn.Module]
    data: Callable[[torch.Generator], tuple]
    loss: object
    what: str
    skip: Tuple[str, ...] = ()  # backends left out (and why, in ``what``)
    batch_check: bool = True  # also run batch_size=1 (what the batch size changes)


MODELS: Dict[str, Model] = {
    "gpt2_tiny": Model(lambda: CausalLM(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=64),
                       _tokens(16, 32, 512), next_token_loss, "GPT-2, 2 layers, d=64, V=512; N=16, T=32"),
    "gpt2_small": Model(lambda: CausalLM(), _tokens(2, 16, 50257), next_token_loss,
                        "GPT-2 124M (GPT2Config() defaults, random init); N=2, T=16. 16-bit matmuls are ~50x "
                        "slower than float32 on a CPU without AVX-512 (BF16): func (vmap over 124M parameters) "
                        "and the batch-size rerun are left out", skip=("func",), batch_check=False),
    "cnn": Model(cnn, _images, "cross_entropy", "3 x (conv, BatchNorm, ReLU) + Linear; N=32, 32x32x3"),
}


def _randomize_stats(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 2.0)


def build(model_id: str, dtype: torch.dtype):
    """(16-bit model, float64 twin with the same rounded weights, 16-bit inputs, float64 inputs, targets)."""
    factory, data = MODELS[model_id].factory, MODELS[model_id].data
    torch.manual_seed(0)
    model = factory()
    _randomize_stats(model)
    low = model.to(dtype).eval()
    twin = factory()
    twin.load_state_dict(low.state_dict())
    twin = twin.double().eval()
    x, y = data(torch.Generator().manual_seed(1))
    if x.is_floating_point():
        x = x.to(dtype)
        return low, twin, x, x.double(), y
    return low, twin, x, x, y


def flat(f) -> torch.Tensor:
    return torch.cat([v.reshape(-1).double() for v in f.values()])


def errors(got: torch.Tensor, want: torch.Tensor) -> dict:
    nonzero = want > 0
    rel = ((got - want).abs() / want)[nonzero]
    return {"median": float(rel.median()), "p99": float(rel.quantile(0.99)),
            "zeros": float((got[nonzero] == 0).double().mean()), "nonzero_entries": int(nonzero.sum())}


def run(model, x, y, loss, backend: str, batch_size: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ftdfast.fisher_diagonal(model, (x, y), loss=loss, backend=backend, batch_size=batch_size,
                                       progress=False)


def measure(model_id: str, dtype_name: str, backends: List[str], log) -> List[dict]:
    dtype = DTYPES[dtype_name]
    spec = MODELS[model_id]
    loss = spec.loss
    low, twin, x, x64, y = build(model_id, dtype)
    n = len(y)
    t0 = time.perf_counter()
    want = flat(run(twin, x64, y, loss, "loop", n))
    log(f"{model_id} {dtype_name}: float64 loop reference in {time.perf_counter() - t0:.1f} s")
    rows = []
    for backend in [b for b in backends if b not in spec.skip]:
        row = {"model": model_id, "dtype": dtype_name, "backend": backend}
        try:
            t0 = time.perf_counter()
            full = flat(run(low, x, y, loss, backend, n))
            row["seconds"] = time.perf_counter() - t0
            row.update(errors(full, want))
            if spec.batch_check:
                one = flat(run(low, x, y, loss, backend, 1))
                row["batch_rel"] = float(((one - full).abs() / full.abs().clamp_min(1e-300))[full > 0].max())
        except Exception as e:  # noqa: BLE001 - reported, not hidden
            row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
        log(f"  {backend:7s} " + (row["error"] if "error" in row else
            f"median {row['median']:.2e}  p99 {row['p99']:.2e}  zeros {100 * row['zeros']:.3f}%  "
            + (f"batch 1 vs {n}: {row['batch_rel']:.1e}  " if "batch_rel" in row else "")
            + f"({row['seconds']:.1f} s)"))
        rows.append(row)
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.evidence.lowprec_error", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--dtypes", default=",".join(DTYPES))
    p.add_argument("--backends", default="rules,native,func,loop" if _ext.HAS_NATIVE else "rules,func,loop")
    p.add_argument("--out", default=os.path.join("benchmarks", "evidence", "lowprec_error.json"))
    args = p.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    rows: List[dict] = []
    for model_id in args.models.split(","):
        for dtype_name in args.dtypes.split(","):
            rows += measure(model_id, dtype_name, args.backends.split(","), log)
    payload = {"what": __doc__.split("\n\n")[0],
               "models": {k: MODELS[k].what for k in args.models.split(",")},
               "date": datetime.date.today().isoformat(), "torch": torch.__version__,
               "ftdfast": ftdfast.__version__, "machine": platform.machine(),
               "threads": torch.get_num_threads(), "rows": rows}
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, args.out)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
