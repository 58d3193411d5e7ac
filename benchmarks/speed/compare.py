"""Compare the Fisher backends on the five benchmark models: correctness, time and peak memory.

Run from the repository root::

    .venv/bin/python -m benchmarks.speed.compare                       # the default run (~6 min, 2 cores)
    .venv/bin/python -m benchmarks.speed.compare --models mlp,lenet --backends rules,loop --repeat 5
    .venv/bin/python -m benchmarks.speed.compare --one resnet18 rules  # one memory measurement (internal)
    python -m benchmarks.speed.compare --device cuda --no-memory       # on a GPU (memory is measured on CPU only)

For each model, in this order:

1. **check**: every backend is run on the first ``--check-samples`` samples (float32
   model) and compared with the reference, the ``"loop"`` backend on a float64 copy of
   the model and the same samples. The error of a parameter is
   ``max |F - F_ref| / max |F_ref|``; the check passes when the worst parameter is
   within ``--rtol`` (2e-3). ``"legacy"`` computes a different quantity (the square of
   the batch-mean gradient) and is not checked.
2. **time**: the baseline is one plain forward + backward of the mean cross-entropy
   loss on the full batch (``model.zero_grad(); loss.backward()``). Each backend runs
   ``fisher_diagonal`` on the same full batch (``batch_size=N``, one batch). Everything
   is warmed up once, then the baseline and the backends are timed in interleaved
   rounds (the order rotates every round); the median of ``--repeat`` runs is reported
   with the ratio backend / baseline. An item whose warm-up took over 20 s is timed once.
3. **memory**: each of them runs again in a fresh subprocess (``--one MODEL BACKEND``)
   that builds the model and data, runs the work once as a warm-up, resets the peak RSS
   (``/proc/self/clear_refs``), runs the work once on the full batch and reports
   ``peak RSS - RSS before`` (so lazily paged-in library code and primitive caches are
   not counted). glibc is told to ``mmap`` every block of 64 KiB or more
   (``MALLOC_MMAP_THRESHOLD_``), so freed tensors go back to the OS and the RSS follows
   the live tensors. Where the peak cannot be reset, the coarser ``ru_maxrss`` delta
   is used (the JSON says which; it can hide the work's peak under the parent's, which
   Linux carries into ``ru_maxrss`` across fork + exec). The ratio is backend delta / baseline delta.

Backends that would take well over a minute on a model (see ``DEFAULT_SKIPS``) are
left out unless named in ``--backends``. Results go to ``--out`` (JSON, written
atomically after every model); a plain-text table is printed last.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

import ftdfast
from ftdfast.native import _ext

from . import models as M
from . import tools as T

BASELINE = "f+b"
ALL_BACKENDS = ("rules", "native", "native32", "func", "loop", "legacy") + T.TOOLS
# Our rows that are not a backend name: (backend, accumulation dtype). The default accumulates in
# float64; "native32" accumulates in the model's float32, the dtype of the gradients f+b keeps.
VARIANTS = {"native32": ("native", torch.float32)}


def _needs_native(backend: str) -> bool:
    return VARIANTS.get(backend, (backend,))[0] == "native"
# (model, backend) -> why it is left out of the default run (measured on the 2-core CPU, torch 2.14).
DEFAULT_SKIPS: Dict[tuple, str] = {
    ("resnet18", "func"): "~35 s per call (vmap chunks of 1 sample): >2 min with warm-up and repeats",
    ("resnet18", "loop"): "~28 s per call (64 single-sample backwards): >2 min with warm-up and repeats",
}
CHECK_SAMPLES = 16
RTOL = 2e-3
SLOW_WARMUP_S = 20.0

MMAP_THRESHOLD = str(64 * 1024)


# ------------------------------------------------------------------ the work
def plain_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """The baseline: one forward and backward of the mean cross-entropy loss."""
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()


def run_fisher(model, x, y, backend: str):
    backend, dtype = VARIANTS.get(backend, (backend, torch.float64))
    return ftdfast.fisher_diagonal(model, (x, y), loss="cross_entropy", backend=backend,
                                   batch_size=len(y), progress=False, dtype=dtype)


def work_for(backend: str, model, x, y) -> Callable[[], object]:
    """The timed call; an existing tool's one-off set-up (a model copy, hooks) is done here, untimed."""
    if backend == BASELINE:
        return lambda: plain_step(model, x, y)
    if backend in T.TOOLS:
        tool = T.prepare(backend, model)
        return lambda: tool(x, y)
    return lambda: run_fisher(model, x, y, backend)


def _quiet():
    """Silence torch.func's 'performance drop' notes; ftdfast's own warnings are recorded elsewhere."""
    warnings.filterwarnings("ignore", message="There is a performance drop")


# ------------------------------------------------------------------- checks
def reference_fisher(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, k: int = CHECK_SAMPLES):
    """The ``"loop"`` backend in float64, on a float64 copy of ``model`` and the first ``k`` samples."""
    m64 = copy.deepcopy(model).double().eval()
    xk = x[:k].double() if x.is_floating_point() else x[:k]
    return ftdfast.fisher_diagonal(m64, (xk, y[:k]), backend="loop", batch_size=k, progress=False)


def max_rel_error(result, reference) -> tuple:
    """(worst error, parameter): per parameter ``max|F - R| / max|R|`` (absolute where R is all zero)."""
    missing = set(reference) ^ set(result)
    if missing:
        raise AssertionError(f"parameter names differ from the reference: {sorted(missing)}")
    worst, where = 0.0, ""
    for name, ref in reference.items():
        got = result[name].detach().to(torch.float64)
        if got.shape != ref.shape:
            return float("inf"), f"{name} (shape {tuple(got.shape)} != {tuple(ref.shape)})"
        scale = float(ref.abs().max())
        err = float((got - ref).abs().max())
        err = err / scale if scale > 0 else err
        if not err == err:  # nan
            return float("inf"), name + " (nan)"
        if err > worst:
            worst, where = err, name
    return worst, where


def check_backend(model, x, y, backend: str, reference, k: int = CHECK_SAMPLES, rtol: float = RTOL) -> dict:
    """Run ``backend`` on the first ``k`` samples (model's dtype) and compare with ``reference``."""
    if backend == "legacy":
        return {"status": "n/a", "note": "not the same quantity (square of the batch-mean gradient)"}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _quiet()
        if backend in T.TOOLS:
            result = T.prepare(backend, model)(x[:k], y[:k])
        else:
            result = run_fisher(model, x[:k], y[:k], backend)
    err, where = max_rel_error(result, reference)
    notes = sorted({str(w.message) for w in caught if "ftdfast" in str(w.message)})
    out = {"status": "ok" if err <= rtol else "FAIL", "max_rel_err": err, "worst_param": where, "rtol": rtol}
    if notes:
        out["warnings"] = notes
    return out


# ------------------------------------------------------------------- memory
def _proc_status() -> Dict[str, int]:
    found = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                    found[key] = int(value.split()[0])  # kB
    except OSError:
        pass
    return found


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def _maxrss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


def measure_one(model_id: str, backend: str) -> dict:
    """Peak memory of one piece of work, in this (fresh) process. See the module docstring."""
    _quiet()
    bench = M.get(model_id)
    model, x, y = bench.build()
    # Warm up on the full batch: the first call pages in library code and creates oneDNN/MKL
    # primitives for these shapes, which a 4-sample warm-up does not (that showed up as ~300 MB).
    work_for(backend, model, x, y)()
    model.zero_grad(set_to_none=True)
    import gc
    gc.collect()
    before_maxrss = _maxrss_kb()
    if _reset_peak() and "VmRSS" in _proc_status():
        method = "clear_refs"
        status0 = _proc_status()
        base = status0["VmRSS"]
    else:
        method = "ru_maxrss"
        base = before_maxrss
    t0 = time.perf_counter()
    work_for(backend, model, x, y)()
    seconds = time.perf_counter() - t0
    # Not ru_maxrss with clear_refs: across fork + exec the kernel keeps the parent's peak in it.
    peak = _proc_status()["VmHWM"] if method == "clear_refs" else _maxrss_kb()
    extra = {}
    if method == "clear_refs":
        status1 = _proc_status()
        extra = {k + "_growth_mb": (status1.get(k, 0) - status0.get(k, 0)) / 1024 for k in ("RssAnon", "RssFile")}
    return {"model": model_id, "backend": backend, "method": method, "base_mb": base / 1024, **extra,
            "peak_mb": peak / 1024, "delta_mb": max(0, peak - base) / 1024, "seconds": seconds,
            "malloc_mmap_threshold": os.environ.get("MALLOC_MMAP_THRESHOLD_")}


def measure_in_subprocess(model_id: str, backend: str, timeout: float = 600) -> dict:
    return run_one("benchmarks.speed.compare", [model_id, backend], timeout)


def run_one(module: str, args: List[str], timeout: float) -> dict:
    """``python -m module --one ARGS`` in a fresh process (the mmap threshold set, the repository on the path):
    the JSON it prints after ``ONE-RESULT``, or ``{"error": ...}`` with the process's last lines."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_=MMAP_THRESHOLD, PYTHONWARNINGS="ignore")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", module, "--one", *args]
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("ONE-RESULT "):
            return json.loads(line[len("ONE-RESULT "):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    return {"error": f"exit {proc.returncode}: " + " | ".join(tail)}


# ------------------------------------------------------------------- timing
def time_items(items: Dict[str, Callable[[], object]], repeat: int, log) -> Dict[str, dict]:
    """Warm every item up once, then time them in interleaved, rotating rounds; median per item."""
    runs: Dict[str, List[float]] = {k: [] for k in items}
    cpu: Dict[str, List[float]] = {k: [] for k in items}
    wanted: Dict[str, int] = {}
    first: Dict[str, float] = {}
    for name, fn in items.items():
        t0 = time.perf_counter()
        fn()
        warm = first[name] = time.perf_counter() - t0
        wanted[name] = repeat if warm < SLOW_WARMUP_S else 1
        log(f"    warm-up {name:<7} {warm * 1e3:10.1f} ms")
    order = list(items)
    for r in range(max(wanted.values(), default=0)):
        rotated = order[r % len(order):] + order[:r % len(order)]
        for name in rotated:
            if len(runs[name]) >= wanted[name]:
                continue
            c0, t0 = time.process_time(), time.perf_counter()
            items[name]()
            runs[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    # cpu_median_ms: CPU time of this process (all threads), less sensitive than wall time to other
    # load; first_call_ms: the warm-up call (includes one-off costs such as the conv-method probes).
    return {k: {"median_ms": statistics.median(v) * 1e3, "runs_ms": [t * 1e3 for t in v],
                "cpu_median_ms": statistics.median(cpu[k]) * 1e3, "first_call_ms": first[k] * 1e3}
            for k, v in runs.items()}


# -------------------------------------------------------------------- driver
def _loadavg() -> List[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return [float("nan")] * 3


def default_backends() -> List[str]:
    """Ours (native where built) and the existing tools that are installed."""
    return [b for b in ALL_BACKENDS
            if (not _needs_native(b) or _ext.HAS_NATIVE) and (b not in T.TOOLS or T.available(b))]


def write_json(path: str, payload: dict) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform(),
            "ftdfast": ftdfast.__version__, "native": _ext.HAS_NATIVE}


def format_table(rows: List[dict]) -> str:
    header = ("model", "backend", "check", "time ms", "x f+b", "peak MB", "mem x")
    lines = []
    for r in rows:
        chk = r.get("check", {})
        if r["backend"] == BASELINE:
            check = "-"
        elif chk.get("status") in ("ok", "FAIL"):
            check = f"{chk['status']} {chk['max_rel_err']:.1e}"
        elif chk.get("status") == "error":
            check = "ERROR"
        else:
            check = chk.get("status", "-")
        t = r.get("time", {})
        mem = r.get("memory", {})
        lines.append((
            r["model"], r["backend"], check,
            f"{t['median_ms']:.1f}" if "median_ms" in t else ("skipped" if "skipped" in r else "-"),
            f"{r['time_ratio']:.2f}" if r.get("time_ratio") is not None else "-",
            f"{mem['delta_mb']:.1f}" if "delta_mb" in mem else "-",
            f"{r['mem_ratio']:.2f}" if r.get("mem_ratio") is not None else "-",
        ))
    widths = [max(len(h), *(len(str(l[i])) for l in lines)) if lines else len(h) for i, h in enumerate(header)]
    fmt = lambda cells: "  ".join(  # noqa: E731
        str(c).ljust(w) if i < 3 else str(c).rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    out = [fmt(header), fmt(["-" * w for w in widths])]
    out += [fmt(l) for l in lines]
    return "\n".join(out)


def _synced(fn: Callable[[], object]) -> Callable[[], object]:
    """fn, then wait for the GPU: CUDA work is asynchronous and would not be timed otherwise."""
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out
    return run


def run_model(model_id: str, backends: List[str], forced: bool, args, log) -> List[dict]:
    bench = M.get(model_id)
    model, x, y = (t.to(args.device) for t in bench.build())
    load_before = _loadavg()
    rows = {BASELINE: {"model": model_id, "backend": BASELINE}}
    active = []
    for b in backends:
        row = {"model": model_id, "backend": b}
        rows[b] = row
        if not forced and (model_id, b) in DEFAULT_SKIPS:
            row["skipped"] = DEFAULT_SKIPS[(model_id, b)]
            log(f"  skip {b}: {row['skipped']}")
            continue
        active.append(b)

    # 1. correctness against the float64 loop on the first samples
    t0 = time.perf_counter()
    ref = reference_fisher(model, x, y, args.check_samples)
    log(f"  reference (loop, float64, {args.check_samples} samples): {time.perf_counter() - t0:.1f} s")
    for b in list(active):
        try:
            rows[b]["check"] = check_backend(model, x, y, b, ref, args.check_samples, args.rtol)
        except Exception as exc:  # keep going: the table shows it
            rows[b]["check"] = {"status": "error", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            active.remove(b)
        c = rows[b]["check"]
        log(f"  check {b:<7} {c['status']:<5} " + (f"max rel err {c['max_rel_err']:.2e} ({c['worst_param']})"
                                                  if "max_rel_err" in c else c.get("note", c.get("error", ""))))

    # 2. time, interleaved with the baseline
    items = {BASELINE: work_for(BASELINE, model, x, y)}
    items.update({b: work_for(b, model, x, y) for b in active})
    if torch.device(args.device).type == "cuda":
        items = {k: _synced(fn) for k, fn in items.items()}
    timings = time_items(items, args.repeat, log)
    base_ms = timings[BASELINE]["median_ms"]
    load = {"before": load_before, "after": _loadavg()}
    if max(load_before[0], load["after"][0]) > (os.cpu_count() or 1) + 0.5:
        log(f"  note: load average {load} exceeds the {os.cpu_count()} cores: other processes share the CPU")
    for name, t in timings.items():
        t["loadavg_1m"] = load
        rows[name]["time"] = t
        rows[name]["time_ratio"] = t["median_ms"] / base_ms
        log(f"    {name:<7} median {t['median_ms']:10.1f} ms  x{t['median_ms'] / base_ms:.2f}")
    del model, x, y, items

    # 3. peak memory, one fresh subprocess each (host RSS: CPU runs only)
    if not args.no_memory and torch.device(args.device).type == "cpu":
        for name in [BASELINE] + active:
            rows[name]["memory"] = m = measure_in_subprocess(model_id, name)
            log(f"    memory {name:<7} " + (f"{m['delta_mb']:8.1f} MB" if "delta_mb" in m else m["error"]))
        base_mb = rows[BASELINE]["memory"].get("delta_mb")
        for name in [BASELINE] + active:
            d = rows[name]["memory"].get("delta_mb")
            rows[name]["mem_ratio"] = d / base_mb if d is not None and base_mb else None
    return [rows[BASELINE]] + [rows[b] for b in backends]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.speed.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(M.MODEL_IDS), help="comma-separated: " + ",".join(M.MODEL_IDS))
    p.add_argument("--backends", default=None,
                   help="comma-separated, from " + ",".join(ALL_BACKENDS) + " (default: all available, "
                   "minus DEFAULT_SKIPS; naming backends here forces them on every model)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per item (median), after one warm-up")
    p.add_argument("--out", default=os.path.join("benchmarks", "speed", "results.json"))
    p.add_argument("--check-samples", type=int, default=CHECK_SAMPLES)
    p.add_argument("--rtol", type=float, default=RTOL)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--device", default="cpu",
                   help="where the models and data live, e.g. cuda (default cpu); memory is measured on CPU only")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "BACKEND"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.one:
        print("ONE-RESULT " + json.dumps(measure_one(*args.one)), flush=True)
        return 0

    _quiet()
    model_ids = [m for m in args.models.split(",") if m]
    for m in model_ids:
        M.get(m)
    forced = args.backends is not None
    backends = [b for b in args.backends.split(",") if b] if forced else default_backends()
    for b in backends:
        if b not in ALL_BACKENDS:
            p.error(f"unknown backend {b!r}; choose from {', '.join(ALL_BACKENDS)}")
        if _needs_native(b) and not _ext.HAS_NATIVE:
            p.error(f"backend {b!r} needs the native extension, which is not built here ({_ext.LOAD_ERROR})")
        if b in T.TOOLS and not T.available(b):
            p.error(f"{b} is not installed (see benchmarks/speed/tools.py for the install command)")
    if args.repeat < 1:
        p.error("--repeat must be >= 1")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        p.error(f"--device {args.device!r}: {exc}")
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is available")

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    payload = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
               "machine": machine(),
               "settings": {"models": model_ids, "backends": backends, "forced": forced, "repeat": args.repeat,
                            "check_samples": args.check_samples, "rtol": args.rtol, "device": args.device,
                            "memory": not args.no_memory and device.type == "cpu",
                            "baseline": "forward + backward of mean CE, full batch"},
               "results": []}
    for model_id in model_ids:
        bench = M.get(model_id)
        log(f"== {model_id}: {bench.description}, N={bench.n}")
        payload["results"].extend(run_model(model_id, backends, forced, args, log))
        payload["elapsed_s"] = time.perf_counter() - started
        write_json(args.out, payload)
    log(f"total {time.perf_counter() - started:.0f} s; results in {args.out}")
    print(f"# {payload['date']}  {payload['machine']['cpu']} ({payload['machine']['cores']} cores, "
          f"{payload['machine']['torch_threads']} threads), torch {torch.__version__}, native={_ext.HAS_NATIVE}, "
          f"load average {_loadavg()}"
          + (f", device {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""))
    print(format_table(payload["results"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
