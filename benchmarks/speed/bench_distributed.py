"""Throughput of the data-parallel ``fisher_diagonal``: 1 process against 2 (gloo, CPU).

Run from the repository root (under a minute on a 2-core CPU)::

    .venv/bin/python -m benchmarks.speed.bench_distributed
    .venv/bin/python -m benchmarks.speed.bench_distributed --model vgg --n 1024 --repeat 3

The problem is one of :mod:`benchmarks.speed.models` (default: LeNet-5 on N = 4096 random
1x28x28 inputs, float32 model, float64 accumulation, ``batch_size=256``). One job of 2
processes is spawned (``torch.multiprocessing``, gloo over a FileStore); both ranks
build the same model and data. Rank 0 first computes the single-process Fisher
(``distributed=False``): the reference; the distributed Fisher is then checked against
it (per parameter ``max|F - F_ref| / max|F_ref|`` <= 1e-6: with N/2 a multiple of the
batch size both form the same batches, and only the summation order differs, in
float64 across ranks and in float32 inside a batch where the thread count differs).
Then, ``--repeat`` times and interleaved, so that both see the same load from other
users of the machine:

- 1 process: rank 0 alone, all N samples, with every core as torch threads (rank 1
  waits in a barrier), and again with ``cores // 2`` threads;
- 2 processes: the distributed Fisher, N/2 samples each, ``cores // 2`` threads each,
  including its all-reduce.

The table gives median times, samples/s, the median of the per-repeat speed-ups over
the first row, and
the time of the all-reduce alone (a flat float64 buffer of P + 2 values, as
``fisher_diagonal`` sends).

What to expect here: no gain. Two processes on a 2-core machine share the 2 cores
that one process with 2 threads already uses; the per-sample work is the same, and
each process adds its own overheads and the all-reduce (about a millisecond for
LeNet over loopback). When other work also loads the cores, a 2-thread process can
be much slower than two 1-thread ones (its threads wait for each other at every
parallel region while one of them is descheduled): compare "2 processes" with the
1-thread single process, which has the same threads per process.

What to expect on a multi-GPU node (one process per GPU, NCCL): each rank runs the
forward and backward of N/W samples, so the compute time is T_1 / W. The only
communication is ONE all-reduce of P float64 values (8P bytes) at the end; a ring
all-reduce moves about 2 (W-1)/W * 8P bytes per GPU, so it takes about
``2 (W-1)/W * 8P / bandwidth``. ResNet-18 (P = 11.2 M): 8P = 89.6 MB; with W = 8 on
NVLink at ~300 GB/s that is 2 * 7/8 * 89.6 MB / 300 GB/s ~ 0.5 ms, against seconds to
minutes of forward and backward for a data set (CIFAR-10's 50 000 images at a few
thousand samples/s per GPU: ~10 s / W). So the scaling is near-linear until N/W
becomes so small that per-process start-up (model copy, first batch, the launcher)
dominates; across machines, over 100 Gb/s (~12 GB/s) the same all-reduce takes ~13 ms,
still negligible.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import statistics
import tempfile
import time
import warnings

import torch

import ftdfast
from ftdfast import distributed as D

from . import models as M

CHECK_RTOL = 1e-6


def _problem(model_id: str, n: int):
    return dataclasses.replace(M.get(model_id), n=n).build()


def _run(model, x, y, batch_size: int, **kw):
    return ftdfast.fisher_diagonal(model, (x, y), batch_size=batch_size, progress=False, **kw)


def max_rel_error(result, reference) -> float:
    worst = 0.0
    for name, ref in reference.items():
        scale = float(ref.abs().max())
        err = float((result[name] - ref).abs().max())
        worst = max(worst, err / scale if scale > 0 else err)
    return worst


def _timed(fn) -> float:
    D.barrier_with_timeout()
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _worker(rank: int, world: int, tmp: str, args: dict) -> None:
    warnings.filterwarnings("ignore", message="ftdfast: (no Fisher rule|the Fisher rule for)")
    cores = args["cores"]
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{os.path.join(tmp, 'store')}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=600))
    model, x, y = _problem(args["model"], args["n"])
    bs = args["batch_size"]

    def single(threads=cores):
        torch.set_num_threads(threads)
        if rank == 0:
            return _run(model, x, y, bs, distributed=False)

    def parallel():
        torch.set_num_threads(max(1, cores // world))
        return _run(model, x, y, bs)

    reference, result = single(), parallel()  # also the warm-up of both
    D.barrier_with_timeout()
    if rank == 0:
        err = max_rel_error(result, reference)
        if err > CHECK_RTOL or result.num_samples != reference.num_samples:
            raise AssertionError(f"the distributed Fisher differs from the single-process one: max relative "
                                 f"error {err:.3g} (rtol {CHECK_RTOL}), N={result.num_samples}")
    times = {"single": [], "single1": [], "parallel": []}
    for _ in range(args["repeat"]):
        times["single"].append(_timed(single))
        times["single1"].append(_timed(lambda: single(max(1, cores // world))))
        times["parallel"].append(_timed(parallel))
    buf = torch.zeros(result.numel() + 2, dtype=torch.float64)
    times["allreduce"] = [_timed(lambda: torch.distributed.all_reduce(buf)) for _ in range(5)]
    if rank == 0:
        with open(os.path.join(tmp, "times.json"), "w") as f:
            json.dump({"times": times, "err": err, "P": result.numel()}, f)
    torch.distributed.destroy_process_group()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="lenet", choices=M.MODEL_IDS)
    ap.add_argument("--n", type=int, default=4096, help="number of samples (default 4096)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    world = 2
    job = dict(model=args.model, n=args.n, batch_size=args.batch_size, repeat=args.repeat, cores=cores)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        torch.multiprocessing.spawn(_worker, args=(world, tmp, job), nprocs=world, join=True)
        with open(os.path.join(tmp, "times.json")) as f:
            got = json.load(f)
    t = got["times"]
    t1, t2 = statistics.median(t["single"]), statistics.median(t["parallel"])

    def speedup(key):
        return statistics.median(a / b for a, b in zip(t["single"], t[key]))
    print(f"\n{args.model}: N={args.n}, batch {args.batch_size}, P={got['P']} parameters (all-reduce of "
          f"{8 * (got['P'] + 2) / 1e6:.2f} MB), {cores} cores, torch {torch.__version__}, median of {args.repeat}, "
          f"load average {load:.1f} before / {os.getloadavg()[0]:.1f} after")
    print(f"{'run':<28} {'threads':>7} {'time s':>8} {'samples/s':>10} {'speed-up':>8} {'check':>9}")
    print(f"{'1 process (not distributed)':<28} {cores:>7} {t1:>8.3f} {args.n / t1:>10.0f} {1:>8.2f} {'ref':>9}")
    t11 = statistics.median(t["single1"])
    print(f"{'1 process (not distributed)':<28} {max(1, cores // world):>7} {t11:>8.3f} {args.n / t11:>10.0f} "
          f"{speedup('single1'):>8.2f} {'-':>9}")
    print(f"{'2 processes (distributed)':<28} {max(1, cores // world):>7} {t2:>8.3f} {args.n / t2:>10.0f} "
          f"{speedup('parallel'):>8.2f} {got['err']:>9.1e}")
    print(f"all-reduce alone: {1e3 * statistics.median(t['allreduce']):.2f} ms (gloo, loopback)")
    print(f"On {cores} cores two processes share the cores one process already uses: no gain is expected. "
          "See the module docstring for the multi-GPU scaling.")


if __name__ == "__main__":
    main()
