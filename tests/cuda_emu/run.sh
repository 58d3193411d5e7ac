#!/usr/bin/env bash
# Builds and runs the CUDA-kernel emulator check (no GPU needed): every
# csrc/cuda/*.cu, compiled as host C++ with emu.h in front, runs on CPU threads
# under emu_check.cpp against naive float64 references.
# Needs g++ with C++20 and the CUDA headers ($CUDA_HOME/include, default
# /usr/local/cuda). Run from anywhere; exit status 0 when every check passes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cuda="${CUDA_HOME:-/usr/local/cuda}"
out="${TMPDIR:-/tmp}/ftdfast_cuda_emu"
mkdir -p "$out"
flags=(-std=c++20 -O1 -pthread -Wall -Wno-unknown-pragmas -DFTDFAST_WITH_CUDA -I"$root/csrc/include" -I"$cuda/include")
objects=("$out/emu_check.o")
pids=()
g++ "${flags[@]}" -c "$here/emu_check.cpp" -o "$out/emu_check.o" &
pids+=($!)
for cu in "$root"/csrc/cuda/*.cu; do
  name="$(basename "$cu" .cu)"
  g++ "${flags[@]}" -include "$here/emu.h" -x c++ -c "$cu" -o "$out/kernel_$name.o" &
  pids+=($!)
  objects+=("$out/kernel_$name.o")
done
for pid in "${pids[@]}"; do wait "$pid"; done  # fails on the first failed compile
g++ -pthread "${objects[@]}" -o "$out/emu_check"
"$out/emu_check"
