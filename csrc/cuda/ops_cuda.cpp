// CUDA registrations of the ftdfast ops: input checks, device guard, current
// stream, contiguous inputs, dtype dispatch (float32/float64), output and
// workspace allocation, then the raw-pointer launchers of csrc/cuda/*.cu
// (declared in ftdfast/cuda_kernels.h), whose cudaError_t is checked here.
// Schemas: csrc/ftdfast_ops.cpp. The CPU kernels (csrc/cpu/) define the
// semantics; these match them, error messages included.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ftdfast/checks.h"
#include "ftdfast/cuda_kernels.h"
#include "ftdfast/params.h"

namespace ftdfast::cuda {
namespace {

// Raises c10::Error naming the op when a launcher failed.
#define FTDFAST_CUDA_CHECK(expr, op)                                                        \
  do {                                                                                      \
    const cudaError_t ftdfast_err_ = (expr);                                                \
    TORCH_CHECK(ftdfast_err_ == cudaSuccess, "ftdfast: CUDA kernel of ", op, " failed: ",   \
                cudaGetErrorName(ftdfast_err_), ": ", cudaGetErrorString(ftdfast_err_));    \
  } while (0)

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// Sums the split partial planes (splits, *shape) of a sq_grad_sum kernel.
at::Tensor reduce_splits(const at::Tensor& partials, int64_t splits) {
  return splits == 1 ? partials.select(0, 0) : partials.sum(0);
}

// ---------------------------------------------------------- sq_grad_sum_linear
at::Tensor sq_grad_sum_linear_cuda(const at::Tensor& a_in, const at::Tensor& g_in) {
  const auto p = make_sq_grad_sum_linear_params(a_in, g_in);
  FTDFAST_CHECK_DEVICE_TYPE(a_in, "a", at::kCUDA);
  FTDFAST_CHECK_DEVICE_TYPE(g_in, "g", at::kCUDA);
  const c10::cuda::CUDAGuard guard(a_in.device());
  if (p.trivial()) {
    return at::zeros({p.o, p.i}, a_in.options());
  }
  // Detached: the op has no autograd formula.
  const auto a = a_in.detach().contiguous();
  const auto g = g_in.detach().contiguous();
  if (p.t == 1) {
    // One position per sample: S = (g * g)^T (a * a), a single GEMM.
    return at::mm(g.reshape({p.n, p.o}).square().t(), a.reshape({p.n, p.i}).square());
  }
  const SqGradSumPlan plan = plan_sq_grad_sum(p.o, p.i, 1, p.n, sm_count());
  auto partials = at::empty({plan.splits, p.o, p.i}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "ftdfast_sq_grad_sum_linear_cuda", [&] {
    SqGradSumLinearArgs<scalar_t> args{};
    args.a = a.const_data_ptr<scalar_t>();
    args.g = g.const_data_ptr<scalar_t>();
    args.out = partials.data_ptr<scalar_t>();
    args.n = p.n;
    args.t = p.t;
    args.i = p.i;
    args.o = p.o;
    args.plan = plan;
    FTDFAST_CUDA_CHECK(launch_sq_grad_sum_linear(args, at::cuda::getCurrentCUDAStream()),
                       "sq_grad_sum_linear");
  });
  return reduce_splits(partials, plan.splits);
}

// ------------------------------------------------------------ sq_grad_sum_conv
at::Tensor sq_grad_sum_conv_cuda(const at::Tensor& input, const at::Tensor& grad_output,
                                 at::IntArrayRef weight_shape, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = make_sq_grad_sum_conv_params(input, grad_output, weight_shape, stride, padding,
                                              dilation, groups);
  FTDFAST_CHECK_DEVICE_TYPE(input, "input", at::kCUDA);
  FTDFAST_CHECK_DEVICE_TYPE(grad_output, "grad_output", at::kCUDA);
  const c10::cuda::CUDAGuard guard(input.device());
  if (p.trivial()) {
    return at::zeros(weight_shape, input.options());
  }
  // The kernel indexes within one sample in 32-bit integers.
  constexpr int64_t kMax = INT_MAX;
  TORCH_CHECK(p.c_in * p.in_numel() <= kMax && p.c_out * p.t() <= kMax && p.c_out * p.ckg() <= kMax &&
                  p.in[0] + 2 * p.padding[0] + p.kernel[0] * p.dilation[0] <= kMax &&
                  p.in[1] + 2 * p.padding[1] + p.kernel[1] * p.dilation[1] <= kMax &&
                  p.in[2] + 2 * p.padding[2] + p.kernel[2] * p.dilation[2] <= kMax &&
                  p.out[0] * p.stride[0] <= kMax && p.out[1] * p.stride[1] <= kMax &&
                  p.out[2] * p.stride[2] <= kMax,
              "ftdfast: sq_grad_sum_conv on CUDA needs each sample's input (", p.c_in * p.in_numel(),
              " entries), grad_output (", p.c_out * p.t(), ") and weight (", p.c_out * p.ckg(),
              ") to have fewer than 2^31 entries");
  const auto x = input.detach().contiguous();
  const auto gy = grad_output.detach().contiguous();
  const SqGradSumPlan plan = plan_sq_grad_sum(p.og(), p.ckg(), p.groups, p.n, sm_count());
  auto partials = at::empty({plan.splits, p.c_out, p.ckg()}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ftdfast_sq_grad_sum_conv_cuda", [&] {
    SqGradSumConvArgs<scalar_t> args{};
    args.input = x.const_data_ptr<scalar_t>();
    args.grad_output = gy.const_data_ptr<scalar_t>();
    args.out = partials.data_ptr<scalar_t>();
    args.n = p.n;
    args.c_in = static_cast<int>(p.c_in);
    args.c_out = static_cast<int>(p.c_out);
    args.groups = static_cast<int>(p.groups);
    for (int j = 0; j < 3; ++j) {
      args.in[j] = static_cast<int>(p.in[j]);
      args.out_size[j] = static_cast<int>(p.out[j]);
      args.kernel[j] = static_cast<int>(p.kernel[j]);
      args.stride[j] = static_cast<int>(p.stride[j]);
      args.padding[j] = static_cast<int>(p.padding[j]);
      args.dilation[j] = static_cast<int>(p.dilation[j]);
    }
    args.plan = plan;
    FTDFAST_CUDA_CHECK(launch_sq_grad_sum_conv(args, at::cuda::getCurrentCUDAStream()), "sq_grad_sum_conv");
  });
  return reduce_splits(partials, plan.splits).view(weight_shape);
}

// ------------------------------------------------------------- fisher_distance
// min(x) as the CPU kernels see it: NaNs ignored (+inf when x is all NaN).
// Only on the error path (it syncs).
double nan_ignoring_min(const at::Tensor& x) {
  const auto inf = at::scalar_tensor(std::numeric_limits<double>::infinity(), x.options());
  return at::where(x.isnan(), inf, x).min().to(at::kDouble).item<double>();
}

// The CPU kernel's value checks, in its order, on the result read back:
// per list a negative entry (the first tensor with one is named), then a
// non-finite trace, then a zero trace.
void check_list(double trace, double min, at::TensorList list, const char* list_name) {
  if (min < 0.0) {
    for (size_t k = 0; k < list.size(); ++k) {
      if (list[k].numel() == 0) continue;
      const double m = nan_ignoring_min(list[k].detach().reshape(-1));
      TORCH_CHECK(!(m < 0.0), "ftdfast: ", list_name, "[", k, "] has a negative entry (min ", m,
                  "); a Fisher diagonal must be non-negative");
    }
  }
  TORCH_CHECK(std::isfinite(trace), "ftdfast: ", list_name, " has NaN or infinite entries (trace ", trace, ")");
  TORCH_CHECK(trace > 0.0, "ftdfast: ", list_name,
              " is all zeros (trace 0); a Fisher diagonal must have a positive trace");
}

at::Tensor fisher_distance_cuda(at::TensorList f_a, at::TensorList f_b) {
  const auto p = make_fisher_distance_params(f_a, f_b);
  for (int64_t k = 0; k < p.tensors; ++k) {
    FTDFAST_CHECK_DEVICE_TYPE(f_a[k], "f_a[" + std::to_string(k) + "]", at::kCUDA);
    FTDFAST_CHECK_DEVICE_TYPE(f_b[k], "f_b[" + std::to_string(k) + "]", at::kCUDA);
  }
  const c10::cuda::CUDAGuard guard(f_a[0].device());
  if (p.numel == 0) {  // what the CPU kernel's checks say about empty lists
    check_list(0.0, std::numeric_limits<double>::infinity(), f_a, "f_a");
  }
  // Detached and contiguous (a copy only for a non-contiguous tensor); empty
  // tensors are left out of the table.
  std::vector<at::Tensor> a, b;
  a.reserve(p.tensors);
  b.reserve(p.tensors);
  for (int64_t k = 0; k < p.tensors; ++k) {
    if (f_a[k].numel() == 0) continue;
    a.push_back(f_a[k].detach().contiguous());
    b.push_back(f_b[k].detach().contiguous());
  }
  const int64_t tensors = static_cast<int64_t>(a.size());
  auto out = at::empty({}, f_a[0].options());
  const auto stream = at::cuda::getCurrentCUDAStream();
  at::Tensor workspace;
  int64_t chunks = 0;
  AT_DISPATCH_FLOATING_TYPES(a[0].scalar_type(), "ftdfast_fisher_distance_cuda", [&] {
    // The pointer table, built in pinned host memory and copied on the stream
    // (the caching host allocator keeps the buffer alive until the copy ran).
    using Segment = FisherSegment<scalar_t>;
    const int64_t bytes = tensors * static_cast<int64_t>(sizeof(Segment));
    auto table_host = at::empty({bytes}, at::TensorOptions().dtype(at::kByte).pinned_memory(true));
    std::vector<Segment> table(tensors);
    for (int64_t k = 0; k < tensors; ++k) {
      table[k] = Segment{a[k].const_data_ptr<scalar_t>(), b[k].const_data_ptr<scalar_t>(), a[k].numel(),
                         chunks};
      chunks += fisher_chunks(a[k].numel());
    }
    std::memcpy(table_host.data_ptr(), table.data(), bytes);
    auto table_dev = at::empty({bytes}, a[0].options().dtype(at::kByte));
    table_dev.copy_(table_host, /*non_blocking=*/true);
    workspace = at::empty({fisher_workspace_doubles(chunks)}, a[0].options().dtype(at::kDouble));
    FisherDistanceArgs<scalar_t> args{};
    args.segments = reinterpret_cast<const Segment*>(table_dev.const_data_ptr());
    args.tensors = tensors;
    args.chunks = chunks;
    args.workspace = workspace.data_ptr<double>();
    args.out = out.data_ptr<scalar_t>();
    FTDFAST_CUDA_CHECK(launch_fisher_distance(args, stream), "fisher_distance");
  });
  // One read-back (and sync) for the value checks.
  const auto result = workspace.narrow(0, fisher_result_offset(chunks), kFisherResultSize).cpu();
  const double* r = result.const_data_ptr<double>();
  check_list(r[kTraceA], r[kMinA], f_a, "f_a");
  check_list(r[kTraceB], r[kMinB], f_b, "f_b");
  return out;
}

// ------------------------------------------------------ fisher_distance_matrix
// sqrt(m[r] / sum(m[r])) for each row of a contiguous (n, P) CUDA matrix, as
// an (n, P) double tensor, after the CPU kernel's value checks of each row.
at::Tensor sqrt_normalised_rows(const at::Tensor& m, const char* name) {
  const int64_t n = m.size(0), P = m.size(1);
  const auto sums = m.sum(1, /*keepdim=*/false, at::kDouble);
  const auto mins = P > 0 ? m.amin(1).to(at::kDouble)
                          : at::full({n}, std::numeric_limits<double>::infinity(), sums.options());
  const auto stats = at::stack({sums, mins}).cpu();  // one read-back for the checks
  const double* s = stats.const_data_ptr<double>();
  for (int64_t r = 0; r < n; ++r) {
    const double sum = s[r];
    // amin propagates NaN; the CPU kernel's min ignores it.
    const double min = std::isnan(s[n + r]) ? nan_ignoring_min(m[r]) : s[n + r];
    TORCH_CHECK(!(min < 0.0), "ftdfast: ", name, "[", r, "] has a negative entry (min ", min,
                "); a Fisher diagonal must be non-negative");
    TORCH_CHECK(std::isfinite(sum), "ftdfast: ", name, "[", r, "] has NaN or infinite entries (sum ", sum, ")");
    TORCH_CHECK(sum > 0.0, "ftdfast: ", name, "[", r,
                "] is all zeros; a Fisher diagonal must have a positive trace");
  }
  auto out = at::empty({n, P}, m.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(m.scalar_type(), "ftdfast_fisher_distance_matrix_cuda", [&] {
    SqrtNormalizeArgs<scalar_t> args{};
    args.x = m.const_data_ptr<scalar_t>();
    args.sum = sums.const_data_ptr<double>();
    args.out = out.data_ptr<double>();
    args.rows = n;
    args.p = P;
    FTDFAST_CUDA_CHECK(launch_sqrt_normalize(args, at::cuda::getCurrentCUDAStream()), "fisher_distance_matrix");
  });
  return out;
}

at::Tensor fisher_distance_matrix_cuda(const at::Tensor& rows_in, const at::Tensor& cols_in) {
  const auto p = make_fisher_distance_matrix_params(rows_in, cols_in);
  FTDFAST_CHECK_DEVICE_TYPE(rows_in, "rows", at::kCUDA);
  FTDFAST_CHECK_DEVICE_TYPE(cols_in, "cols", at::kCUDA);
  const c10::cuda::CUDAGuard guard(rows_in.device());
  if (p.r == 0 || p.c == 0) {
    return at::empty({p.r, p.c}, rows_in.options());
  }
  const auto sr = sqrt_normalised_rows(rows_in.detach().contiguous(), "rows");
  // The same tensor on both sides (all pairs within one set): normalise once.
  const auto sc = cols_in.is_same(rows_in) ? sr : sqrt_normalised_rows(cols_in.detach().contiguous(), "cols");
  // d^2 = 1 - <sqrt p, sqrt q>, one double GEMM; the inner product is in [0, 1] up to rounding.
  auto d2 = at::mm(sr, sc.t()).neg_().add_(1.0).clamp_(0.0, 1.0);
  return d2.sqrt_().to(rows_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(ftdfast, CUDA, m) {
  m.impl("sq_grad_sum_linear", &sq_grad_sum_linear_cuda);
  m.impl("sq_grad_sum_conv", &sq_grad_sum_conv_cuda);
  m.impl("fisher_distance", &fisher_distance_cuda);
  m.impl("fisher_distance_matrix", &fisher_distance_matrix_cuda);
}

}  // namespace ftdfast::cuda
