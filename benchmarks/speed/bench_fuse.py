"""FUSE throughput: K candidates run as one fused network vs one after another (CPU or GPU).

Run from the repository root::

    .venv/bin/python -m benchmarks.speed.bench_fuse                  # 8 candidates, C=16, 3 cells, 32x32, batch 64
    .venv/bin/python -m benchmarks.speed.bench_fuse --quick          # CI-sized: 8x8 inputs, C=8, few repeats
    .venv/bin/python -m benchmarks.speed.bench_fuse --scenario random --size 8 --threads 2
    .venv/bin/python -m benchmarks.speed.bench_fuse --device cuda --out fuse.json    # on a GPU (benchmarks/gpu/gpu_check.sh)
    .venv/bin/python -m pytest benchmarks/speed/bench_fuse.py --benchmark-only     # pytest-benchmark form

Candidates (``--scenario``):

* ``restricted`` (the TA-NAS case): a 4-node baseline genotype is drawn from the full space; the K candidates
  are distinct genotypes of its task-aware restricted space (same wiring, only the baseline's operations);
* ``random``: K genotypes from the full space (3 or 4 nodes, any wiring: two fused groups);
* ``identical``: one genotype, K different initializations.

For each, first a **check**: float64 copies of the candidates, fused vs sequential, training-mode forward
(logits and BatchNorm running statistics) and eval-mode forward, and the gradients of the mixture loss; the
largest relative difference must be below 1e-9. Then the **timing** of the two FUSE steps, each on one batch:
``w`` (train mode: fused or sequential forward, softmax-mixture cross-entropy, backward, Adam step) and
``alpha`` (eval mode, forward under ``no_grad``). Each mode is warmed up, then the modes are timed in
interleaved repeats (the order alternates); the median time per step and the ratio sequential / fused
(the fused throughput gain) are printed, and written as JSON with ``--out``. The line also says what
``batched="auto"`` (FUSE's default) would pick for these shapes on this device.

Device: ``--device`` (default ``cpu``) holds the candidates, the fused network and the data, and the check
runs there too (float64 on CUDA). The header and the JSON name the device (and the GPU's name on CUDA);
``--device cuda`` on a machine without a CUDA GPU stops with an error.

Threads: ``--threads`` (default 1) sets ``torch.set_num_threads``; on a shared 2-core machine one thread
avoids the OpenMP spin-waits that otherwise dominate these small convolutions. On CPU, with one thread the
clock is the process's CPU time (``time.process_time``: time spent waiting for a busy core does not count),
otherwise wall time. On CUDA the clock is wall time (``time.perf_counter``) read after
``torch.cuda.synchronize()``, since kernels run asynchronously.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Dict, List

import torch
import torch.nn.functional as F

from ftdfast.nas import BatchedCandidates, FuseMixture, Network, SearchSpace

SCENARIOS = ("restricted", "random", "identical")


def make_genotypes(scenario: str, k: int, seed: int) -> list:
    if scenario == "restricted":
        base = SearchSpace(node_counts=(4,)).sample(seed)
        space = SearchSpace().restrict_to(base)
        return space.sample_many(k, seed + 1, unique=k <= space.size())
    if scenario == "random":
        return SearchSpace().sample_many(k, seed)
    if scenario == "identical":
        return [SearchSpace(node_counts=(4,)).sample(seed)] * k
    raise ValueError(f"unknown scenario {scenario!r}; choose from {SCENARIOS}")


def make_problem(args, scenario: str, device="cpu"):
    """(fused BatchedCandidates, sequential copy, x, y, genotypes) on ``device``; both copies hold the same
    weights, and weights and data are drawn on CPU (the same values on every device)."""
    gens = make_genotypes(scenario, args.candidates, args.seed)
    torch.manual_seed(args.seed)
    nets = [Network(g, args.channels, args.layers, 10, args.in_channels).to(device) for g in gens]
    fused = BatchedCandidates(nets, batched=True)
    seq = BatchedCandidates(copy.deepcopy(nets), batched=False)
    g = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, args.in_channels, args.size, args.size, generator=g).to(device)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    return fused, seq, x, y, gens


def check(fused: BatchedCandidates, seq: BatchedCandidates, x, y) -> Dict[str, float]:
    """Largest relative differences fused vs sequential in float64 (on ``x``'s device): logits, running stats,
    gradients."""
    f, s = copy.deepcopy(fused).double(), copy.deepcopy(seq).double()
    xd = x.double()
    w = torch.softmax(torch.randn(len(f.nets), generator=torch.Generator().manual_seed(1), dtype=torch.float64), 0)
    w = w.to(x.device)

    def rel(a, b):
        return float(((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).detach())

    out = {}
    f.train(), s.train()
    lf, ls = f(xd), s(xd)
    out["train_logits"] = rel(lf, ls)
    F.cross_entropy(FuseMixture.mix(lf, w), y).backward()
    F.cross_entropy(FuseMixture.mix(ls, w), y).backward()
    out["grads"] = max(rel(a.grad, b.grad) for a, b in zip(f.parameters(), s.parameters())
                       if b.grad is not None and b.grad.abs().max() > 0)
    out["buffers"] = max(rel(a, b) for a, b in zip(f.buffers(), s.buffers()) if a.is_floating_point())
    f.eval(), s.eval()
    with torch.no_grad():
        out["eval_logits"] = rel(f(xd), s(xd))
    return out


def _w_step(model: BatchedCandidates, opt, x, y, p):
    loss = F.cross_entropy(FuseMixture.mix(model(x), p), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def time_modes(fused, seq, x, y, repeats: int, steps: int, clock=time.perf_counter) -> Dict[str, Dict[str, float]]:
    """Median seconds per step (by ``clock``) for each (phase, mode), timed in interleaved repeats."""
    K = len(fused.nets)
    p = torch.full((K,), 1.0 / K, device=x.device)
    models = {"fused": fused, "sequential": seq}
    opts = {m: torch.optim.Adam(models[m].parameters(), lr=1e-3) for m in models}

    def run(phase, mode):
        model = models[mode]
        if phase == "w":
            model.train()
            t = clock()
            for _ in range(steps):
                _w_step(model, opts[mode], x, y, p)
        else:
            model.eval()
            t = clock()
            with torch.no_grad():
                for _ in range(steps):
                    model(x)
        return (clock() - t) / steps

    times = {ph: {m: [] for m in models} for ph in ("w", "alpha")}
    for ph in times:
        for m in models:
            run(ph, m)                       # warm-up
    for r in range(repeats):
        for ph in times:
            for m in (list(models) if r % 2 == 0 else list(models)[::-1]):
                times[ph][m].append(run(ph, m))
    res = {}
    for ph, d in times.items():
        med = {m: statistics.median(v) for m, v in d.items()}
        res[ph] = {"fused_s": med["fused"], "sequential_s": med["sequential"],
                   "ratio": med["sequential"] / med["fused"],
                   "fused_all_s": d["fused"], "sequential_all_s": d["sequential"]}
    return res


def _cuda_clock() -> float:
    """Wall time once the GPU's queued work is done (CUDA kernels run asynchronously)."""
    torch.cuda.synchronize()
    return time.perf_counter()


def main(argv: List[str] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="CI-sized: 1x8x8 inputs, C=8, batch 32, 15 repeats (unless --repeats is given)")
    ap.add_argument("--scenario", default="restricted", help=f"comma-separated from {SCENARIOS}, or 'all'")
    ap.add_argument("--candidates", type=int, default=8)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats (default 9, 15 with --quick)")
    ap.add_argument("--steps", type=int, default=1, help="steps per timed repeat")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: leave torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="where candidates and data live: cpu (default) or cuda[:i]")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        ap.error(f"--device {args.device!r}: {exc}")
    if device.type not in ("cpu", "cuda"):
        ap.error(f"--device {args.device!r}: only cpu and cuda are supported")
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: no CUDA GPU is available (torch.cuda.is_available() is False; "
                 f"torch {torch.__version__}, built with CUDA {torch.version.cuda})")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        ap.error(f"--device {args.device}: only {torch.cuda.device_count()} CUDA device(s)")
    if args.quick:
        args.size, args.channels, args.batch, args.steps, args.in_channels = 8, 8, 32, 1, 1
    if args.repeats is None:
        args.repeats = 15 if args.quick else 9
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        device_name = torch.cuda.get_device_name(device)
        clock, clock_name = _cuda_clock, "wall time (CUDA-synchronized)"
    else:
        device_name = None
        # one thread: the process's CPU time, which waiting for a core on a shared machine does not inflate
        clock, clock_name = ((time.process_time, "CPU time") if torch.get_num_threads() == 1
                             else (time.perf_counter, "wall time"))
    scenarios = SCENARIOS if args.scenario == "all" else tuple(args.scenario.split(","))
    results = {"config": {k: v for k, v in vars(args).items() if k != "out"},
               "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
               "cpu_count": os.cpu_count(), "device": str(device), "device_name": device_name, "scenarios": {}}
    results["clock"] = clock_name
    print(f"bench_fuse: K={args.candidates} C={args.channels} layers={args.layers} input "
          f"{args.in_channels}x{args.size}x{args.size} batch {args.batch}, device {device}"
          + (f" ({device_name})" if device_name else "") + f", {torch.get_num_threads()} thread(s), "
          f"median {clock_name} of {args.repeats} interleaved repeats of {args.steps} step(s)")
    ok = True
    for sc in scenarios:
        fused, seq, x, y, gens = make_problem(args, sc, device)
        errs = check(fused, seq, x, y)
        passed = max(errs.values()) < 1e-9
        ok &= passed
        auto = BatchedCandidates(list(fused.nets), batched="auto").fuses(x)
        print(f"\n[{sc}] fused groups {fused.fused_groups} (fused='auto' would fuse {auto or 'none'}); ops used: "
              f"{sorted({op for g in gens for op in g.ops})}")
        print("  check (max rel. diff, float64): " + ", ".join(f"{k} {v:.1e}" for k, v in errs.items())
              + ("  OK" if passed else "  FAILED"))
        entry = {"genotypes": [g.to_dict() for g in gens], "check": errs, "check_ok": passed, "auto_fuses": auto}
        if passed:
            t = time_modes(fused, seq, x, y, args.repeats, args.steps, clock)
            entry["timing"] = t
            for ph, name in (("w", "weight step (fwd+bwd+Adam)"), ("alpha", "alpha step (eval fwd)")):
                d = t[ph]
                print(f"  {name:28s} sequential {d['sequential_s'] * 1e3:8.1f} ms   fused "
                      f"{d['fused_s'] * 1e3:8.1f} ms   ratio {d['ratio']:.2f}x")
        results["scenarios"][sc] = entry
    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(results, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, args.out)
    return 0 if ok else 1


# ---------------------------------------------------------------------- pytest-benchmark form
try:
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:
    @pytest.mark.parametrize("mode", ["fused", "sequential"])
    def test_fuse_w_step(benchmark, mode):
        torch.set_num_threads(1)
        args = argparse.Namespace(candidates=8, channels=8, layers=3, size=8, in_channels=1, batch=32, seed=0)
        fused, seq, x, y, _ = make_problem(args, "restricted")
        model = fused if mode == "fused" else seq
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        p = torch.full((8,), 1.0 / 8)
        benchmark.group = "fuse_w_step"
        benchmark.pedantic(_w_step, args=(model, opt, x, y, p), rounds=10, iterations=1, warmup_rounds=1)


if __name__ == "__main__":
    sys.exit(main())
