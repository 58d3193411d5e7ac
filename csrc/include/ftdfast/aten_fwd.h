// Forward declarations of the torch types in the op headers' input checks.
//
// An op header (ftdfast/<op>.h) is included by the CPU kernel and the CUDA
// glue (which include torch) and by the CUDA kernels (nvcc, or the CPU
// emulator of tests/cuda_emu), which must not include torch headers: the
// checks are declared on these incomplete types there and defined, with
// torch, in csrc/cpu/<op>.cpp.
#pragma once

#include <cstdint>

namespace at {
class Tensor;
}  // namespace at

namespace c10 {
template <typename T>
class ArrayRef;  // at::IntArrayRef = ArrayRef<int64_t>, at::TensorList = ArrayRef<at::Tensor>
}  // namespace c10
