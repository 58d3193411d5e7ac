// CUDA kernels for ftdfast::sq_grad_sum_linear and ftdfast::sq_grad_sum_conv
// (no torch headers; launched by csrc/cuda/sq_grad_sum_glue.cpp).
//
// Both compute, per conv group (one for the linear op),
//   S[m, c] = sum_n G_n[m, c]^2,   G_n[m, c] = sum_t B_n[t, m] * A_n[t, c],
// with B = g (linear) / grad_output (conv) and A = a (linear) / the implicit
// im2col of the input (conv). A block owns one (BM x BN) output tile; each of
// its 256 threads owns a TM x TN register micro-tile (rows ty + r * TY,
// columns tx + c * TX: conflict-free shared-memory reads). Per sample:
//   1. G tile = 0 in registers;
//   2. for each chunk of kBK positions: stage the B (kBK x BM) and A (kBK x BN)
//      operand tiles in shared memory (zero outside the problem), then
//      G += B^T A over the chunk;
//   3. S tile += G tile squared (a second register tile).
// S is written once at the end. No per-sample gradient ever reaches global
// memory. When there are few tiles, the samples are split over grid z and
// split z writes its own partial plane (summed by the glue: deterministic).
#include <algorithm>
#include <cstdint>

#include <cuda_runtime.h>

#include "ftdfast/sq_grad_sum.h"
#include "launch.cuh"

namespace ftdfast::cuda {
namespace {

constexpr int kThreads = 256;  // threads per block, all configurations
constexpr int kBK = 16;        // positions per staged chunk

template <int BM_, int BN_, int TM_, int TN_>
struct Tile {
  static constexpr int BM = BM_, BN = BN_, TM = TM_, TN = TN_;
  static constexpr int TY = BM / TM;  // threads along rows
  static constexpr int TX = BN / TN;  // threads along columns
  static_assert(TY * TX == kThreads, "one micro-tile per thread");
  static_assert(kThreads % BM == 0 && kThreads % BN == 0, "row-fastest loads cover whole rows");
  static_assert((kBK * BM) % kThreads == 0 && (kBK * BN) % kThreads == 0, "loads divide evenly");
  static_assert(kThreads % kBK == 0, "position-fastest loads cover whole chunks");
  static constexpr int LB = kBK * BM / kThreads;  // B elements loaded per thread per chunk
  static constexpr int LA = kBK * BN / kThreads;  // A elements loaded per thread per chunk
};

using Tile64 = Tile<64, 64, 4, 4>;
using Tile32 = Tile<32, 32, 2, 2>;
using Tile16 = Tile<16, 16, 1, 1>;

// Operand tiles, one row per position; +1 column against bank conflicts of
// the position-fastest (conv) stores.
template <typename T, class C>
struct Smem {
  T b[kBK][C::BM + 1];
  T a[kBK][C::BN + 1];
};

// G += B^T A over the first kn positions of the staged chunk.
template <class C, typename T>
__device__ __forceinline__ void multiply_chunk(const Smem<T, C>& s, int ty, int tx, int kn,
                                               T (&acc)[C::TM][C::TN]) {
  auto step = [&](int k) {
    T bv[C::TM], av[C::TN];
#pragma unroll
    for (int r = 0; r < C::TM; ++r) bv[r] = s.b[k][ty + r * C::TY];
#pragma unroll
    for (int c = 0; c < C::TN; ++c) av[c] = s.a[k][tx + c * C::TX];
#pragma unroll
    for (int r = 0; r < C::TM; ++r) {
#pragma unroll
      for (int c = 0; c < C::TN; ++c) acc[r][c] += bv[r] * av[c];
    }
  };
  if (kn == kBK) {
#pragma unroll
    for (int k = 0; k < kBK; ++k) step(k);
  } else {
#pragma unroll 4
    for (int k = 0; k < kn; ++k) step(k);
  }
}

// sq += acc^2; acc = 0.
template <class C, typename T>
__device__ __forceinline__ void add_square(T (&acc)[C::TM][C::TN], T (&sq)[C::TM][C::TN]) {
#pragma unroll
  for (int r = 0; r < C::TM; ++r) {
#pragma unroll
    for (int c = 0; c < C::TN; ++c) {
      sq[r][c] += acc[r][c] * acc[r][c];
      acc[r][c] = T(0);
    }
  }
}

// Writes the micro-tile to out (leading dimension ld) at tile origin
// (row0, col0), rows < rows_end and columns < cols_end only.
template <class C, typename T>
__device__ __forceinline__ void store_tile(const T (&sq)[C::TM][C::TN], T* __restrict__ out, int64_t ld,
                                           int64_t row0, int64_t rows_end, int64_t col0,
                                           int64_t cols_end, int ty, int tx) {
#pragma unroll
  for (int r = 0; r < C::TM; ++r) {
    const int64_t row = row0 + ty + r * C::TY;
    if (row >= rows_end) continue;
#pragma unroll
    for (int c = 0; c < C::TN; ++c) {
      const int64_t col = col0 + tx + c * C::TX;
      if (col < cols_end) out[row * ld + col] = sq[r][c];
    }
  }
}

// Samples [begin, end) of split z out of `splits`.
__device__ __forceinline__ void sample_range(int64_t n, int64_t splits, int64_t& begin, int64_t& end) {
  const int64_t z = blockIdx.z;
  begin = z * n / splits;
  end = (z + 1) * n / splits;
}

// ------------------------------------------------------------------ linear
// a (n, t, i), g (n, t, o) contiguous: both operands are contiguous along
// the tile's columns (i resp. o), so loads are column-fastest (coalesced).
template <typename T, class C>
__global__ void __launch_bounds__(kThreads)
    linear_kernel(const T* __restrict__ a, const T* __restrict__ g, T* __restrict__ out, int64_t n,
                  int64_t t, int64_t in, int64_t on, int64_t tiles_i, int64_t splits) {
  __shared__ Smem<T, C> s;
  const int tid = threadIdx.x;
  const int ty = tid / C::TX, tx = tid % C::TX;
  const int64_t tile = blockIdx.x;
  const int64_t m0 = (tile / tiles_i) * C::BM, c0 = (tile % tiles_i) * C::BN;
  int64_t s_begin, s_end;
  sample_range(n, splits, s_begin, s_end);

  // Loads: thread covers column lm (lc) of positions lkb + j * (kThreads / BM).
  const int lm = tid % C::BM, lkb = tid / C::BM;
  const int lc = tid % C::BN, lka = tid / C::BN;
  const bool m_ok = m0 + lm < on, c_ok = c0 + lc < in;

  T acc[C::TM][C::TN], sq[C::TM][C::TN];
#pragma unroll
  for (int r = 0; r < C::TM; ++r) {
#pragma unroll
    for (int c = 0; c < C::TN; ++c) acc[r][c] = sq[r][c] = T(0);
  }
  for (int64_t smp = s_begin; smp < s_end; ++smp) {
    const T* gs = g + smp * t * on + (m_ok ? m0 + lm : 0);
    const T* as = a + smp * t * in + (c_ok ? c0 + lc : 0);
    for (int64_t t0 = 0; t0 < t; t0 += kBK) {
      const int kn = static_cast<int>(t - t0 < kBK ? t - t0 : kBK);
#pragma unroll
      for (int j = 0; j < C::LB; ++j) {
        const int k = lkb + j * (kThreads / C::BM);
        s.b[k][lm] = (m_ok && k < kn) ? gs[(t0 + k) * on] : T(0);
      }
#pragma unroll
      for (int j = 0; j < C::LA; ++j) {
        const int k = lka + j * (kThreads / C::BN);
        s.a[k][lc] = (c_ok && k < kn) ? as[(t0 + k) * in] : T(0);
      }
      __syncthreads();
      multiply_chunk<C>(s, ty, tx, kn, acc);
      __syncthreads();
    }
    add_square<C>(acc, sq);
  }
  store_tile<C>(sq, out + static_cast<int64_t>(blockIdx.z) * on * in, in, m0, on, c0, in, ty, tx);
}

// -------------------------------------------------------------------- conv
// grad_output (n, c_out, T) and input (n, c_in, D, H, W) are contiguous along
// positions, so loads are position-fastest: thread covers position lk of the
// chunk and rows/columns lr + j * (kThreads / kBK). A thread's columns are
// the same for every chunk and sample, so their im2col decomposition
// (channel, tap offsets) is computed once.
template <typename T, class C>
__global__ void __launch_bounds__(kThreads) conv_kernel(SqGradSumConvArgs<T> p, int64_t tiles_m,
                                                        int64_t tiles_c) {
  __shared__ Smem<T, C> s;
  const int tid = threadIdx.x;
  const int ty = tid / C::TX, tx = tid % C::TX;
  const int og = p.c_out / p.groups, cg = p.c_in / p.groups;
  const int taps = p.kernel[0] * p.kernel[1] * p.kernel[2];
  const int ckg = cg * taps;
  const int out_hw = p.out_size[1] * p.out_size[2];
  const int positions = p.out_size[0] * out_hw;
  const int in_numel = p.in[0] * p.in[1] * p.in[2];

  const int64_t tile = blockIdx.x;
  const int64_t per_group = tiles_m * tiles_c;
  const int grp = static_cast<int>(tile / per_group);
  const int m0 = static_cast<int>((tile % per_group) / tiles_c) * C::BM;
  const int c0 = static_cast<int>(tile % tiles_c) * C::BN;
  int64_t s_begin, s_end;
  sample_range(p.n, p.plan.splits, s_begin, s_end);

  const int lk = tid % kBK, lr = tid / kBK;
  constexpr int kStep = kThreads / kBK;

  // B rows: offset of grad_output channel grp * og + m within a sample.
  int b_off[C::LB];
  bool b_ok[C::LB];
#pragma unroll
  for (int j = 0; j < C::LB; ++j) {
    const int m = m0 + lr + j * kStep;
    b_ok[j] = m < og;
    b_off[j] = b_ok[j] ? (grp * og + m) * positions : 0;
  }
  // A columns: input channel offset within a sample and the tap's offsets.
  int a_off[C::LA], a_dz[C::LA], a_dy[C::LA], a_dx[C::LA];
  bool a_ok[C::LA];
  const int k12 = p.kernel[1] * p.kernel[2];
#pragma unroll
  for (int j = 0; j < C::LA; ++j) {
    const int c = c0 + lr + j * kStep;
    a_ok[j] = c < ckg;
    const int cc = a_ok[j] ? c : 0;
    const int ci = cc / taps, tap = cc % taps;
    const int kd = tap / k12, kh = (tap / p.kernel[2]) % p.kernel[1], kw = tap % p.kernel[2];
    a_off[j] = (grp * cg + ci) * in_numel;
    a_dz[j] = kd * p.dilation[0];
    a_dy[j] = kh * p.dilation[1];
    a_dx[j] = kw * p.dilation[2];
  }
  const int64_t x_sample = static_cast<int64_t>(p.c_in) * in_numel;
  const int64_t gy_sample = static_cast<int64_t>(p.c_out) * positions;

  T acc[C::TM][C::TN], sq[C::TM][C::TN];
#pragma unroll
  for (int r = 0; r < C::TM; ++r) {
#pragma unroll
    for (int c = 0; c < C::TN; ++c) acc[r][c] = sq[r][c] = T(0);
  }
  for (int64_t smp = s_begin; smp < s_end; ++smp) {
    const T* xs = p.input + smp * x_sample;
    const T* gys = p.grad_output + smp * gy_sample;
    for (int t0 = 0; t0 < positions; t0 += kBK) {
      const int kn = positions - t0 < kBK ? positions - t0 : kBK;
      const int pos = t0 + lk;
      const bool pos_ok = lk < kn;
      // This thread's position as (od, oh, ow), then its first input index.
      const int od = pos / out_hw, rem = pos - od * out_hw;
      const int oh = rem / p.out_size[2], ow = rem - oh * p.out_size[2];
      const int bz = od * p.stride[0] - p.padding[0];
      const int by = oh * p.stride[1] - p.padding[1];
      const int bx = ow * p.stride[2] - p.padding[2];
#pragma unroll
      for (int j = 0; j < C::LB; ++j) {
        s.b[lk][lr + j * kStep] = (pos_ok && b_ok[j]) ? gys[b_off[j] + pos] : T(0);
      }
#pragma unroll
      for (int j = 0; j < C::LA; ++j) {
        const int z = bz + a_dz[j], y = by + a_dy[j], x = bx + a_dx[j];
        const bool ok = pos_ok && a_ok[j] && z >= 0 && z < p.in[0] && y >= 0 && y < p.in[1] &&
                        x >= 0 && x < p.in[2];
        s.a[lk][lr + j * kStep] = ok ? xs[a_off[j] + (z * p.in[1] + y) * p.in[2] + x] : T(0);
      }
      __syncthreads();
      multiply_chunk<C>(s, ty, tx, kn, acc);
      __syncthreads();
    }
    add_square<C>(acc, sq);
  }
  const int64_t plane = static_cast<int64_t>(p.c_out) * ckg;
  store_tile<C>(sq, p.out + static_cast<int64_t>(blockIdx.z) * plane + static_cast<int64_t>(grp) * og * ckg,
                ckg, m0, og, c0, ckg, ty, tx);
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

template <class C>
int64_t tiles_of(int64_t rows, int64_t cols, int64_t groups) {
  return groups * ceil_div(rows, C::BM) * ceil_div(cols, C::BN);
}

}  // namespace

SqGradSumPlan plan_sq_grad_sum(int64_t rows, int64_t cols, int64_t groups, int64_t n, int sm_count) {
  const int64_t sms = std::max(1, sm_count);
  // Pick the tile minimising (padded work) / (relative efficiency x
  // occupancy). Bigger tiles reuse each staged operand more (fewer
  // shared-memory loads per multiply-add: 4x4 > 2x2 > 1x1 per thread) but
  // waste more on small outputs and give fewer blocks.
  struct Candidate {
    int config;
    int64_t bm, bn, tiles;
    double efficiency;
  };
  const Candidate candidates[] = {
      {kTile64, Tile64::BM, Tile64::BN, tiles_of<Tile64>(rows, cols, groups), 1.0},
      {kTile32, Tile32::BM, Tile32::BN, tiles_of<Tile32>(rows, cols, groups), 0.5},
      {kTile16, Tile16::BM, Tile16::BN, tiles_of<Tile16>(rows, cols, groups), 0.25},
  };
  const Candidate* best = nullptr;
  double best_cost = 0.0;
  for (const Candidate& cand : candidates) {
    const double padded = static_cast<double>(groups) * ceil_div(rows, cand.bm) * cand.bm *
                          ceil_div(cols, cand.bn) * cand.bn;
    // Two resident blocks per SM keep it busy; fewer blocks (tiles times
    // sample splits, at most n splits) leave SMs idle.
    const double blocks = static_cast<double>(cand.tiles) * static_cast<double>(std::max<int64_t>(n, 1));
    const double occupancy = std::min(1.0, blocks / static_cast<double>(2 * sms));
    const double cost = padded / (cand.efficiency * occupancy);
    if (best == nullptr || cost < best_cost) {
      best = &cand;
      best_cost = cost;
    }
  }
  SqGradSumPlan plan{};
  plan.config = best->config;
  plan.tile_rows = best->bm;
  plan.tile_cols = best->bn;
  plan.tiles = best->tiles;
  // Split samples until there are about four blocks per SM (two waves).
  const int64_t target = 4 * sms;
  plan.splits = std::max<int64_t>(1, std::min({n, ceil_div(target, std::max<int64_t>(plan.tiles, 1)),
                                              int64_t{65535}}));
  return plan;
}

template <typename T>
cudaError_t launch_sq_grad_sum_linear(const SqGradSumLinearArgs<T>& p, cudaStream_t stream) {
  const SqGradSumPlan& q = p.plan;
  if (q.tiles <= 0 || q.tiles > 0x7fffffff || q.splits < 1 || q.splits > 65535) {
    return cudaErrorInvalidConfiguration;
  }
  const dim3 grid(static_cast<unsigned>(q.tiles), 1, static_cast<unsigned>(q.splits));
  const int64_t tiles_i = ceil_div(p.i, q.tile_cols);
  switch (q.config) {
    case kTile64:
      FTDFAST_LAUNCH(grid, kThreads, stream, linear_kernel<T, Tile64>)(p.a, p.g, p.out, p.n, p.t, p.i, p.o, tiles_i,
                                                              q.splits);
      break;
    case kTile32:
      FTDFAST_LAUNCH(grid, kThreads, stream, linear_kernel<T, Tile32>)(p.a, p.g, p.out, p.n, p.t, p.i, p.o, tiles_i,
                                                              q.splits);
      break;
    case kTile16:
      FTDFAST_LAUNCH(grid, kThreads, stream, linear_kernel<T, Tile16>)(p.a, p.g, p.out, p.n, p.t, p.i, p.o, tiles_i,
                                                              q.splits);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_sq_grad_sum_conv(const SqGradSumConvArgs<T>& p, cudaStream_t stream) {
  const SqGradSumPlan& q = p.plan;
  if (q.tiles <= 0 || q.tiles > 0x7fffffff || q.splits < 1 || q.splits > 65535 || p.groups <= 0) {
    return cudaErrorInvalidConfiguration;
  }
  const int64_t og = p.c_out / p.groups;
  const int64_t ckg = static_cast<int64_t>(p.c_in / p.groups) * p.kernel[0] * p.kernel[1] * p.kernel[2];
  const int64_t tiles_m = ceil_div(og, q.tile_rows), tiles_c = ceil_div(ckg, q.tile_cols);
  if (tiles_m * tiles_c * p.groups != q.tiles) {
    return cudaErrorInvalidValue;
  }
  const dim3 grid(static_cast<unsigned>(q.tiles), 1, static_cast<unsigned>(q.splits));
  switch (q.config) {
    case kTile64:
      FTDFAST_LAUNCH(grid, kThreads, stream, conv_kernel<T, Tile64>)(p, tiles_m, tiles_c);
      break;
    case kTile32:
      FTDFAST_LAUNCH(grid, kThreads, stream, conv_kernel<T, Tile32>)(p, tiles_m, tiles_c);
      break;
    case kTile16:
      FTDFAST_LAUNCH(grid, kThreads, stream, conv_kernel<T, Tile16>)(p, tiles_m, tiles_c);
      break;
    default:
      return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

template cudaError_t launch_sq_grad_sum_linear<float>(const SqGradSumLinearArgs<float>&, cudaStream_t);
template cudaError_t launch_sq_grad_sum_linear<double>(const SqGradSumLinearArgs<double>&, cudaStream_t);
template cudaError_t launch_sq_grad_sum_conv<float>(const SqGradSumConvArgs<float>&, cudaStream_t);
template cudaError_t launch_sq_grad_sum_conv<double>(const SqGradSumConvArgs<double>&, cudaStream_t);

}  // namespace ftdfast::cuda
