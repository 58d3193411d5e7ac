// Element-wise CPU loops shared by the kernels in csrc/cpu/.
//
// GCC compiles functions marked FTDFAST_TARGET_CLONES for several x86 ISAs and
// picks one at load time (function multiversioning), so the build itself stays
// generic. The helpers live in an unnamed namespace: each kernel file gets its
// own copy, as multiversioned functions must not be merged across files.
#pragma once

#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FTDFAST_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FTDFAST_TARGET_CLONES
#endif

namespace ftdfast::cpu {
namespace {

// acc[r * acc_stride + c] += x[r * cols + c]^2 over a rows x cols tile.
template <typename scalar_t>
FTDFAST_TARGET_CLONES void add_square(scalar_t* __restrict__ acc, int64_t acc_stride,
                                      const scalar_t* __restrict__ x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    scalar_t* __restrict__ acc_row = acc + r * acc_stride;
    const scalar_t* __restrict__ x_row = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      acc_row[c] += x_row[c] * x_row[c];
    }
  }
}

}  // namespace
}  // namespace ftdfast::cpu
