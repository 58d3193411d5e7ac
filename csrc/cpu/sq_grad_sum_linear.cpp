// CPU kernel for ftdfast::sq_grad_sum_linear.
//
// a (n, t, i), g (n, t, o) -> S (o, i) with
//   S[o, i] = sum_n G_n[o, i]^2,   G_n = g_n^T a_n   (one sample's weight grad).
// No (n, o, i) tensor is ever materialised.
//
//   t == 1: S = (g * g)^T (a * a), a single GEMM.
//   t  > 1: S is cut into output tiles; for each tile, G_n restricted to the
//           tile is computed by BLAS (bmm over a few samples at a time) into a
//           small per-thread buffer and its square added to the tile, so G
//           never leaves the cache. Work items are (tile, sample group) pairs
//           run with at::parallel_for (BLAS is single-threaded inside it).
//           Several sample groups, each with its own (o, i) partial summed at
//           the end, are used only when there are fewer tiles than threads,
//           i.e. when o * i is small and the partials are cheap.
#include <algorithm>
#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ftdfast/checks.h"
#include "ftdfast/params.h"

namespace ftdfast::cpu {
namespace {

// Output tile (rows of o, columns of i): big enough for efficient GEMMs,
// small enough that a tile of G and its accumulator stay in L2/L3.
constexpr int64_t kTileRows = 256;
constexpr int64_t kTileCols = 512;
// Elements of G computed by one bmm call (samples per call = this / tile
// size), so that small layers do not pay one call per sample.
constexpr int64_t kBlockElems = int64_t{1} << 17;

// How the t > 1 work is split: output tiles x sample groups. Each group has
// its own (o, i) partial sum (only needed when tiles alone cannot keep every
// thread busy, i.e. when o * i is small); partials are summed at the end.
struct Plan {
  int64_t rows, cols;        // tile size
  int64_t tiles_o, tiles_i;  // tile grid
  int64_t groups;            // sample groups
  int64_t block;             // samples per bmm call
  int64_t tiles() const { return tiles_o * tiles_i; }
  int64_t items() const { return tiles() * groups; }
};

Plan make_plan(const SqGradSumLinearParams& p) {
  Plan q{};
  q.rows = std::min(p.o, kTileRows);
  q.cols = std::min(p.i, kTileCols);
  q.tiles_o = at::divup(p.o, q.rows);
  q.tiles_i = at::divup(p.i, q.cols);
  q.groups = std::min(p.n, at::divup(at::get_num_threads(), q.tiles()));
  q.block = std::max<int64_t>(1, kBlockElems / (q.rows * q.cols));
  return q;
}

// GCC compiles the accumulation loop for several x86 ISAs and picks one at
// load time (function multiversioning), so the build itself stays generic.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define FTDFAST_TARGET_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FTDFAST_TARGET_CLONES
#endif

// acc[r * acc_stride + c] += x[r * cols + c]^2 over a rows x cols tile.
template <typename scalar_t>
FTDFAST_TARGET_CLONES void add_square(scalar_t* __restrict__ acc, int64_t acc_stride,
                                      const scalar_t* __restrict__ x, int64_t rows,
                                      int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    scalar_t* __restrict__ acc_row = acc + r * acc_stride;
    const scalar_t* __restrict__ x_row = x + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      acc_row[c] += x_row[c] * x_row[c];
    }
  }
}

// One work item: for one output tile and one sample group, add sum_n G_n^2
// (restricted to the tile) into that group's partial. buf holds q.block tiles.
void run_item(const at::Tensor& a, const at::Tensor& g, const SqGradSumLinearParams& p,
              const Plan& q, int64_t item, const at::Tensor& partials, const at::Tensor& buf) {
  const int64_t tile = item % q.tiles(), group = item / q.tiles();
  const int64_t o0 = (tile / q.tiles_i) * q.rows, i0 = (tile % q.tiles_i) * q.cols;
  const int64_t rows = std::min(q.rows, p.o - o0), cols = std::min(q.cols, p.i - i0);
  const int64_t s_begin = group * p.n / q.groups, s_end = (group + 1) * p.n / q.groups;
  const auto a_tile = a.narrow(2, i0, cols);                  // (n, t, cols)
  const auto g_tile = g.narrow(2, o0, rows).transpose(1, 2);  // (n, rows, t)
  for (int64_t s = s_begin; s < s_end; s += q.block) {
    const int64_t c = std::min(q.block, s_end - s);
    auto grads = buf.narrow(0, 0, c * rows * cols).view({c, rows, cols});
    at::bmm_out(grads, g_tile.narrow(0, s, c), a_tile.narrow(0, s, c));
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "ftdfast_add_square", [&] {
      scalar_t* acc = partials.select(0, group).data_ptr<scalar_t>() + o0 * p.i + i0;
      const scalar_t* x = grads.const_data_ptr<scalar_t>();
      for (int64_t k = 0; k < c; ++k) {
        add_square(acc, p.i, x + k * rows * cols, rows, cols);
      }
    });
  }
}

// t == 1: sum_n g[n,o]^2 a[n,i]^2 as one GEMM of the squares.
at::Tensor single_position(const at::Tensor& a, const at::Tensor& g,
                           const SqGradSumLinearParams& p) {
  const auto a2 = a.reshape({p.n, p.i}).square();
  const auto g2 = g.reshape({p.n, p.o}).square();
  return at::mm(g2.t(), a2);
}

// t > 1: parallel over (output tile, sample group) items.
at::Tensor multi_position(const at::Tensor& a, const at::Tensor& g,
                          const SqGradSumLinearParams& p) {
  const Plan q = make_plan(p);
  auto partials = at::zeros({q.groups, p.o, p.i}, a.options());
  at::parallel_for(0, q.items(), 1, [&](int64_t begin, int64_t end) {
    const auto buf = at::empty({q.block * q.rows * q.cols}, a.options());
    for (int64_t item = begin; item < end; ++item) {
      run_item(a, g, p, q, item, partials, buf);
    }
  });
  return q.groups == 1 ? partials.select(0, 0) : partials.sum(0);
}

at::Tensor sq_grad_sum_linear_cpu(const at::Tensor& a_in, const at::Tensor& g_in) {
  const auto p = make_sq_grad_sum_linear_params(a_in, g_in);
  FTDFAST_CHECK_DEVICE_TYPE(a_in, "a", at::kCPU);
  FTDFAST_CHECK_DEVICE_TYPE(g_in, "g", at::kCPU);
  if (p.trivial()) {
    return at::zeros({p.o, p.i}, a_in.options());
  }
  // Detached: the op has no autograd formula, and worker threads of
  // at::parallel_for do not inherit the caller's below-autograd dispatch
  // state, so ATen calls there must not see tensors that require grad.
  const auto a = a_in.detach().contiguous();
  const auto g = g_in.detach().contiguous();
  if (p.t == 1) {
    return single_position(a, g, p);
  }
  return multi_position(a, g, p);
}

}  // namespace

TORCH_LIBRARY_IMPL(ftdfast, CPU, m) {
  m.impl("sq_grad_sum_linear", &sq_grad_sum_linear_cpu);
}

}  // namespace ftdfast::cpu
