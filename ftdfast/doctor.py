"""``ftdfast doctor``: the build, the devices, the native ops' self-checks and the settings, as text for bug reports."""
from __future__ import annotations

import datetime
import os
import platform
import sys
from typing import List

import torch

from .native import _ext, selfcheck
from .native.reference import SPECS
from ._version import __version__

# Environment variables shown besides FTDFAST_*: they change which devices and how many threads run.
_OTHER_ENV = ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _rows(pairs: List[tuple]) -> List[str]:
    width = max(len(k) for k, _ in pairs)
    return [f"  {k:<{width}}  {v}" for k, v in pairs]


def _versions() -> List[str]:
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return ["versions"] + _rows([
        ("ftdfast", f"{__version__} ({os.path.dirname(os.path.abspath(__file__))})"),
        ("python", sys.version.split()[0] + f" ({sys.executable})"),
        ("torch", f"{torch.__version__} (CUDA {torch.version.cuda or 'none: a CPU build'}, cuDNN {cudnn})"),
        ("platform", platform.platform()),
    ])


def _build() -> List[str]:
    if not _ext.HAS_NATIVE:
        pairs = [("native", "not loaded: every op runs the pure-PyTorch reference"),
                 ("load error", _ext.LOAD_ERROR),
                 ("build with", _ext.BUILD_COMMAND)]
    else:
        path = _ext.LIBRARY_PATH
        if path and os.path.exists(path):
            stat = os.stat(path)
            when = datetime.datetime.fromtimestamp(stat.st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
            library = f"{path} ({stat.st_size / 2**20:.1f} MiB, built {when})"
        else:
            library = str(path)
        pairs = [("native", "loaded"),
                 ("library", library),
                 ("Python ABI", "limited API (abi3)" if ".abi3." in os.path.basename(str(path)) else "this Python only"),
                 ("CUDA kernels", "yes" if _ext.HAS_CUDA else
                  "no: built CPU-only (FTDFAST_CUDA=0, a CPU torch or no CUDA toolkit at build time)")]
        pairs.append(("ops", ", ".join(f"{op.split('::')[1]} ({'/'.join(d for d in ('cpu', 'cuda') if _ext.has_kernel(op, d))})"
                                       for op in SPECS)))
    pairs.append(("build flags", "not recorded by setup.py (its output shows them; see setup.py for the FTDFAST_* "
                                 "build options)"))
    return ["native extension ftdfast._C"] + _rows(pairs)


def _devices() -> List[str]:
    capability = torch.backends.cpu.get_cpu_capability()
    pairs = [("cpu", f"{platform.machine()}, {os.cpu_count()} cores, torch uses {torch.get_num_threads()} threads, "
                     f"ATen CPU capability {capability}")]
    if not torch.cuda.is_available():
        why = "torch is a CPU build" if not torch.version.cuda else "torch.cuda.is_available() is False"
        pairs.append(("cuda", f"none ({why})"))
    else:
        for k in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(k)
            pairs.append((f"cuda:{k}", f"{p.name}, sm_{p.major}{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
                                       f"{p.multi_processor_count} SMs"))
    return ["devices"] + _rows(pairs)


def _devices_to_check() -> List[torch.device]:
    devices = [torch.device("cpu")]
    if _ext.HAS_CUDA and torch.cuda.is_available():
        devices += [torch.device("cuda", k) for k in range(torch.cuda.device_count())]
    return devices


def _checks() -> List[str]:
    lines = ["self-check (each native op vs its ftdfast.native.reference on small random problems)"]
    if not _ext.HAS_NATIVE:
        return lines + ["  nothing to check: the native extension is not loaded"]
    cuda_off = selfcheck.env_off(selfcheck.CUDA_NATIVE_ENV)
    for device in _devices_to_check():
        for op in SPECS:
            for dtype in selfcheck.DTYPES:
                where = f"{op.split('::')[1]:<24} {str(device):<7} {selfcheck.dtype_name(dtype):<8}"
                if not _ext.has_kernel(op, device):
                    lines.append(f"  {where} no kernel for {device.type}")
                elif device.type == "cuda" and cuda_off:
                    lines.append(f"  {where} not run: {selfcheck.CUDA_NATIVE_ENV}=0 turns the CUDA kernels off")
                else:
                    r = selfcheck.check_op(op, device, dtype)
                    lines.append(f"  {where} {r.status:<5} {r.describe()}, {r.ms:.1f} ms")
    if selfcheck.env_off(selfcheck.SELFCHECK_ENV):
        lines.append(f"  ({selfcheck.SELFCHECK_ENV}=0: ftdfast.native.ops use the native kernels without this check)")
    return lines


def _environment() -> List[str]:
    names = sorted(k for k in os.environ if k.startswith("FTDFAST_")) + [k for k in _OTHER_ENV if k in os.environ]
    if not names:
        return ["environment", "  (no FTDFAST_* variable set)"]
    return ["environment"] + [f"  {k}={os.environ[k]}" for k in names]


def report() -> str:
    """The whole report, one section per block: versions, native extension, devices, self-check, environment."""
    sections = []
    for section in (_versions, _build, _devices, _checks, _environment):
        try:
            sections.append(section())
        except Exception as exc:  # a report for a bug must not stop at the first thing that is broken
            sections.append([f"{section.__name__.strip('_')}: could not be gathered: {type(exc).__name__}: {exc}"])
    return "\n\n".join("\n".join(s) for s in sections) + "\n"
