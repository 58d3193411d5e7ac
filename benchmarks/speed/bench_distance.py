"""The distance ops on ResNet-18-sized Fisher diagonals (11.2M entries) against a plain ``torch.sum``.

    .venv/bin/python -m benchmarks.speed.bench_distance [--repeat 7] [--dtype float32|float64] [--rows 4]

- ``fisher_distance(f_a, f_b)`` on two lists shaped like ResNet-18's parameters; the baseline is
  ``torch.sum`` over the same tensors (each of the two lists, tensor by tensor: one read of every
  entry, the least any distance can do). The op reads both lists once (traces, sign checks and
  the Hellinger inner product), and a second time only for close Fishers (d^2 < 1e-2), so ``<= 2x``
  means it runs at memory-bandwidth speed.
- ``fisher_distance_matrix(rows, cols)`` on R x P and R x P flattened diagonals; the baseline is
  ``torch.sum`` of both matrices. The op reads both matrices once (square roots, sums and all R x C
  inner products, block by block), plus one read of a pair's two rows for each close pair.

Every op is first checked against its ``*_ref`` (float64), then the op and its baseline are timed in
interleaved rounds; the medians and their ratio are printed (ratios from the same run: the machine is
shared).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from ftdfast.native import _ext, ops, reference

from . import models as M


def resnet18_lists(dtype: torch.dtype, seed: int = 0):
    model, _, _ = M.get("resnet18").build()
    g = torch.Generator().manual_seed(seed)
    shapes = [p.shape for p in model.parameters()]
    a = [torch.rand(s, generator=g, dtype=dtype) for s in shapes]
    b = [torch.rand(s, generator=g, dtype=dtype) for s in shapes]
    return a, b


def timed(items, repeat):
    runs = {k: [] for k in items}
    for fn in items.values():
        fn()
    for r in range(repeat):
        for k in (list(items) if r % 2 == 0 else list(items)[::-1]):
            t0 = time.perf_counter()
            items[k]()
            runs[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1e3 for k, v in runs.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed.bench_distance", description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--rows", type=int, default=4, help="R for the matrix op (R x R distances)")
    args = p.parse_args(argv)
    dtype = getattr(torch, args.dtype)
    a, b = resnet18_lists(dtype)
    P = sum(t.numel() for t in a)

    got = float(ops.fisher_distance(a, b))
    want = float(reference.fisher_distance_ref([t.double() for t in a], [t.double() for t in b]))
    assert abs(got - want) <= 1e-6 * max(want, 1e-12) + 1e-7, (got, want)
    rows = torch.stack([torch.cat([t.flatten() for t in a])] * args.rows) * torch.arange(
        1, args.rows + 1, dtype=dtype)[:, None]
    cols = torch.stack([torch.cat([t.flatten() for t in b])] * args.rows)
    mat = ops.fisher_distance_matrix(rows, cols)
    mat_ref = reference.fisher_distance_matrix_ref(rows.double(), cols.double())
    assert torch.allclose(mat.double(), mat_ref, rtol=1e-5, atol=1e-6), (mat, mat_ref)

    t = timed({"fisher_distance": lambda: ops.fisher_distance(a, b),
               "torch.sum (lists)": lambda: [x.sum() for x in a] + [x.sum() for x in b],
               "fisher_distance_matrix": lambda: ops.fisher_distance_matrix(rows, cols),
               "torch.sum (matrices)": lambda: (rows.sum(), cols.sum())}, args.repeat)
    print(f"# {P / 1e6:.1f}M entries per Fisher ({len(a)} tensors), {args.dtype}, native={_ext.HAS_NATIVE}, "
          f"{torch.get_num_threads()} threads; check vs *_ref: ok (d = {got:.6f})")
    print(f"{'op':<24} {'median ms':>10} {'x torch.sum':>12}  target")
    for op, base in (("fisher_distance", "torch.sum (lists)"), ("fisher_distance_matrix", "torch.sum (matrices)")):
        print(f"{op:<24} {t[op]:10.2f} {t[op] / t[base]:12.2f}  <= 2.0")
        print(f"{'  ' + base:<24} {t[base]:10.2f} {1.0:12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
