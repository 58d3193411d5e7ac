"""The LM row: the Fisher of GPT-2 124M against one forward + backward of its mean loss, time and peak memory.

Run from the repository root::

    .venv/bin/python -m benchmarks.speed.lm                        # ~10 min on 2 cores
    .venv/bin/python -m benchmarks.speed.lm --backends native --repeat 5 --check-samples 2

The model: transformers' ``GPT2LMHeadModel(GPT2Config())`` (124M parameters, the GPT-2 small
defaults), random initialization (seeded, nothing downloaded), float32, eval mode. The data:
N = 8 sequences of T = 128 random tokens. One sample is one sequence; its loss is the mean
next-token cross-entropy over its T - 1 predicted tokens (:func:`next_token_loss`).

1. **check** (before any timing): each backend runs on the first ``--check-samples``
   sequences (float32 model) and is compared with the ``"loop"`` backend on a float64
   copy of the model and the same sequences. Per parameter the error is
   ``max |F - F_ref| / max |F_ref|``; the worst parameter and the median over parameters
   are reported. The float64 loop holds the graph of a 124M-parameter model on 128 tokens
   per sequence; 2 sequences by default keep it to a few minutes and a few GB.
2. **time**: the baseline is ``model.zero_grad(); next_token_loss(model(ids), ids).mean().backward()``
   on the N sequences; each backend runs ``fisher_diagonal`` on the same N sequences in one
   batch. Warm-up once, then interleaved rounds (order rotating); the median of ``--repeat``
   runs and the ratio to the baseline.
3. **memory**: each item runs again in a fresh subprocess (``--one ITEM``): build, one warm-up
   run, reset the peak RSS (``/proc/self/clear_refs``), one run, ``peak RSS - RSS before``
   (VmHWM - VmRSS), glibc told to ``mmap`` blocks of 64 KiB and more so that freed tensors
   leave the RSS (as in :mod:`benchmarks.speed.compare`). torch's CPU allocations are not seen by
   ``tracemalloc``; the RSS is what the process holds. The ratio is backend delta / baseline delta.

Results go to ``--out`` (JSON, default ``benchmarks/speed/lm.json``); a table is printed last.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import statistics
import sys
import time
import warnings
from typing import Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

import ftdfast
from ftdfast.native import _ext

from .compare import _loadavg, _proc_status, _reset_peak, machine, max_rel_error, run_one, time_items, write_json

BASELINE = "f+b"
N, T = 8, 128


class CausalLM(nn.Module):
    """GPT-2 124M (``GPT2Config()`` defaults, random init) whose forward returns the logits (n, t, V)."""

    def __init__(self):
        super().__init__()
        from transformers import GPT2Config, GPT2LMHeadModel
        self.lm = GPT2LMHeadModel(GPT2Config())

    def forward(self, ids):
        return self.lm(input_ids=ids).logits


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Per sequence (n,): the mean cross-entropy of tokens 1..T-1 given the ones before."""
    return F.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none").mean(dim=1)


def build(seed: int = 0):
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = CausalLM().eval()
    ids = torch.randint(0, model.lm.config.vocab_size, (N, T), generator=torch.Generator().manual_seed(seed + 1))
    return model, ids


def plain_step(model: nn.Module, ids: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    next_token_loss(model(ids), ids).mean().backward()


def fisher(model: nn.Module, ids: torch.Tensor, backend: str, dtype=torch.float64):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ftdfast.fisher_diagonal(model, (ids, ids), loss=next_token_loss, backend=backend,
                                       batch_size=len(ids), progress=False, dtype=dtype)


# item -> (backend, accumulation dtype); "native32" accumulates in float32, the dtype f+b's gradients have
ITEMS = {"rules": ("rules", torch.float64), "native": ("native", torch.float64),
         "native32": ("native", torch.float32)}


def work(item: str, model, ids):
    if item == BASELINE:
        return lambda: plain_step(model, ids)
    backend, dtype = ITEMS[item]
    return lambda: fisher(model, ids, backend, dtype)


def check(model, ids, items: List[str], k: int, log) -> Dict[str, dict]:
    import copy
    t0 = time.perf_counter()
    m64 = copy.deepcopy(model).double().eval()
    reference = fisher(m64, ids[:k], "loop")
    del m64
    gc.collect()
    log(f"float64 loop reference on {k} sequences: {time.perf_counter() - t0:.0f} s")
    out = {}
    for item in items:
        backend, dtype = ITEMS[item]
        result = fisher(model, ids[:k], backend, dtype)
        worst, where = max_rel_error(result, reference)
        per_param = []
        for name, ref in reference.items():
            scale = float(ref.abs().max())
            per_param.append(float((result[name].double() - ref).abs().max()) / scale if scale > 0 else 0.0)
        out[item] = {"max_rel_err": worst, "worst_param": where, "median_param_rel_err": statistics.median(per_param),
                     "samples": k}
        log(f"  check {item:<8} worst {worst:.2e} ({where}), median over parameters {out[item]['median_param_rel_err']:.2e}")
    return out


def measure_one(item: str) -> dict:
    model, ids = build()
    fn = work(item, model, ids)
    fn()  # warm-up: pages in library code, creates oneDNN/MKL primitives for these shapes
    model.zero_grad(set_to_none=True)
    gc.collect()
    if not _reset_peak():
        return {"error": "cannot reset the peak RSS (/proc/self/clear_refs)"}
    base = _proc_status()["VmRSS"]
    t0 = time.perf_counter()
    fn()
    seconds = time.perf_counter() - t0
    peak = _proc_status()["VmHWM"]
    return {"item": item, "method": "clear_refs", "base_mb": base / 1024, "peak_mb": peak / 1024,
            "delta_mb": max(0, peak - base) / 1024, "seconds": seconds}


def measure_in_subprocess(item: str, timeout: float = 900) -> dict:
    return run_one("benchmarks.speed.lm", [item], timeout)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed.lm", description=__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="native,native32,rules" if _ext.HAS_NATIVE else "rules")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--check-samples", type=int, default=2)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", default=os.path.join("benchmarks", "speed", "lm.json"))
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print("ONE-RESULT " + json.dumps(measure_one(args.one)), flush=True)
        return 0
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    items = args.backends.split(",")
    model, ids = build()
    payload = {"what": __doc__.split("\n\n")[0], "model": "GPT2LMHeadModel(GPT2Config()), random init, float32",
               "params": sum(p.numel() for p in model.parameters()), "N": N, "T": T,
               "date": datetime.date.today().isoformat(), "torch": torch.__version__, "ftdfast": ftdfast.__version__,
               "machine": machine(), "threads": torch.get_num_threads(), "loadavg_before": _loadavg()}
    payload["check"] = check(model, ids, items, args.check_samples, log)
    times = time_items({name: work(name, model, ids) for name in [BASELINE] + items}, args.repeat, log)
    base = times[BASELINE]["median_ms"]
    for name, t in times.items():
        t["ratio"] = t["median_ms"] / base
    payload["time"] = times
    if not args.no_memory:
        mem = {name: measure_in_subprocess(name) for name in [BASELINE] + items}
        if "delta_mb" in mem[BASELINE]:
            for name, m in mem.items():
                if "delta_mb" in m:
                    m["ratio"] = m["delta_mb"] / mem[BASELINE]["delta_mb"]
        payload["memory"] = mem
    payload["loadavg_after"] = _loadavg()
    write_json(args.out, payload)
    log(f"{'item':<9} {'time ms':>9} {'x f+b':>6} {'mem MB':>8} {'x f+b':>6}")
    for name in [BASELINE] + items:
        m = payload.get("memory", {}).get(name, {})
        log(f"{name:<9} {times[name]['median_ms']:9.0f} {times[name]['ratio']:6.2f} "
            f"{m.get('delta_mb', float('nan')):8.0f} {m.get('ratio', float('nan')):6.2f}")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
