"""The CUDA kernels' logic without a GPU: tests/cuda_emu runs csrc/cuda/*.cu on CPU threads.

The emulator (tests/cuda_emu/emu.h) compiles the kernels as host C++ and runs
each block with one thread per CUDA thread (std::barrier for __syncthreads), then
compares every tile configuration, sample split, Conv1d/2d/3d case and the
fisher_distance reductions with naive float64 references. It checks indexing,
bounds, tiling and reduction logic, not GPU timing or the memory model. Skipped
without g++ >= 11 or the CUDA headers.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = os.path.join(HERE, "cuda_emu", "run.sh")
CUDA_HOME = os.environ.get("CUDA_HOME") or "/usr/local/cuda"


def _gxx_major() -> int:
    if shutil.which("g++") is None:
        return 0
    out = subprocess.run(["g++", "-dumpversion"], capture_output=True, text=True).stdout
    match = re.match(r"(\d+)", out.strip())
    return int(match.group(1)) if match else 0


@pytest.mark.skipif(_gxx_major() < 11, reason="needs g++ >= 11 (std::barrier)")
@pytest.mark.skipif(not os.path.isfile(os.path.join(CUDA_HOME, "include", "cuda_runtime.h")),
                    reason=f"no CUDA headers under {CUDA_HOME} (set CUDA_HOME)")
def test_cuda_kernels_on_cpu_emulator(tmp_path):
    env = dict(os.environ, CUDA_HOME=CUDA_HOME, TMPDIR=str(tmp_path))
    result = subprocess.run(["bash", RUN], capture_output=True, text=True, timeout=900, env=env)
    lines = (result.stdout + result.stderr).strip().splitlines()
    failed = [line for line in lines if line.startswith("FAIL")]
    assert result.returncode == 0, "\n".join(failed + lines[-20:])
    assert lines and re.match(r"(\d+) of \1 checks passed", lines[-1]), lines[-5:]
