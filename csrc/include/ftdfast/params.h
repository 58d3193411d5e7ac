// Problem sizes for each ftdfast kernel, plus the device-independent
// validation that produces them. Index letters: n sample, t position,
// i in (features), o out (features).
#pragma once

#include <cstdint>

#include <ATen/core/Tensor.h>

#include "ftdfast/checks.h"

namespace ftdfast {

// sq_grad_sum_linear: a (n, t, i), g (n, t, o) -> S (o, i).
struct SqGradSumLinearParams {
  int64_t n;  // samples
  int64_t t;  // positions per sample (1 for a plain MLP input)
  int64_t i;  // in features
  int64_t o;  // out features

  // True when the result is all zeros (or empty) without any work.
  bool trivial() const { return n == 0 || t == 0 || i == 0 || o == 0; }
};

// Validates a and g for sq_grad_sum_linear (shape, dtype, same device) and
// returns the sizes. Device-type checks are left to each kernel.
inline SqGradSumLinearParams make_sq_grad_sum_linear_params(
    const at::Tensor& a, const at::Tensor& g) {
  FTDFAST_CHECK_DIM(a, "a (n, t, i)", 3);
  FTDFAST_CHECK_DIM(g, "g (n, t, o)", 3);
  FTDFAST_CHECK_SIZE_MATCH(a, "a", g, "g", 0, "n (samples)");
  FTDFAST_CHECK_SIZE_MATCH(a, "a", g, "g", 1, "t (positions)");
  FTDFAST_CHECK_FLOATING(a, "a");
  FTDFAST_CHECK_FLOATING(g, "g");
  FTDFAST_CHECK_SAME_DTYPE(a, "a", g, "g");
  FTDFAST_CHECK_SAME_DEVICE(a, "a", g, "g");
  return {a.size(0), a.size(1), a.size(2), g.size(2)};
}

}  // namespace ftdfast
