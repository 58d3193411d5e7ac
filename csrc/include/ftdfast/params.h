// Problem sizes for each ftdfast kernel, plus the device-independent
// validation that produces them. Index letters: n sample, t position,
// i in (features), o out (features).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

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

// sq_grad_sum_conv: input (n, C_in, *spatial), grad_output (n, C_out,
// *spatial_out), weight (C_out, C_in / groups, *kernel) -> S (weight shape).
// Spatial sizes are stored as 3-D with leading 1s (a Conv1d is 1 x 1 x L), so
// kernels need only one code path.
struct SqGradSumConvParams {
  int64_t n;       // samples
  int64_t dims;    // spatial dimensions: 1, 2 or 3
  int64_t c_in;    // input channels
  int64_t c_out;   // output channels
  int64_t groups;  // convolution groups
  std::array<int64_t, 3> in, out, kernel, stride, padding, dilation;
  std::vector<int64_t> weight_shape;

  int64_t cg() const { return c_in / groups; }    // input channels per group
  int64_t og() const { return c_out / groups; }   // output channels per group
  int64_t k() const { return kernel[0] * kernel[1] * kernel[2]; }  // kernel taps
  int64_t ckg() const { return cg() * k(); }      // weight columns (C_in / groups * taps)
  int64_t t() const { return out[0] * out[1] * out[2]; }  // output positions
  int64_t in_numel() const { return in[0] * in[1] * in[2]; }
  bool trivial() const { return n == 0 || c_out == 0 || ckg() == 0 || t() == 0; }
};

// Validates input, grad_output and the convolution arguments for
// sq_grad_sum_conv (shapes, conv arithmetic, dtypes, same device) and returns
// the sizes. Device-type checks are left to each kernel.
inline SqGradSumConvParams make_sq_grad_sum_conv_params(
    const at::Tensor& input, const at::Tensor& grad_output, at::IntArrayRef weight_shape,
    at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  TORCH_CHECK(input.dim() >= 3 && input.dim() <= 5,
              "ftdfast: input (n, C_in, *spatial) must be 3-D, 4-D or 5-D (Conv1d/2d/3d), got a ",
              input.dim(), "-D tensor of shape ", input.sizes());
  const int64_t d = input.dim() - 2;
  FTDFAST_CHECK_DIM(grad_output, "grad_output (n, C_out, *spatial_out)", input.dim());
  TORCH_CHECK(static_cast<int64_t>(weight_shape.size()) == d + 2, "ftdfast: weight_shape must have ",
              d + 2, " entries (C_out, C_in / groups, *kernel) for a ", d, "-D convolution, got ",
              weight_shape);
  TORCH_CHECK(static_cast<int64_t>(stride.size()) == d, "ftdfast: stride must have ", d,
              " entries, got ", stride);
  TORCH_CHECK(static_cast<int64_t>(padding.size()) == d, "ftdfast: padding must have ", d,
              " entries, got ", padding);
  TORCH_CHECK(static_cast<int64_t>(dilation.size()) == d, "ftdfast: dilation must have ", d,
              " entries, got ", dilation);
  TORCH_CHECK(groups > 0, "ftdfast: groups must be positive, got ", groups);
  for (int64_t j = 0; j < d; ++j) {
    TORCH_CHECK(stride[j] > 0, "ftdfast: stride must be positive, got ", stride);
    TORCH_CHECK(padding[j] >= 0, "ftdfast: padding must be non-negative, got ", padding);
    TORCH_CHECK(dilation[j] > 0, "ftdfast: dilation must be positive, got ", dilation);
    TORCH_CHECK(weight_shape[2 + j] > 0, "ftdfast: kernel sizes (weight_shape[2:]) must be positive, got ",
                weight_shape);
  }
  TORCH_CHECK(weight_shape[0] >= 0 && weight_shape[1] >= 0,
              "ftdfast: weight_shape must be non-negative, got ", weight_shape);
  FTDFAST_CHECK_SIZE_MATCH(input, "input", grad_output, "grad_output", 0, "n (samples)");
  TORCH_CHECK(input.size(1) == weight_shape[1] * groups, "ftdfast: input has ", input.size(1),
              " channels but weight_shape ", weight_shape, " with groups = ", groups, " expects ",
              weight_shape[1] * groups, " (C_in / groups = weight_shape[1])");
  TORCH_CHECK(grad_output.size(1) == weight_shape[0], "ftdfast: grad_output has ", grad_output.size(1),
              " channels but weight_shape ", weight_shape, " has C_out = ", weight_shape[0]);
  TORCH_CHECK(weight_shape[0] % groups == 0, "ftdfast: C_out = weight_shape[0] = ", weight_shape[0],
              " must be divisible by groups = ", groups);
  SqGradSumConvParams p{};
  p.n = input.size(0);
  p.dims = d;
  p.c_in = input.size(1);
  p.c_out = weight_shape[0];
  p.groups = groups;
  p.weight_shape = weight_shape.vec();
  for (int64_t j = 0; j < 3; ++j) {
    p.in[j] = p.out[j] = p.kernel[j] = p.stride[j] = p.dilation[j] = 1;
    p.padding[j] = 0;
  }
  for (int64_t j = 0; j < d; ++j) {
    const int64_t q = 3 - d + j;  // leading 1s
    p.in[q] = input.size(2 + j);
    p.kernel[q] = weight_shape[2 + j];
    p.stride[q] = stride[j];
    p.padding[q] = padding[j];
    p.dilation[q] = dilation[j];
    const int64_t span = dilation[j] * (weight_shape[2 + j] - 1) + 1;
    const int64_t padded = input.size(2 + j) + 2 * padding[j];
    TORCH_CHECK(padded >= span, "ftdfast: input spatial dim ", j, " (size ", input.size(2 + j),
                " + 2 * padding ", padding[j], ") is smaller than the dilated kernel (", span,
                "); input shape ", input.sizes(), ", weight_shape ", weight_shape);
    p.out[q] = (padded - span) / stride[j] + 1;
    TORCH_CHECK(grad_output.size(2 + j) == p.out[q], "ftdfast: grad_output spatial dim ", j, " is ",
                grad_output.size(2 + j), " but the convolution of input ", input.sizes(),
                " with weight_shape ", weight_shape, ", stride ", stride, ", padding ", padding,
                ", dilation ", dilation, " gives ", p.out[q], " (grad_output shape ",
                grad_output.sizes(), ")");
  }
  FTDFAST_CHECK_FLOATING(input, "input");
  FTDFAST_CHECK_FLOATING(grad_output, "grad_output");
  FTDFAST_CHECK_SAME_DTYPE(input, "input", grad_output, "grad_output");
  FTDFAST_CHECK_SAME_DEVICE(input, "input", grad_output, "grad_output");
  return p;
}

// fisher_distance: f_a, f_b lists of per-parameter Fisher diagonals, f_a[k]
// and f_b[k] of the same (any) shape.
struct FisherDistanceParams {
  int64_t tensors;  // parameters (list length)
  int64_t numel;    // entries per list, over all tensors
};

// Validates f_a and f_b for fisher_distance (same length, not empty, shapes
// pairwise, one float dtype and one device for all) and returns the sizes.
// Value checks (non-negative, non-zero trace) and device-type checks are left
// to each kernel.
inline FisherDistanceParams make_fisher_distance_params(at::TensorList f_a, at::TensorList f_b) {
  TORCH_CHECK(f_a.size() == f_b.size(),
              "ftdfast: f_a and f_b must have the same length (one tensor per parameter), got ",
              f_a.size(), " and ", f_b.size());
  TORCH_CHECK(!f_a.empty(), "ftdfast: f_a and f_b must not be empty (one tensor per parameter)");
  FisherDistanceParams p{static_cast<int64_t>(f_a.size()), 0};
  for (size_t k = 0; k < f_a.size(); ++k) {
    const std::string a_name = "f_a[" + std::to_string(k) + "]";
    const std::string b_name = "f_b[" + std::to_string(k) + "]";
    FTDFAST_CHECK_FLOATING(f_a[k], a_name);
    FTDFAST_CHECK_FLOATING(f_b[k], b_name);
    FTDFAST_CHECK_SAME_DTYPE(f_a[0], "f_a[0]", f_a[k], a_name);
    FTDFAST_CHECK_SAME_DTYPE(f_a[0], "f_a[0]", f_b[k], b_name);
    FTDFAST_CHECK_SAME_DEVICE(f_a[0], "f_a[0]", f_a[k], a_name);
    FTDFAST_CHECK_SAME_DEVICE(f_a[0], "f_a[0]", f_b[k], b_name);
    TORCH_CHECK(f_a[k].sizes() == f_b[k].sizes(), "ftdfast: ", a_name, " and ", b_name,
                " must have the same shape, got ", f_a[k].sizes(), " and ", f_b[k].sizes());
    p.numel += f_a[k].numel();
  }
  return p;
}

// fisher_distance_matrix: rows (R, P), cols (C, P) -> D (R, C).
struct FisherDistanceMatrixParams {
  int64_t r;  // rows (Fishers on the left)
  int64_t c;  // cols (Fishers on the right)
  int64_t p;  // parameters (entries of one flattened Fisher diagonal)
};

// Validates rows and cols for fisher_distance_matrix (2-D, same P, dtype,
// device) and returns the sizes. Value and device-type checks are left to
// each kernel.
inline FisherDistanceMatrixParams make_fisher_distance_matrix_params(const at::Tensor& rows,
                                                                     const at::Tensor& cols) {
  FTDFAST_CHECK_DIM(rows, "rows (R, P)", 2);
  FTDFAST_CHECK_DIM(cols, "cols (C, P)", 2);
  FTDFAST_CHECK_SIZE_MATCH(rows, "rows", cols, "cols", 1, "P (parameters)");
  FTDFAST_CHECK_FLOATING(rows, "rows");
  FTDFAST_CHECK_FLOATING(cols, "cols");
  FTDFAST_CHECK_SAME_DTYPE(rows, "rows", cols, "cols");
  FTDFAST_CHECK_SAME_DEVICE(rows, "rows", cols, "cols");
  return {rows.size(0), cols.size(0), rows.size(1)};
}

}  // namespace ftdfast
