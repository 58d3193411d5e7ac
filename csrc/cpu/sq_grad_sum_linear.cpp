// CPU kernel for ftdfast::sq_grad_sum_linear.
//
// a (n, t, i), g (n, t, o) -> S (o, i) with
//   S[o, i] = sum_n G_n[o, i]^2,   G_n = g_n^T a_n   (one sample's weight grad).
// No (n, o, i) tensor is ever materialised.
//
//   t == 1:     S = (g * g)^T (a * a), a single GEMM.
//   t in 2..8:  a fused loop forms each G_n element from t multiply-adds and
//               adds its square at once (GEMMs with such a tiny inner
//               dimension are slow; measured 1.2-5x faster than the BLAS path).
//   t > 8:      G_n comes from BLAS (bmm over a few samples at a time) into a
//               small per-thread buffer, then its square is added.
// For t > 1, S is cut into output tiles so that a tile's accumulator (and G
// block) stays in cache; work items are (tile, sample group) pairs run with
// at::parallel_for (BLAS is single-threaded inside it). Several sample groups,
// each with its own (o, i) partial summed at the end, are used only when there
// are fewer tiles than threads, i.e. when o * i is small and partials are cheap.
#include <algorithm>
#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ftdfast/checks.h"
#include "ftdfast/cpu_loops.h"
#include "ftdfast/sq_grad_sum.h"

// The op's schema; its CPU kernel is registered at the end of this file.
namespace ftdfast {

// Declared, and documented, in the op header.
SqGradSumLinearParams make_sq_grad_sum_linear_params(
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

namespace ftdfast::cpu {
namespace {

// Output tile (rows of o, columns of i): big enough for efficient GEMMs,
// small enough that a tile of G and its accumulator stay in L2/L3.
constexpr int64_t kTileRows = 256;
constexpr int64_t kTileCols = 512;
// Up to this many positions, G_n is formed in registers by a fused loop
// instead of by BLAS (whose GEMMs with tiny inner dimension are slow).
constexpr int64_t kMaxFusedT = 8;
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

// One work item: an output tile and the samples of one sample group.
struct Item {
  int64_t o0, rows;            // tile rows in o
  int64_t i0, cols;            // tile columns in i
  int64_t s_begin, s_end;      // samples
  int64_t group;               // which partial to add into
};

Item make_item(const SqGradSumLinearParams& p, const Plan& q, int64_t item) {
  const int64_t tile = item % q.tiles(), group = item / q.tiles();
  const int64_t o0 = (tile / q.tiles_i) * q.rows, i0 = (tile % q.tiles_i) * q.cols;
  return {o0,
          std::min(q.rows, p.o - o0),
          i0,
          std::min(q.cols, p.i - i0),
          group * p.n / q.groups,
          (group + 1) * p.n / q.groups,
          group};
}

// Small t: G_n is formed and squared in one pass, T multiply-adds per element,
// with T a compile-time constant so the loop over columns vectorises.
// acc points at the tile's [o0, i0] element of an (o, i) row-major partial.
template <typename scalar_t, int T>
FTDFAST_TARGET_CLONES void fused_tile(const scalar_t* __restrict__ a, const scalar_t* __restrict__ g,
                                      scalar_t* __restrict__ acc, const SqGradSumLinearParams& p,
                                      const Item& it) {
  for (int64_t s = it.s_begin; s < it.s_end; ++s) {
    const scalar_t* a_s = a + s * T * p.i + it.i0;  // a[s, tt, i0 + c] = a_s[tt * p.i + c]
    const scalar_t* g_s = g + s * T * p.o + it.o0;  // g[s, tt, o0 + r] = g_s[tt * p.o + r]
    for (int64_t r = 0; r < it.rows; ++r) {
      scalar_t coef[T];
      for (int tt = 0; tt < T; ++tt) {
        coef[tt] = g_s[tt * p.o + r];
      }
      scalar_t* __restrict__ acc_row = acc + r * p.i;
      for (int64_t c = 0; c < it.cols; ++c) {
        scalar_t x = coef[0] * a_s[c];
        for (int tt = 1; tt < T; ++tt) {
          x += coef[tt] * a_s[tt * p.i + c];
        }
        acc_row[c] += x * x;
      }
    }
  }
}

template <typename scalar_t>
void run_fused(const scalar_t* a, const scalar_t* g, scalar_t* acc,
               const SqGradSumLinearParams& p, const Item& it) {
  switch (p.t) {
#define FTDFAST_FUSED_CASE(T) \
  case T:                     \
    return fused_tile<scalar_t, T>(a, g, acc, p, it);
    FTDFAST_FUSED_CASE(2)
    FTDFAST_FUSED_CASE(3)
    FTDFAST_FUSED_CASE(4)
    FTDFAST_FUSED_CASE(5)
    FTDFAST_FUSED_CASE(6)
    FTDFAST_FUSED_CASE(7)
    FTDFAST_FUSED_CASE(8)
#undef FTDFAST_FUSED_CASE
    default:
      TORCH_INTERNAL_ASSERT(false, "ftdfast: no fused kernel for t = ", p.t);
  }
}

// Larger t: G_n restricted to the tile comes from BLAS (bmm over q.block
// samples at a time, into buf), then its square is added to the partial.
void run_blas(const at::Tensor& a, const at::Tensor& g, const at::Tensor& acc_tensor,
              const SqGradSumLinearParams& p, const Plan& q, const Item& it,
              const at::Tensor& buf) {
  const auto a_tile = a.narrow(2, it.i0, it.cols);                  // (n, t, cols)
  const auto g_tile = g.narrow(2, it.o0, it.rows).transpose(1, 2);  // (n, rows, t)
  const int64_t tile_elems = it.rows * it.cols;
  for (int64_t s = it.s_begin; s < it.s_end; s += q.block) {
    const int64_t c = std::min(q.block, it.s_end - s);
    auto grads = buf.narrow(0, 0, c * tile_elems).view({c, it.rows, it.cols});
    at::bmm_out(grads, g_tile.narrow(0, s, c), a_tile.narrow(0, s, c));
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "ftdfast_add_square", [&] {
      scalar_t* acc = acc_tensor.data_ptr<scalar_t>() + it.o0 * p.i + it.i0;
      const scalar_t* x = grads.const_data_ptr<scalar_t>();
      for (int64_t k = 0; k < c; ++k) {
        add_square(acc, p.i, x + k * tile_elems, it.rows, it.cols);
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
  const bool fused = p.t <= kMaxFusedT;
  at::parallel_for(0, q.items(), 1, [&](int64_t begin, int64_t end) {
    const auto buf = fused ? at::Tensor() : at::empty({q.block * q.rows * q.cols}, a.options());
    for (int64_t item = begin; item < end; ++item) {
      const Item it = make_item(p, q, item);
      const auto acc = partials.select(0, it.group);
      if (fused) {
        AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "ftdfast_fused", [&] {
          run_fused(a.const_data_ptr<scalar_t>(), g.const_data_ptr<scalar_t>(),
                    acc.data_ptr<scalar_t>() + it.o0 * p.i + it.i0, p, it);
        });
      } else {
        run_blas(a, g, acc, p, q, it, buf);
      }
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
