// CUDA registration of ftdfast::fisher_distance and
// ftdfast::fisher_distance_matrix: input checks, device guard, current stream,
// contiguous inputs, dtype dispatch (float32/float64), output and workspace
// allocation, then the raw-pointer launchers of csrc/cuda/fisher_distance.cu (declared
// in ftdfast/fisher_distance.h), whose cudaError_t is checked here. Schemas and CPU
// kernels: csrc/cpu/. The CPU kernels define the semantics; these match them,
// error messages included.
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
#include "ftdfast/fisher_distance.h"
#include "glue.h"

namespace ftdfast::cuda {
namespace {

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
  m.impl("fisher_distance", &fisher_distance_cuda);
  m.impl("fisher_distance_matrix", &fisher_distance_matrix_cuda);
}

}  // namespace ftdfast::cuda
