"""The CUDA kernels of ftdfast's native ops on a GPU: accuracy, speed, and fisher_distance bandwidth.

Run from the repository root (part of benchmarks/gpu_check.sh)::

    python -m benchmarks.gpu_ops_check                 # accuracy of every op + timings of a few layers
    python -m benchmarks.gpu_ops_check --bandwidth     # fisher_distance on ResNet-18-sized lists vs a copy
    python -m benchmarks.gpu_ops_check --smoke         # each kernel once on small inputs (for compute-sanitizer)
    python -m benchmarks.gpu_ops_check --first-use     # each ftdfast.native.ops function once: its self-check must pass

Accuracy: every CUDA op on seeded random shapes (odd sizes, t = 1, n = 0, groups,
stride, padding, dilation, Conv1d/2d/3d, multi-tile and sample-split outputs) in
float64 and float32 against its ``ftdfast.native.reference`` function on float64 CPU copies;
per op and dtype the worst ``max |x - ref| / max |ref|`` (absolute error for the
distances, which lie in [0, 1]) is printed and checked against a tolerance.
Timings: the native op and the reference, both on the GPU, on a few real layer shapes.

Bandwidth: ``fisher_distance`` (two passes: reads both lists twice) on two lists shaped
like ResNet-18's parameters (~11M entries each) against a device-to-device copy of as
many bytes as the op reads (both lists, read + write), so
``fraction = copy time / fisher_distance time`` is the achieved bandwidth as a share of
copy bandwidth. Without a GPU (or without the CUDA kernels) it says so and exits 0.
First use: each ``ftdfast.native.ops`` function once per dtype on the GPU, as a user's first
call: the first-use self-check (``ftdfast.native.selfcheck``) must pass and leave the native
kernel in use, with no fallback warning.

Results also go to ``--out`` (JSON). The last line is ``SUMMARY: ...``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

from ftdfast.native import _ext, ops, selfcheck
from ftdfast.native.reference import (
    fisher_distance_matrix_ref,
    fisher_distance_ref,
    sq_grad_sum_conv_ref,
    sq_grad_sum_linear_ref,
)

OPS = torch.ops.ftdfast if _ext.HAS_NATIVE else None
# Where the ops run: "cuda"; "cpu" only for --cpu-dry-run (checks this script with the CPU kernels).
DEVICE = "cuda"
DTYPES = {"f64": torch.float64, "f32": torch.float32}
# Worst allowed error per (op, dtype): the self-check's (relative for the sums of squares, absolute for distances).
TOL = {(op.split("::")[1], dname): selfcheck.TOLERANCE[(op, dtype)]
       for op in selfcheck.OPS for dname, dtype in DTYPES.items()}
CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def rel_err(result: torch.Tensor, expected: torch.Tensor) -> float:
    if expected.numel() == 0:
        return 0.0 if result.shape == expected.shape else float("inf")
    if result.shape != expected.shape:
        return float("inf")
    err = (result.detach().cpu().double() - expected).abs().max().item()
    scale = expected.abs().max().item()
    err = err / scale if scale > 0 else err
    return float("inf") if err != err else err


# ------------------------------------------------------------------- the cases
def linear_cases(rng: random.Random) -> List[tuple]:
    fixed = [(3, 5, 7, 11), (16, 1, 20, 10), (1, 33, 12, 5), (0, 5, 4, 3), (300, 3, 5, 4), (40, 100, 3, 2),
             (3, 9, 515, 259), (4, 64, 256, 192), (2, 17, 1, 1)]
    randoms = [(rng.randint(1, 40), rng.choice([1, 2, 3, 7, 16, 17, 40]), rng.randint(1, 200), rng.randint(1, 200))
               for _ in range(12)]
    return fixed + randoms


def conv_cases(rng: random.Random) -> List[tuple]:
    # (n, C_in, C_out, spatial, kernel, stride, padding, dilation, groups)
    fixed = [
        (3, 4, 6, (11,), (3,), (2,), (1,), (2,), 2),
        (1, 3, 5, (7, 6), (3, 3), (1, 1), (1, 1), (1, 1), 1),
        (0, 3, 5, (7, 6), (3, 3), (1, 1), (1, 1), (1, 1), 1),
        (4, 6, 6, (7, 8), (3, 3), (2, 1), (1, 2), (1, 2), 6),
        (64, 1, 6, (28, 28), (5, 5), (1, 1), (2, 2), (1, 1), 1),
        (2, 130, 300, (5, 5), (3, 3), (1, 1), (1, 1), (1, 1), 1),
        (8, 64, 64, (16, 16), (3, 3), (1, 1), (1, 1), (1, 1), 1),
        (200, 1, 2, (6, 6), (2, 2), (1, 1), (0, 0), (1, 1), 1),
        (3, 4, 8, (5, 6, 7), (2, 3, 2), (1, 1, 1), (1, 1, 1), (1, 1, 1), 2),
        (2, 3, 4, (7, 8, 9), (3, 2, 3), (2, 1, 2), (0, 1, 1), (1, 2, 1), 1),
    ]
    randoms = []
    for _ in range(12):
        d = rng.randint(1, 3)
        groups = rng.choice([1, 1, 2, 4])
        ci, co = groups * rng.randint(1, 6), groups * rng.randint(1, 8)
        kernel = [rng.randint(1, 3) for _ in range(d)]
        stride = [rng.randint(1, 3) for _ in range(d)]
        padding = [rng.randint(0, 2) for _ in range(d)]
        dilation = [rng.randint(1, 2) for _ in range(d)]
        spatial = [rng.randint(max(1, dil * (k - 1) + 1 - 2 * p), dil * (k - 1) + 1 + (9 if d < 3 else 4))
                   for k, p, dil in zip(kernel, padding, dilation)]
        randoms.append((rng.randint(1, 8), ci, co, tuple(spatial), tuple(kernel), tuple(stride), tuple(padding),
                        tuple(dilation), groups))
    return fixed + randoms


def distance_cases() -> List[list]:
    return [[(37,)], [(3, 5), (7,), (2, 3, 4), (1, 1, 1, 5), ()], [(0,), (6, 2), ()],
            [(3, 70001), (5,), (131073,), ()], [(64, 3, 3, 3), (64,), (512, 256, 3, 3), (10, 512), (10,)]]


def matrix_cases() -> List[tuple]:
    return [(1, 1, 9), (3, 5, 17), (2, 3, 1), (0, 4, 8), (4, 2, 70001), (70, 33, 300)]


# -------------------------------------------------------------------- accuracy
def check_accuracy(seed: int) -> Dict[str, dict]:
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    results: Dict[str, dict] = {}

    def record(op: str, dname: str, err: float, case) -> None:
        r = results.setdefault(f"{op} {dname}", {"op": op, "dtype": dname, "max_rel_err": 0.0, "cases": 0,
                                                 "worst_case": None, "tol": TOL[(op, dname)]})
        r["cases"] += 1
        if not err <= r["max_rel_err"]:
            r["max_rel_err"], r["worst_case"] = err, str(case)

    for dname, dtype in DTYPES.items():
        for n, t, i, o in linear_cases(rng):
            a = torch.randn(n, t, i, generator=gen, dtype=torch.float64)
            g = torch.randn(n, t, o, generator=gen, dtype=torch.float64)
            a, g = a.to(dtype), g.to(dtype)
            got = OPS.sq_grad_sum_linear(a.to(DEVICE), g.to(DEVICE))
            record("sq_grad_sum_linear", dname, rel_err(got, sq_grad_sum_linear_ref(a.double(), g.double())),
                   (n, t, i, o))
        for case in conv_cases(rng):
            n, ci, co, spatial, kernel, stride, padding, dilation, groups = case
            x = torch.randn((n, ci) + spatial, generator=gen, dtype=torch.float64)
            ws = [co, ci // groups] + list(kernel)
            y = CONV[len(spatial)](x, torch.randn(ws, dtype=torch.float64, generator=gen), stride=stride,
                                   padding=padding, dilation=dilation, groups=groups)
            gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
            x, gy = x.to(dtype), gy.to(dtype)
            args = (ws, list(stride), list(padding), list(dilation), groups)
            got = OPS.sq_grad_sum_conv(x.to(DEVICE), gy.to(DEVICE), *args)
            record("sq_grad_sum_conv", dname, rel_err(got, sq_grad_sum_conv_ref(x.double(), gy.double(), *args)),
                   case)
        for shapes in distance_cases():
            f_a = [torch.randn(s, generator=gen, dtype=torch.float64).square().to(dtype) for s in shapes]
            f_b = [torch.randn(s, generator=gen, dtype=torch.float64).square().to(dtype) for s in shapes]
            got = OPS.fisher_distance([t.to(DEVICE) for t in f_a], [t.to(DEVICE) for t in f_b])
            want = fisher_distance_ref([t.double() for t in f_a], [t.double() for t in f_b])
            record("fisher_distance", dname, abs(got.item() - want.item()), shapes)
        for r, c, p in matrix_cases():
            rows = torch.randn(r, p, generator=gen, dtype=torch.float64).square().to(dtype)
            cols = torch.randn(c, p, generator=gen, dtype=torch.float64).square().to(dtype)
            got = OPS.fisher_distance_matrix(rows.to(DEVICE), cols.to(DEVICE))
            want = fisher_distance_matrix_ref(rows.double(), cols.double())
            err = (got.cpu().double() - want).abs().max().item() if want.numel() else 0.0
            record("fisher_distance_matrix", dname, err, (r, c, p))
    for r in results.values():
        r["status"] = "ok" if r["max_rel_err"] <= r["tol"] else "FAIL"
    return results


# --------------------------------------------------------------------- timing
def _sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def time_gpu(fn: Callable[[], object], repeat: int = 20, warmup: int = 3) -> float:
    """Median wall time in ms of fn(), synchronised (the distance ops synchronise inside anyway)."""
    for _ in range(warmup):
        fn()
    _sync()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync()
        runs.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(runs)


def layer_timings() -> Dict[str, dict]:
    """Native CUDA op vs the pure-PyTorch reference, both on the GPU, float32, on real layer shapes."""
    torch.manual_seed(0)
    dev = DEVICE
    out: Dict[str, dict] = {}

    def conv(name, n, ci, co, hw, k, stride, pad):
        x = torch.randn(n, ci, hw, hw, device=dev)
        ho = (hw + 2 * pad - k) // stride + 1
        gy = torch.randn(n, co, ho, ho, device=dev)
        args = ([co, ci, k, k], [stride, stride], [pad, pad], [1, 1], 1)
        out[name] = {"native_ms": time_gpu(lambda: OPS.sq_grad_sum_conv(x, gy, *args)),
                     "ref_ms": time_gpu(lambda: sq_grad_sum_conv_ref(x, gy, *args))}

    def linear(name, n, t, i, o):
        a, g = torch.randn(n, t, i, device=dev), torch.randn(n, t, o, device=dev)
        out[name] = {"native_ms": time_gpu(lambda: OPS.sq_grad_sum_linear(a, g)),
                     "ref_ms": time_gpu(lambda: sq_grad_sum_linear_ref(a, g))}

    conv("conv resnet18 stem 3->64 32x32 n64", 64, 3, 64, 32, 3, 1, 1)
    conv("conv resnet18 layer1 64->64 32x32 n64", 64, 64, 64, 32, 3, 1, 1)
    conv("conv resnet18 layer4 512->512 4x4 n64", 64, 512, 512, 4, 3, 1, 1)
    conv("conv lenet 1->6 28x28 k5 n256", 256, 1, 6, 28, 5, 1, 2)
    linear("linear transformer ff 256->1024 t64 n32", 32, 64, 256, 1024)
    linear("linear transformer qkv 256->768 t64 n32", 32, 64, 256, 768)
    linear("linear mlp 784->512 t1 n256", 256, 1, 784, 512)
    for v in out.values():
        v["speedup"] = v["ref_ms"] / v["native_ms"] if v["native_ms"] > 0 else None
    return out


# ---------------------------------------------------------------------- smoke
def smoke() -> Dict[str, dict]:
    """Every kernel configuration once on small inputs (fast under compute-sanitizer), loosely checked."""
    gen = torch.Generator().manual_seed(1)
    out: Dict[str, dict] = {}

    def rec(name: str, got: torch.Tensor, want: torch.Tensor) -> None:
        out[name] = {"max_rel_err": rel_err(got, want)}

    for dname, dtype in DTYPES.items():
        # Tiles 64 / 32 / 16, sample splits, t = 1 (GEMM path) and chunk remainders.
        for n, t, i, o in [(3, 17, 130, 70), (5, 3, 40, 33), (40, 5, 3, 2), (4, 1, 9, 5)]:
            a = torch.randn(n, t, i, generator=gen, dtype=torch.float64).to(dtype)
            g = torch.randn(n, t, o, generator=gen, dtype=torch.float64).to(dtype)
            rec(f"linear {dname} {(n, t, i, o)}", OPS.sq_grad_sum_linear(a.to(DEVICE), g.to(DEVICE)),
                sq_grad_sum_linear_ref(a.double(), g.double()))
        for case in [(3, 4, 6, (11,), (3,), (2,), (1,), (2,), 2), (2, 3, 70, (6, 5), (3, 2), (1, 2), (1, 0), (2, 1), 1),
                     (20, 2, 3, (5, 6), (2, 2), (1, 1), (1, 1), (1, 1), 1),
                     (2, 4, 8, (4, 5, 6), (2, 3, 2), (1, 1, 2), (1, 1, 1), (1, 1, 1), 2)]:
            n, ci, co, spatial, kernel, stride, padding, dilation, groups = case
            x = torch.randn((n, ci) + spatial, generator=gen, dtype=torch.float64)
            ws = [co, ci // groups] + list(kernel)
            y = CONV[len(spatial)](x, torch.zeros(ws, dtype=torch.float64), stride=stride, padding=padding,
                                   dilation=dilation, groups=groups)
            gy = torch.randn(y.shape, generator=gen, dtype=torch.float64)
            args = (ws, list(stride), list(padding), list(dilation), groups)
            rec(f"conv {dname} {case}", OPS.sq_grad_sum_conv(x.to(dtype).to(DEVICE), gy.to(dtype).to(DEVICE), *args),
                sq_grad_sum_conv_ref(x.to(dtype).double(), gy.to(dtype).double(), *args))
        shapes = [(3, 9000), (), (0,), (17,)]
        f_a = [torch.rand(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
        f_b = [torch.rand(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]
        got = OPS.fisher_distance([t.to(DEVICE) for t in f_a], [t.to(DEVICE) for t in f_b])
        rec(f"fisher_distance {dname}", got, fisher_distance_ref([t.double() for t in f_a], [t.double() for t in f_b]))
        rows = torch.rand(3, 500, generator=gen, dtype=torch.float64).to(dtype)
        cols = torch.rand(4, 500, generator=gen, dtype=torch.float64).to(dtype)
        rec(f"fisher_distance_matrix {dname}", OPS.fisher_distance_matrix(rows.to(DEVICE), cols.to(DEVICE)),
            fisher_distance_matrix_ref(rows.double(), cols.double()))
    for v in out.values():
        v["status"] = "ok" if v["max_rel_err"] <= 1e-4 else "FAIL"
    _sync()
    return out


# ------------------------------------------------------------------ first use
def first_use() -> Dict[str, dict]:
    """Each ftdfast.native.ops function once per dtype on DEVICE in a fresh process state; the self-check's verdicts."""
    gen = torch.Generator().manual_seed(2)
    selfcheck.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for dtype in DTYPES.values():
            def rand(*shape):
                return torch.rand(*shape, generator=gen, dtype=torch.float64).to(DEVICE, dtype)
            ops.sq_grad_sum_linear(rand(3, 4, 5), rand(3, 4, 6))
            ops.sq_grad_sum_conv(rand(2, 3, 6, 5), rand(2, 4, 4, 3), [4, 3, 3, 3], [1, 1], [0, 0], [1, 1], 1)
            ops.fisher_distance([rand(4, 3), rand(7)], [rand(4, 3), rand(7)])
            ops.fisher_distance_matrix(rand(2, 9), rand(3, 9))
    _sync()
    out = {f"{r.op.split('::')[1]} {selfcheck.dtype_name(r.dtype)} {r.device}": {
        "status": r.status, "use_native": r.use_native, "what": r.describe(), "ms": r.ms}
        for r in selfcheck.results()}
    fallbacks = [str(w.message) for w in caught if issubclass(w.category, selfcheck.NativeOpFallbackWarning)]
    if fallbacks:
        out["warnings"] = {"status": "FAIL", "use_native": False, "what": " | ".join(fallbacks), "ms": 0.0}
    return out


# ------------------------------------------------------------------ bandwidth
def resnet18_shapes() -> List[tuple]:
    from . import models as M
    return [tuple(p.shape) for p in M.resnet18().parameters()]


def bandwidth(repeat: int) -> Dict[str, dict]:
    shapes = resnet18_shapes()
    numel = sum(torch.Size(s).numel() for s in shapes)
    results: Dict[str, dict] = {}
    for dname, dtype in DTYPES.items():
        gen = torch.Generator(device=DEVICE).manual_seed(0)
        f_a = [torch.rand(s, generator=gen, device=DEVICE, dtype=dtype) for s in shapes]
        f_b = [torch.rand(s, generator=gen, device=DEVICE, dtype=dtype) for s in shapes]
        elem = torch.empty((), dtype=dtype).element_size()
        # A copy that moves the bytes fisher_distance reads: both lists (2 * numel), read and written.
        src = torch.rand(2 * numel, device=DEVICE, dtype=dtype)
        dst = torch.empty_like(src)
        copy_ms = time_gpu(lambda: dst.copy_(src), repeat)
        fd_ms = time_gpu(lambda: OPS.fisher_distance(f_a, f_b), repeat)
        ref_ms = time_gpu(lambda: fisher_distance_ref(f_a, f_b), max(3, repeat // 4))
        d = OPS.fisher_distance(f_a, f_b).item()
        d_ref = fisher_distance_ref([t.double() for t in f_a], [t.double() for t in f_b]).item()
        op_bytes = 4 * numel * elem  # two passes over both lists
        results[dname] = {
            "tensors": len(shapes), "numel_per_list": numel, "fisher_distance_ms": fd_ms, "copy_ms": copy_ms,
            "reference_ms": ref_ms, "fisher_distance_GBps": op_bytes / fd_ms / 1e6,
            "copy_GBps": 4 * numel * elem / copy_ms / 1e6,
            "fraction_of_copy": copy_ms / fd_ms, "one_pass_fraction_of_copy": 0.5 * copy_ms / fd_ms,
            "abs_err_vs_float64_ref": abs(d - d_ref)}
    return results


# ----------------------------------------------------------------------- main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_ops_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--bandwidth", action="store_true", help="time fisher_distance against a device copy instead")
    p.add_argument("--smoke", action="store_true", help="each kernel once on small inputs (for compute-sanitizer)")
    p.add_argument("--first-use", action="store_true",
                   help="each ftdfast.native.ops function once per dtype: the first-use self-check must pass")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--no-timings", action="store_true", help="accuracy only")
    p.add_argument("--out", default=None, help="JSON file for the results")
    p.add_argument("--cpu-dry-run", action="store_true", help=argparse.SUPPRESS)  # the same on the CPU kernels
    args = p.parse_args(argv)

    global DEVICE
    if args.cpu_dry_run:
        DEVICE = "cpu"
        if not _ext.HAS_NATIVE:
            print(f"SUMMARY: FAIL: no native extension ({_ext.LOAD_ERROR})")
            return 1
    elif not torch.cuda.is_available():
        print("SUMMARY: skipped: no CUDA GPU")
        return 0
    elif not _ext.HAS_CUDA:
        print(f"SUMMARY: FAIL: the extension has no CUDA kernels (HAS_NATIVE={_ext.HAS_NATIVE}, "
              f"load error: {_ext.LOAD_ERROR})")
        return 1
    name = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (dry run)"
    print(f"# {name}, torch {torch.__version__}", flush=True)
    payload: dict = {"device": name, "torch": torch.__version__}
    failed = False
    if args.smoke:
        sm = payload["smoke"] = smoke()
        for name, r in sm.items():
            print(f"{r['status']:<4} {name:<70} max rel err {r['max_rel_err']:.1e}")
        failed = any(r["status"] != "ok" for r in sm.values())
        summary = f"{'FAIL' if failed else 'ok'}: {len(sm)} smoke calls, worst rel err " \
                  f"{max(r['max_rel_err'] for r in sm.values()):.0e}"
    elif args.first_use:
        fu = payload["first_use"] = first_use()
        for name, r in fu.items():
            print(f"{r['status']:<9} {name:<40} native kernel used: {r['use_native']}; {r['what']}, {r['ms']:.1f} ms")
        failed = len(fu) != len(selfcheck.OPS) * len(DTYPES) or any(
            r["status"] != "ok" or not r["use_native"] for r in fu.values())
        bad = [name for name, r in fu.items() if r["status"] != "ok" or not r["use_native"]]
        summary = (f"{'FAIL' if failed else 'ok'}: {len(fu)} first-use self-checks on {DEVICE}"
                   + (f", not ok: {', '.join(bad)}" if bad else "")
                   + (f" (expected {len(selfcheck.OPS) * len(DTYPES)})" if len(fu) != len(selfcheck.OPS) * len(DTYPES)
                      else ""))
    elif args.bandwidth:
        bw = payload["bandwidth"] = bandwidth(args.repeat)
        for dname, r in bw.items():
            print(f"fisher_distance {dname}: {r['tensors']} tensors, {r['numel_per_list'] / 1e6:.2f}M entries per list: "
                  f"{r['fisher_distance_ms'] * 1e3:.0f} us ({r['fisher_distance_GBps']:.0f} GB/s over two passes), "
                  f"copy of the same bytes {r['copy_ms'] * 1e3:.0f} us ({r['copy_GBps']:.0f} GB/s): "
                  f"{r['fraction_of_copy']:.2f} of copy bandwidth; reference {r['reference_ms'] * 1e3:.0f} us; "
                  f"|d - d_ref64| {r['abs_err_vs_float64_ref']:.1e}")
        summary = ", ".join(f"{k} {v['fraction_of_copy']:.2f} of copy bw ({v['fisher_distance_ms'] * 1e3:.0f} us)"
                            for k, v in bw.items())
    else:
        acc = payload["accuracy"] = check_accuracy(args.seed)
        for key, r in acc.items():
            print(f"{r['status']:<4} {key:<28} max rel err {r['max_rel_err']:.2e} (tol {r['tol']:.0e}, "
                  f"{r['cases']} cases; worst {r['worst_case']})")
        failed = any(r["status"] != "ok" for r in acc.values())
        if not args.no_timings:
            lt = payload["timings"] = layer_timings()
            for name, r in lt.items():
                print(f"time {name:<44} native {r['native_ms']:8.3f} ms  reference {r['ref_ms']:8.3f} ms  "
                      f"x{r['speedup']:.1f}")
        worst = {}
        for r in acc.values():
            worst[r["op"]] = max(worst.get(r["op"], 0.0), r["max_rel_err"] / r["tol"])
        summary = ("FAIL " if failed else "ok ") + ", ".join(
            f"{op.replace('sq_grad_sum_', 'sgs_').replace('fisher_distance', 'fd')} "
            f"{max(r['max_rel_err'] for r in acc.values() if r['op'] == op):.0e}" for op in worst)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(payload, f, indent=2, default=str)
    print(f"SUMMARY: {summary}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
