#!/usr/bin/env bash
# Builds and runs the CUDA-kernel emulator check (no GPU needed): the kernels
# of csrc/cuda/*.cu run on CPU threads against naive float64 references.
# Needs g++ with C++20 and the CUDA headers ($CUDA_HOME/include, default
# /usr/local/cuda). Run from anywhere; exit status 0 when every check passes.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cuda="${CUDA_HOME:-/usr/local/cuda}"
out="${TMPDIR:-/tmp}/ftdfast_cuda_emu"
mkdir -p "$out"
flags=(-std=c++20 -O1 -pthread -Wall -Wno-unknown-pragmas -I"$root/csrc/include" -I"$cuda/include")
for src in emu_sq_grad_sum emu_fisher_distance emu_check; do
  g++ "${flags[@]}" -c "$here/$src.cpp" -o "$out/$src.o" &
done
wait
g++ -pthread "$out"/emu_sq_grad_sum.o "$out"/emu_fisher_distance.o "$out"/emu_check.o -o "$out/emu_check"
"$out/emu_check"
