// CPU kernel for ftdfast::sq_grad_sum_conv.
//
// input (n, C_in, *spatial), grad_output (n, C_out, *spatial_out) ->
//   S = sum_n G_n * G_n  (weight shape (C_out, C_in / groups, *kernel)),
// G_n being sample n's weight gradient. Per conv group g, with P_n the
// sample's patch matrix ((C_in / groups) * taps rows, t output positions;
// zero padding) and gy_n (C_out / groups, t):
//   G_n[g] = gy_n[g] @ P_n[g]^T.
// Implicit im2col: only the rows of P_n (and a chunk of positions) that one
// output tile needs are unfolded, into a small per-thread buffer; no (n, ...)
// patch tensor and no (n, weight) tensor exists. Stride-1 convolutions on
// small images walk a "wide" position grid instead, where every patch row is
// one contiguous slice of the (padded) sample (see wide_patches).
//
// Work items are (output tile, sample group) pairs run with at::parallel_for;
// a tile is a block of (rows of C_out / groups) x (columns of weight) within
// one conv group, so its accumulator and G block stay in cache. Several sample
// groups, each with its own partial S summed at the end, are used only when
// there are fewer tiles than threads (small weights, where partials are cheap).
// Per sample and tile, G comes from
//   - a fused dot-product loop when the tile is tiny (depthwise), where GEMM
//     call overhead dominates;
//   - BLAS ([sd]gemm_, single-threaded inside parallel_for) otherwise.
// Positions are processed in chunks (G accumulated over chunks) so the patch
// buffer stays bounded for large inputs.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ftdfast/checks.h"
#include "ftdfast/cpu_loops.h"
#include "ftdfast/sq_grad_sum.h"

// Fortran BLAS as exported by libtorch (MKL / OpenBLAS builds). Weak: when
// the running torch lacks them, at::mm_out is used instead.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
}

// The op's schema; its CPU kernel is registered at the end of this file.
namespace ftdfast {

// Declared, and documented, in the op header.
SqGradSumConvParams make_sq_grad_sum_conv_params(
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

}  // namespace ftdfast

namespace ftdfast::cpu {
namespace {

// Output tile: rows of C_out / groups x columns of (C_in / groups) * taps.
constexpr int64_t kTileRows = 256;
constexpr int64_t kTileCols = 512;
// Patch buffer bound (elements): columns x position chunk.
constexpr int64_t kPatchElems = int64_t{1} << 18;
// Tiles with at most this many elements (depthwise-like: one output channel
// per group) use the fused loop instead of BLAS. Measured: MKL beats the fused
// loop already on LeNet-sized tiles (6 x 25, 16 x 150), not on 1 x 9.
constexpr int64_t kMaxFusedTile = 64;

struct Plan {
  int64_t rows, cols;          // tile size
  int64_t tiles_o, tiles_c;    // tiles per conv group
  int64_t tiles;               // all tiles (groups * tiles_o * tiles_c)
  int64_t sgroups;             // sample groups (partials)
  int64_t tchunk;              // positions per patch chunk
  bool fused;                  // fused loop instead of BLAS
  // Stride-1 convolutions run on the "wide" position grid (see wide_patches):
  bool wide;                   // use it
  bool padded;                 // the sample needs a zero-padded copy (some padding > 0)
  int64_t pd, ph, pw;          // padded input extents
  int64_t positions;           // positions walked: T, or the wide grid's length
  int64_t items() const { return tiles * sgroups; }
};

Plan make_plan(const SqGradSumConvParams& p) {
  Plan q{};
  q.tiles_o = at::divup(p.og(), kTileRows);
  q.tiles_c = at::divup(p.ckg(), kTileCols);
  q.rows = at::divup(p.og(), q.tiles_o);  // balanced tiles
  q.cols = at::divup(p.ckg(), q.tiles_c);
  q.tiles = p.groups * q.tiles_o * q.tiles_c;
  q.sgroups = std::min(p.n, at::divup(at::get_num_threads(), q.tiles));
  q.fused = q.rows * q.cols <= kMaxFusedTile;
  q.pd = p.in[0] + 2 * p.padding[0];
  q.ph = p.in[1] + 2 * p.padding[1];
  q.pw = p.in[2] + 2 * p.padding[2];
  const int64_t wide_len = (p.out[0] - 1) * q.ph * q.pw + (p.out[1] - 1) * q.pw + p.out[2];
  // Worth it where im2col's per-row work (about 20 cycles per output row of W_out
  // entries, i.e. 20 / W_out per patch entry) outweighs the extra multiply-adds
  // (rows of them per patch entry, ~32 per cycle): a rough cost model, capped at 1.5x.
  q.wide = !q.fused && p.stride[0] == 1 && p.stride[1] == 1 && p.stride[2] == 1 &&
           wide_len * 2 <= p.t() * 3 && (wide_len - p.t()) * p.out[2] * q.rows <= 640 * p.t();
  q.padded = p.padding[0] > 0 || p.padding[1] > 0 || p.padding[2] > 0;
  q.positions = q.wide ? wide_len : p.t();
  const int64_t max_chunk = std::max<int64_t>(1, std::min(q.positions, kPatchElems / q.cols));
  q.tchunk = at::divup(q.positions, at::divup(q.positions, max_chunk));  // balanced chunks
  return q;
}

struct Item {
  int64_t g;                // conv group
  int64_t o0, rows;         // rows within the group's C_out / groups
  int64_t c0, cols;         // columns within (C_in / groups) * taps
  int64_t s_begin, s_end;   // samples
  int64_t sgroup;           // which partial
};

Item make_item(const SqGradSumConvParams& p, const Plan& q, int64_t item) {
  const int64_t tile = item % q.tiles, sgroup = item / q.tiles;
  const int64_t per_group = q.tiles_o * q.tiles_c;
  const int64_t g = tile / per_group, rest = tile % per_group;
  const int64_t o0 = (rest / q.tiles_c) * q.rows, c0 = (rest % q.tiles_c) * q.cols;
  return {g,
          o0,
          std::min(q.rows, p.og() - o0),
          c0,
          std::min(q.cols, p.ckg() - c0),
          sgroup * p.n / q.sgroups,
          (sgroup + 1) * p.n / q.sgroups,
          sgroup};
}

// Rows c0..c0+cols of conv group g's patch matrix, positions t0..t1, into
// dst (cols x (t1 - t0), row-major). x points at one sample (C_in, D, H, W).
// The row copies are short (one output row: often 10 to 32 entries): GCC would turn
// them into memmove/memset calls (about 1,500 per sample on LeNet's conv2), each
// paying a call; they are kept as inline loops.
template <typename scalar_t>
__attribute__((optimize("no-tree-loop-distribute-patterns")))
void im2col(const scalar_t* __restrict__ x, const SqGradSumConvParams& p, int64_t g, int64_t c0,
            int64_t cols, int64_t t0, int64_t t1, scalar_t* __restrict__ dst) {
  const int64_t taps = p.k(), k12 = p.kernel[1] * p.kernel[2];
  const int64_t len = t1 - t0;
  const int64_t sw = p.stride[2], in_w = p.in[2], out_w = p.out[2];
  // Position t0 as (od, oh, ow): rows of ow are walked without divisions.
  const int64_t od_first = t0 / (p.out[1] * out_w), oh_first = (t0 / out_w) % p.out[1];
  const int64_t ow_first = t0 % out_w;
  for (int64_t j = 0; j < cols; ++j) {
    const int64_t r = c0 + j, c = r / taps, kk = r % taps;
    const int64_t kd = kk / k12, kh = (kk / p.kernel[2]) % p.kernel[1], kw = kk % p.kernel[2];
    const scalar_t* src = x + (g * p.cg() + c) * p.in_numel();
    scalar_t* d = dst + j * len;
    // Offsets of this tap: input index = out index * stride + off.
    const int64_t off_d = kd * p.dilation[0] - p.padding[0];
    const int64_t off_h = kh * p.dilation[1] - p.padding[1];
    const int64_t off_w = kw * p.dilation[2] - p.padding[2];
    // Valid ow for this tap (same on every row): lo <= ow < hi.
    const int64_t lo_w = std::min(out_w, off_w >= 0 ? int64_t{0} : at::divup(-off_w, sw));
    const int64_t hi_w = std::max(lo_w, std::min(out_w, in_w - off_w <= 0 ? int64_t{0} : at::divup(in_w - off_w, sw)));
    int64_t od = od_first, oh = oh_first, ow0 = ow_first, left = len;
    while (left > 0) {
      const int64_t ow1 = std::min(out_w, ow0 + left), width = ow1 - ow0;
      const int64_t id = od * p.stride[0] + off_d, ih = oh * p.stride[1] + off_h;
      if (id < 0 || id >= p.in[0] || ih < 0 || ih >= p.in[1]) {
        for (int64_t q = 0; q < width; ++q) d[q] = scalar_t(0);
      } else {
        const scalar_t* row = src + (id * p.in[1] + ih) * in_w + off_w;
        const int64_t lo = std::clamp(lo_w, ow0, ow1), hi = std::clamp(hi_w, lo, ow1);
        scalar_t* dd = d - ow0;  // dd[ow] is position ow of this row
        for (int64_t ow = ow0; ow < lo; ++ow) dd[ow] = scalar_t(0);
        if (sw == 1) {
          for (int64_t ow = lo; ow < hi; ++ow) dd[ow] = row[ow];
        } else {
          for (int64_t ow = lo; ow < hi; ++ow) dd[ow] = row[ow * sw];
        }
        for (int64_t ow = hi; ow < ow1; ++ow) dd[ow] = scalar_t(0);
      }
      d += width;
      left -= width;
      ow0 = 0;
      if (++oh == p.out[1]) {
        oh = 0;
        ++od;
      }
    }
  }
}

// The "wide" grid, for stride-1 convolutions: positions are walked over the
// padded input's (D, H, W) strides, w = od * ph * pw + oh * pw + ow, from 0 to
// (D_out - 1) ph pw + (H_out - 1) pw + W_out (exclusive). Tap (c, kd, kh, kw)
// then reads input element base(c, kd, kh, kw) + w, so each row of the patch
// matrix is ONE contiguous slice of the padded sample (a memcpy, instead of
// one short copy per output row with bounds checks: im2col's cost on small
// images). Grid points that are not output positions (ow >= W_out, or
// oh >= H_out in 3-D) read in-bounds input values and get a zero output
// gradient, so they add nothing; they cost at most 1.5x the multiply-adds
// (make_plan falls back to im2col beyond that).

// Conv group g's channels of one sample x (C_in, D, H, W), zero-padded, into
// dst (C_in / groups, pd, ph, pw).
template <typename scalar_t>
void pad_sample(const scalar_t* __restrict__ x, const SqGradSumConvParams& p, const Plan& q, int64_t g,
                scalar_t* __restrict__ dst) {
  std::fill(dst, dst + p.cg() * q.pd * q.ph * q.pw, scalar_t(0));
  for (int64_t c = 0; c < p.cg(); ++c) {
    const scalar_t* src = x + (g * p.cg() + c) * p.in_numel();
    for (int64_t d = 0; d < p.in[0]; ++d) {
      for (int64_t h = 0; h < p.in[1]; ++h) {
        scalar_t* row = dst + ((c * q.pd + d + p.padding[0]) * q.ph + h + p.padding[1]) * q.pw + p.padding[2];
        std::memcpy(row, src + (d * p.in[1] + h) * p.in[2], sizeof(scalar_t) * p.in[2]);
      }
    }
  }
}

// Rows c0..c0+cols of the patch matrix on wide positions w0..w1, into dst
// (cols x (w1 - w0), row-major); xp is the group's padded channels.
template <typename scalar_t>
void wide_patches(const scalar_t* __restrict__ xp, const SqGradSumConvParams& p, const Plan& q, int64_t c0,
                  int64_t cols, int64_t w0, int64_t w1, scalar_t* __restrict__ dst) {
  const int64_t taps = p.k(), k12 = p.kernel[1] * p.kernel[2], len = w1 - w0;
  const int64_t vol = q.pd * q.ph * q.pw;
  for (int64_t j = 0; j < cols; ++j) {
    const int64_t r = c0 + j, c = r / taps, kk = r % taps;
    const int64_t kd = kk / k12, kh = (kk / p.kernel[2]) % p.kernel[1], kw = kk % p.kernel[2];
    const int64_t base = c * vol + (kd * p.dilation[0] * q.ph + kh * p.dilation[1]) * q.pw + kw * p.dilation[2];
    std::memcpy(dst + j * len, xp + base + w0, sizeof(scalar_t) * len);
  }
}

// Output gradient rows (gy, rows x T, leading dimension T) on wide positions
// w0..w1, zero where the grid point is not an output position, into dst
// (rows x (w1 - w0)).
template <typename scalar_t>
void wide_grad(const scalar_t* __restrict__ gy, const SqGradSumConvParams& p, const Plan& q, int64_t rows,
               int64_t w0, int64_t w1, scalar_t* __restrict__ dst) {
  const int64_t len = w1 - w0, T = p.t(), plane = q.ph * q.pw;
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* g = gy + r * T;
    scalar_t* d = dst + r * len;
    // Walk the wide rows (od, oh) that overlap [w0, w1).
    for (int64_t w = w0; w < w1;) {
      const int64_t od = w / plane, oh = (w % plane) / q.pw, ow = w % q.pw;
      const int64_t end = std::min(w1, w + (q.pw - ow));  // end of this wide row
      const int64_t valid_end = (oh < p.out[1]) ? std::min(end, w - ow + p.out[2]) : w;
      if (w < valid_end) {
        std::memcpy(d + (w - w0), g + (od * p.out[1] + oh) * p.out[2] + ow, sizeof(scalar_t) * (valid_end - w));
      }
      std::fill(d + (std::max(w, valid_end) - w0), d + (end - w0), scalar_t(0));
      w = end;
    }
  }
}

// G[r, j] += sum_t gy[r * ldg + t] * P[j * len + t] for a rows x cols tile:
// dot products over 64-byte vectors (GCC vector extensions, lowered per
// target_clones ISA), four patch rows per pass over a gy row.
template <typename scalar_t>
FTDFAST_TARGET_CLONES void fused_dots(const scalar_t* __restrict__ gy, int64_t ldg,
                                           const scalar_t* __restrict__ P, int64_t len, int64_t rows,
                                           int64_t cols, scalar_t* __restrict__ G) {
  typedef scalar_t V __attribute__((vector_size(64)));
  constexpr int64_t L = 64 / sizeof(scalar_t);
  const int64_t main = len - len % L;
  auto load = [](const scalar_t* ptr) {
    V v;
    std::memcpy(&v, ptr, sizeof(V));
    return v;
  };
  auto hsum = [](V v) {
    scalar_t r = 0;
    for (int64_t l = 0; l < L; ++l) r += v[l];
    return r;
  };
  for (int64_t r = 0; r < rows; ++r) {
    const scalar_t* __restrict__ a = gy + r * ldg;
    scalar_t* __restrict__ g_row = G + r * cols;
    int64_t j = 0;
    for (; j + 4 <= cols; j += 4) {
      const scalar_t* __restrict__ b0 = P + j * len;
      const scalar_t* __restrict__ b1 = b0 + len;
      const scalar_t* __restrict__ b2 = b1 + len;
      const scalar_t* __restrict__ b3 = b2 + len;
      V s0 = {}, s1 = {}, s2 = {}, s3 = {};
      for (int64_t t = 0; t < main; t += L) {
        const V v = load(a + t);
        s0 += v * load(b0 + t);
        s1 += v * load(b1 + t);
        s2 += v * load(b2 + t);
        s3 += v * load(b3 + t);
      }
      scalar_t r0 = hsum(s0), r1 = hsum(s1), r2 = hsum(s2), r3 = hsum(s3);
      for (int64_t t = main; t < len; ++t) {
        r0 += a[t] * b0[t];
        r1 += a[t] * b1[t];
        r2 += a[t] * b2[t];
        r3 += a[t] * b3[t];
      }
      g_row[j] += r0;
      g_row[j + 1] += r1;
      g_row[j + 2] += r2;
      g_row[j + 3] += r3;
    }
    for (; j < cols; ++j) {
      const scalar_t* __restrict__ b0 = P + j * len;
      V s0 = {};
      for (int64_t t = 0; t < main; t += L) {
        s0 += load(a + t) * load(b0 + t);
      }
      scalar_t r0 = hsum(s0);
      for (int64_t t = main; t < len; ++t) {
        r0 += a[t] * b0[t];
      }
      g_row[j] += r0;
    }
  }
}

// G (rows x cols, row-major) = gy (rows x len, leading dim ldg) @ P^T, P being
// (cols x len) row-major; beta 0 overwrites G, beta 1 adds to it.
template <typename scalar_t>
void gemm(const scalar_t* gy, int64_t ldg, const scalar_t* P, int64_t len, int64_t rows,
          int64_t cols, scalar_t beta, scalar_t* G) {
  // Column-major view: G^T (cols x rows) = P (= (P^T)^T) @ gy^T.
  const bool fits = cols <= INT_MAX && rows <= INT_MAX && len <= INT_MAX && ldg <= INT_MAX;
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (sgemm_ != nullptr && fits) {
      const int m = cols, n = rows, k = len, lda = len, ldb = ldg, ldc = cols;
      const float alpha = 1;
      sgemm_("T", "N", &m, &n, &k, &alpha, P, &lda, gy, &ldb, &beta, G, &ldc);
      return;
    }
  } else {
    if (dgemm_ != nullptr && fits) {
      const int m = cols, n = rows, k = len, lda = len, ldb = ldg, ldc = cols;
      const double alpha = 1;
      dgemm_("T", "N", &m, &n, &k, &alpha, P, &lda, gy, &ldb, &beta, G, &ldc);
      return;
    }
  }
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<scalar_t>::value);
  const auto gy_t = at::from_blob(const_cast<scalar_t*>(gy), {rows, len}, {ldg, 1}, opts);
  const auto p_t = at::from_blob(const_cast<scalar_t*>(P), {cols, len}, {len, 1}, opts);
  auto g_t = at::from_blob(G, {rows, cols}, opts);
  if (beta == 0) {
    at::mm_out(g_t, gy_t, p_t.t());
  } else {
    g_t.addmm_(gy_t, p_t.t());
  }
}

template <typename scalar_t>
at::Tensor run(const at::Tensor& x, const at::Tensor& gy, const SqGradSumConvParams& p) {
  const Plan q = make_plan(p);
  const int64_t ckg = p.ckg(), T = p.t();
  auto partials = at::zeros({q.sgroups, p.c_out, ckg}, x.options());
  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  const scalar_t* gy_ptr = gy.const_data_ptr<scalar_t>();
  scalar_t* part_ptr = partials.data_ptr<scalar_t>();
  const int64_t x_sample = p.c_in * p.in_numel(), gy_sample = p.c_out * T;
  at::parallel_for(0, q.items(), 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> patch(q.cols * q.tchunk), grad(q.rows * q.cols);
    std::vector<scalar_t> padded(q.wide && q.padded ? p.cg() * q.pd * q.ph * q.pw : 0);
    std::vector<scalar_t> wide_gy(q.wide ? q.rows * q.tchunk : 0);
    for (int64_t item = begin; item < end; ++item) {
      const Item it = make_item(p, q, item);
      const int64_t o_first = it.g * p.og() + it.o0;  // first output channel of the tile
      scalar_t* acc = part_ptr + (it.sgroup * p.c_out + o_first) * ckg + it.c0;
      for (int64_t s = it.s_begin; s < it.s_end; ++s) {
        const scalar_t* xs = x_ptr + s * x_sample;
        const scalar_t* gys = gy_ptr + s * gy_sample + o_first * T;
        if (q.fused) {
          std::fill(grad.begin(), grad.end(), scalar_t(0));
        }
        const scalar_t* xp = xs + it.g * p.cg() * p.in_numel();  // the wide grid's input
        if (q.wide && q.padded) {
          pad_sample(xs, p, q, it.g, padded.data());
          xp = padded.data();
        }
        // Positions in chunks: output positions (im2col), or wide-grid points.
        for (int64_t t0 = 0; t0 < q.positions; t0 += q.tchunk) {
          const int64_t t1 = std::min(q.positions, t0 + q.tchunk), len = t1 - t0;
          const scalar_t* g = gys + t0;  // this chunk's output gradient rows, leading dimension ldg
          int64_t ldg = T;
          if (q.wide) {
            wide_patches(xp, p, q, it.c0, it.cols, t0, t1, patch.data());
            wide_grad(gys, p, q, it.rows, t0, t1, wide_gy.data());
            g = wide_gy.data();
            ldg = len;
          } else {
            im2col(xs, p, it.g, it.c0, it.cols, t0, t1, patch.data());
          }
          if (q.fused) {
            fused_dots(g, ldg, patch.data(), len, it.rows, it.cols, grad.data());
          } else {
            gemm(g, ldg, patch.data(), len, it.rows, it.cols, scalar_t(t0 == 0 ? 0 : 1), grad.data());
          }
        }
        add_square(acc, ckg, grad.data(), it.rows, it.cols);
      }
    }
  });
  return q.sgroups == 1 ? partials.select(0, 0) : partials.sum(0);
}

at::Tensor sq_grad_sum_conv_cpu(const at::Tensor& input, const at::Tensor& grad_output,
                                at::IntArrayRef weight_shape, at::IntArrayRef stride,
                                at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = make_sq_grad_sum_conv_params(input, grad_output, weight_shape, stride, padding,
                                              dilation, groups);
  FTDFAST_CHECK_DEVICE_TYPE(input, "input", at::kCPU);
  FTDFAST_CHECK_DEVICE_TYPE(grad_output, "grad_output", at::kCPU);
  if (p.trivial()) {
    return at::zeros(weight_shape, input.options());
  }
  // Detached and contiguous: the op has no autograd formula, and worker
  // threads must not see tensors that require grad.
  const auto x = input.detach().contiguous();
  const auto gy = grad_output.detach().contiguous();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ftdfast_sq_grad_sum_conv",
                             [&] { out = run<scalar_t>(x, gy, p); });
  return out.view(weight_shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(ftdfast, CPU, m) {
  m.impl("sq_grad_sum_conv", &sq_grad_sum_conv_cpu);
}

}  // namespace ftdfast::cpu
