"""The CUDA kernels of ftdfast's native ops on a GPU: accuracy, speed, and fisher_distance bandwidth.

Run from the repository root (part of benchmarks/gpu/gpu_check.sh)::

    python -m benchmarks.gpu.gpu_ops_check                 # accuracy of every op + timings of a few layers
    python -m benchmarks.gpu.gpu_ops_check --bandwidth     # fisher_distance on ResNet-18-sized lists vs a copy
    python -m benchmarks.gpu.gpu_ops_check --smoke         # each op on small samples (for compute-sanitizer) (for compute-sanitizer)
    python -m benchmarks.gpu.gpu_ops_check --first-use     # each ftdfast.native.ops function once: its self-check must pass

Accuracy: every CUDA op on its spec's samples and awkward samples
(``ftdfast.native.reference.SPECS``: odd sizes, t = 1, n = 0, groups, stride, padding,
dilation, Conv1d/2d/3d, multi-tile, multi-chunk and sample-split outputs) in float64 and
float32 against its reference on float64 CPU copies; per op and dtype the worst error
(relative to ``max |ref|`` for the sums of squares, absolute for the distances, which lie
in [0, 1]) is printed and checked against the spec's tolerance.
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
import statistics
import sys
import time
import warnings
from typing import Callable, Dict, List

import torch

from ftdfast.native import _ext, ops, selfcheck
from ftdfast.native.reference import SPECS, fisher_distance_ref, sq_grad_sum_conv_ref, sq_grad_sum_linear_ref
from ftdfast.native.spec import OpSpec, moved

OPS = torch.ops.ftdfast if _ext.HAS_NATIVE else None
# Where the ops run: "cuda"; "cpu" only for --cpu-dry-run (checks this script with the CPU kernels).
DEVICE = "cuda"
DTYPES = {"f64": torch.float64, "f32": torch.float32}


def _device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if DEVICE == "cuda" else torch.device(DEVICE)


def _errors(spec: OpSpec, dtype: torch.dtype, gen: torch.Generator, awkward: bool, only=None):
    """(sample id, error) of the native op on DEVICE against the reference on float64 CPU copies, for the
    samples (or awkward samples) whose id is in ``only`` (None: all)."""
    for pid, inputs in spec.sample_inputs(gen, DEVICE, dtype, awkward=awkward):
        if only is not None and pid not in only:
            continue
        want = spec.reference(*moved(inputs, torch.device("cpu"), torch.float64))
        yield pid, spec.error(spec.native(*inputs), want, _device(), dtype)


# -------------------------------------------------------------------- accuracy
def check_accuracy(seed: int) -> Dict[str, dict]:
    """Every op's samples and awkward samples (its spec's, ftdfast.native.reference.SPECS) in each dtype."""
    results: Dict[str, dict] = {}
    for spec in SPECS.values():
        for dname, dtype in DTYPES.items():
            r = results[f"{spec.name} {dname}"] = {"op": spec.name, "dtype": dname, "max_rel_err": 0.0, "cases": 0,
                                                   "worst_case": None, "tol": spec.tolerance[dtype]}
            gen = torch.Generator().manual_seed(seed)
            for awkward in (False, True):
                for pid, err in _errors(spec, dtype, gen, awkward):
                    r["cases"] += 1
                    if not err <= r["max_rel_err"]:
                        r["max_rel_err"], r["worst_case"] = err, pid
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
# Awkward samples the smoke run adds to an op's samples, so that it meets every kernel configuration
# (64 x 64 tiles, sample splits, several chunks) while staying fast under compute-sanitizer.
SMOKE_AWKWARD = {"sq_grad_sum_linear": ("large_oi", "tiny_oi_many_samples"),
                 "sq_grad_sum_conv": ("2d_many_channels", "2d_tiny_weight_many_samples", "3d_basic_g2"),
                 "fisher_distance": ("multi_chunk",)}


def smoke() -> Dict[str, dict]:
    """Every op on its spec's samples and the awkward ones in SMOKE_AWKWARD, per dtype, against its tolerance."""
    out: Dict[str, dict] = {}
    for spec in SPECS.values():
        for dname, dtype in DTYPES.items():
            for awkward in (False, True):
                for pid, err in _errors(spec, dtype, torch.Generator().manual_seed(1), awkward,
                                        SMOKE_AWKWARD.get(spec.name, ()) if awkward else None):
                    out[f"{spec.name} {dname} {pid}"] = {"max_rel_err": err,
                                                         "status": "ok" if err <= spec.tolerance[dtype] else "FAIL"}
    _sync()
    return out


# ------------------------------------------------------------------ first use
def first_use() -> Dict[str, dict]:
    """Each ftdfast.native.ops function once per dtype on DEVICE (on its spec's first sample) in a fresh
    process state; the self-check's verdicts."""
    selfcheck.reset()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for dtype in DTYPES.values():
            for spec in SPECS.values():
                _, inputs = next(spec.sample_inputs(torch.Generator().manual_seed(2), DEVICE, dtype))
                getattr(ops, spec.name)(*inputs)
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
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu.gpu_ops_check", description=__doc__.split("\n\n")[0])
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
        failed = len(fu) != len(SPECS) * len(DTYPES) or any(
            r["status"] != "ok" or not r["use_native"] for r in fu.values())
        bad = [name for name, r in fu.items() if r["status"] != "ok" or not r["use_native"]]
        summary = (f"{'FAIL' if failed else 'ok'}: {len(fu)} first-use self-checks on {DEVICE}"
                   + (f", not ok: {', '.join(bad)}" if bad else "")
                   + (f" (expected {len(SPECS) * len(DTYPES)})" if len(fu) != len(SPECS) * len(DTYPES)
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
