// CPU kernels for ftdfast::fisher_distance and ftdfast::fisher_distance_matrix.
//
// fisher_distance: f_a, f_b lists of per-parameter Fisher diagonals ->
//   d = || sqrt(f_a / tr f_a) - sqrt(f_b / tr f_b) ||_2 / sqrt(2)
// with no concatenated copy:
//   pass 1: the two traces, each tensor's min (sign check) and sum_j sqrt(a_j b_j),
//           which gives d^2 = 1 - sum_j sqrt(a_j b_j) / sqrt(tr_a tr_b) in one read;
//   pass 2, only for close Fishers (d^2 < 1e-2, where that subtraction cancels
//           digits) or traces far from 1 (where the raw products a_j b_j leave
//           double's normal range): the fused sum of
//           (sqrt(a) / sqrt(tr_a) - sqrt(b) / sqrt(tr_b))^2, each input
//           normalized by its own trace before the two meet.
// Each pass cuts every tensor into chunks and runs all chunks with one
// at::parallel_for; a chunk's double partial goes to its own slot and slots
// are summed in order, so the result does not depend on the thread count.
//
// fisher_distance_matrix: rows (R, P), cols (C, P) -> D (R, C) with
//   D[r, c] = sqrt(1 - <sqrt(p_r), sqrt(q_c)>),  p_r = rows[r] / sum(rows[r]),
// (the Hellinger identity), clamped to [0, 1], from ONE blocked read of both
// matrices: each block square-roots a block of every row and column in cache,
// takes their sums and minimums (traces, sign checks) and forms all R x C inner
// products on it (a GEMM of the square roots that is never materialised:
// memory-bandwidth bound for the usual few rows). Close pairs (d^2 < 1e-2) are
// then recomputed from the definition, as in fisher_distance's second pass, and
// so are pairs whose traces are far from 1 (see raw_products_in_range).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "ftdfast/checks.h"
#include "ftdfast/cpu_loops.h"
#include "ftdfast/fisher_distance.h"

// The ops' schemas; their CPU kernels are registered at the end of this file.
namespace ftdfast {

// Declared, and documented, in the op header.
FisherDistanceParams make_fisher_distance_params(at::TensorList f_a, at::TensorList f_b) {
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

FisherDistanceMatrixParams make_fisher_distance_matrix_params(const at::Tensor& rows,
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

namespace ftdfast::cpu {
namespace {

// Entries per work item: large enough to amortise scheduling, small enough
// that a ResNet-sized list gives every thread many items.
constexpr int64_t kChunk = int64_t{1} << 16;
// Independent accumulators per loop, so the double reductions vectorise
// without reassociating a single sum.
constexpr int kLanes = 8;

// The square-root loops are written with AVX intrinsics on x86 (chosen at run
// time): without -fno-math-errno, which the build does not set, GCC keeps
// std::sqrt scalar (measured 2-3x slower). Same results up to rounding order.
#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FTDFAST_DIST_AVX 1
#define FTDFAST_DIST_TARGET_AVX __attribute__((target("avx")))

FTDFAST_DIST_TARGET_AVX inline __m256d load4(const float* p) {
  return _mm256_cvtps_pd(_mm_loadu_ps(p));
}
FTDFAST_DIST_TARGET_AVX inline __m256d load4(const double* p) { return _mm256_loadu_pd(p); }

FTDFAST_DIST_TARGET_AVX inline double hsum(__m256d v) {
  alignas(32) double t[4];
  _mm256_store_pd(t, v);
  return (t[0] + t[1]) + (t[2] + t[3]);
}

bool has_avx() {
  static const bool yes = __builtin_cpu_supports("avx");
  return yes;
}
#endif

// A chunk of span `span`: entries [begin, end).
struct Chunk {
  int64_t span, begin, end;
};

std::vector<Chunk> make_chunks(const std::vector<int64_t>& numels) {
  std::vector<Chunk> chunks;
  for (int64_t s = 0; s < static_cast<int64_t>(numels.size()); ++s) {
    for (int64_t b = 0; b < numels[s]; b += kChunk) {
      chunks.push_back({s, b, std::min(numels[s], b + kChunk)});
    }
  }
  return chunks;
}

struct SumMin {
  double sum = 0.0;
  double min = std::numeric_limits<double>::infinity();

  // Folds a chunk's partial into this span's total.
  void merge(const SumMin& part) {
    sum += part.sum;
    min = std::min(min, part.min);
  }
};

// Sum and min of x[0, n) in double (NaNs reach the sum, not the min).
template <typename scalar_t>
FTDFAST_TARGET_CLONES SumMin sum_min(const scalar_t* __restrict__ x, int64_t n) {
  double s[kLanes] = {};
  double m[kLanes];
  std::fill(m, m + kLanes, std::numeric_limits<double>::infinity());
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double v = static_cast<double>(x[j + l]);
      s[l] += v;
      m[l] = v < m[l] ? v : m[l];
    }
  }
  for (; j < n; ++j) {
    const double v = static_cast<double>(x[j]);
    s[0] += v;
    m[0] = v < m[0] ? v : m[0];
  }
  SumMin r;
  for (int l = 0; l < kLanes; ++l) {
    r.sum += s[l];
    r.min = std::min(r.min, m[l]);
  }
  return r;
}

#ifdef FTDFAST_DIST_AVX
// sq_diff_of_sqrts with 4-wide AVX: two vector accumulators, then the tail.
template <typename scalar_t>
FTDFAST_DIST_TARGET_AVX double sq_diff_of_sqrts_avx(const scalar_t* __restrict__ a,
                                                    const scalar_t* __restrict__ b, int64_t n,
                                                    double rs_a, double rs_b) {
  const __m256d ia = _mm256_set1_pd(rs_a), ib = _mm256_set1_pd(rs_b);
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256d d0 = _mm256_sub_pd(_mm256_mul_pd(_mm256_sqrt_pd(load4(a + j)), ia),
                                     _mm256_mul_pd(_mm256_sqrt_pd(load4(b + j)), ib));
    const __m256d d1 = _mm256_sub_pd(_mm256_mul_pd(_mm256_sqrt_pd(load4(a + j + 4)), ia),
                                     _mm256_mul_pd(_mm256_sqrt_pd(load4(b + j + 4)), ib));
    s0 = _mm256_add_pd(s0, _mm256_mul_pd(d0, d0));
    s1 = _mm256_add_pd(s1, _mm256_mul_pd(d1, d1));
  }
  double r = hsum(_mm256_add_pd(s0, s1));
  for (; j < n; ++j) {
    const double d = std::sqrt(static_cast<double>(a[j])) * rs_a -
                     std::sqrt(static_cast<double>(b[j])) * rs_b;
    r += d * d;
  }
  return r;
}

#endif

// One pass over a chunk of both lists: their sums and minimums (for the traces
// and the sign checks) and sum_j sqrt(a[j] * b[j]) (for the Hellinger identity
// d^2 = 1 - sum_j sqrt(a[j] b[j]) / sqrt(tr_a tr_b)), all in double.
struct PairStats {
  SumMin a, b;
  double root_products = 0.0;
};

template <typename scalar_t>
PairStats pair_stats_scalar(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t n) {
  PairStats r;
  r.a = sum_min(a, n);
  r.b = sum_min(b, n);
  double g[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      g[l] += std::sqrt(static_cast<double>(a[j + l]) * static_cast<double>(b[j + l]));
    }
  }
  for (; j < n; ++j) {
    g[0] += std::sqrt(static_cast<double>(a[j]) * static_cast<double>(b[j]));
  }
  for (int l = 0; l < kLanes; ++l) {
    r.root_products += g[l];
  }
  return r;
}

#ifdef FTDFAST_DIST_AVX
FTDFAST_DIST_TARGET_AVX inline double hmin(__m256d v) {
  alignas(32) double t[4];
  _mm256_store_pd(t, v);
  return std::min(std::min(t[0], t[1]), std::min(t[2], t[3]));
}

// pair_stats with 4-wide AVX (float inputs are widened to double first).
template <typename scalar_t>
FTDFAST_DIST_TARGET_AVX PairStats pair_stats_avx(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b,
                                                 int64_t n) {
  const __m256d inf = _mm256_set1_pd(std::numeric_limits<double>::infinity());
  __m256d sa = _mm256_setzero_pd(), sb = _mm256_setzero_pd(), g = _mm256_setzero_pd();
  __m256d ma = inf, mb = inf;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const __m256d va = load4(a + j), vb = load4(b + j);
    sa = _mm256_add_pd(sa, va);
    sb = _mm256_add_pd(sb, vb);
    ma = _mm256_min_pd(va, ma);  // a NaN in va keeps ma: NaNs reach the sum, not the min
    mb = _mm256_min_pd(vb, mb);
    g = _mm256_add_pd(g, _mm256_sqrt_pd(_mm256_mul_pd(va, vb)));
  }
  PairStats r = pair_stats_scalar(a + j, b + j, n - j);
  r.a.sum += hsum(sa);
  r.b.sum += hsum(sb);
  r.a.min = std::min(r.a.min, hmin(ma));
  r.b.min = std::min(r.b.min, hmin(mb));
  r.root_products += hsum(g);
  return r;
}
#endif

template <typename scalar_t>
PairStats pair_stats(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t n) {
#ifdef FTDFAST_DIST_AVX
  if (has_avx()) {
    return pair_stats_avx(a, b, n);
  }
#endif
  return pair_stats_scalar(a, b, n);
}

// sum_j (sqrt(a[j]) rs_a - sqrt(b[j]) rs_b)^2 over [0, n), in double, with
// rs = 1 / sqrt(trace): each input is normalized by its own trace before any
// product of the two, and 1 / sqrt(trace) is finite for every positive double
// trace (1 / trace overflows below a trace of ~5.6e-309).
template <typename scalar_t>
double sq_diff_of_sqrts(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t n,
                        double rs_a, double rs_b) {
#ifdef FTDFAST_DIST_AVX
  if (has_avx()) {
    return sq_diff_of_sqrts_avx(a, b, n, rs_a, rs_b);
  }
#endif
  double s[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double d = std::sqrt(static_cast<double>(a[j + l])) * rs_a -
                       std::sqrt(static_cast<double>(b[j + l])) * rs_b;
      s[l] += d * d;
    }
  }
  for (; j < n; ++j) {
    const double d = std::sqrt(static_cast<double>(a[j])) * rs_a -
                     std::sqrt(static_cast<double>(b[j])) * rs_b;
    s[0] += d * d;
  }
  double r = 0.0;
  for (int l = 0; l < kLanes; ++l) {
    r += s[l];
  }
  return r;
}

// Sum and min of each span (data[s], numel[s]): all chunks of all spans in
// one parallel_for, partials combined in chunk order (deterministic).
template <typename scalar_t>
std::vector<SumMin> sum_min_per_span(const std::vector<const scalar_t*>& data,
                                     const std::vector<int64_t>& numel) {
  const auto chunks = make_chunks(numel);
  std::vector<SumMin> partial(chunks.size());
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const Chunk& ch = chunks[c];
      partial[c] = sum_min(data[ch.span] + ch.begin, ch.end - ch.begin);
    }
  });
  std::vector<SumMin> out(numel.size());
  for (size_t c = 0; c < chunks.size(); ++c) {
    out[chunks[c].span].merge(partial[c]);
  }
  return out;
}

// The trace of one list from its per-tensor sums and minimums, after the checks.
double check_trace(const std::vector<SumMin>& per_tensor, const char* list_name) {
  double trace = 0.0;
  for (size_t k = 0; k < per_tensor.size(); ++k) {
    TORCH_CHECK(per_tensor[k].min >= 0.0, "ftdfast: ", list_name, "[", k,
                "] has a negative entry (min ", per_tensor[k].min,
                "); a Fisher diagonal must be non-negative");
    trace += per_tensor[k].sum;
  }
  TORCH_CHECK(std::isfinite(trace), "ftdfast: ", list_name,
              " has NaN or infinite entries (trace ", trace, ")");
  TORCH_CHECK(trace > 0.0, "ftdfast: ", list_name,
              " is all zeros (trace 0); a Fisher diagonal must have a positive trace");
  return trace;
}

// Below this d^2 the one-pass value (1 - inner product) is replaced by pass 2:
// the inner product carries a relative error of ~1e-16 x sqrt(P), so d^2 >= 1e-2
// keeps d accurate to ~1e-13 relative.
constexpr double kOnePassMinD2 = 1e-2;

// Pass 1 multiplies raw entries (sqrt(a_j b_j), or sqrt(a_j) sqrt(b_j) in the
// matrix pass) before normalizing. Each such product is at most
// s^2 = tr_a tr_b (resp. s), so with s = sqrt(tr_a) sqrt(tr_b) in
// [kRawMinScale, kRawMaxScale] no product overflows and every product that
// matters (>= 1e-30 of s, resp. s^2) stays above the smallest normal double
// (2.2e-308). Outside (Fishers scaled by ~1e-100 or ~1e+150, e.g. float64
// Fishers of tiny losses), the raw products lose digits to subnormals or
// overflow: the pair is then computed by pass 2, which normalizes each input
// by its own trace first. float32 inputs (widened to double) are always inside.
constexpr double kRawMinScale = 1e-100;
constexpr double kRawMaxScale = 1e+150;

bool raw_products_in_range(double tr_a, double tr_b) {
  const double s = std::sqrt(tr_a) * std::sqrt(tr_b);
  return s >= kRawMinScale && s <= kRawMaxScale;
}

at::Tensor fisher_distance_cpu(at::TensorList f_a, at::TensorList f_b) {
  const auto p = make_fisher_distance_params(f_a, f_b);
  for (int64_t k = 0; k < p.tensors; ++k) {
    FTDFAST_CHECK_DEVICE_TYPE(f_a[k], "f_a[" + std::to_string(k) + "]", at::kCPU);
    FTDFAST_CHECK_DEVICE_TYPE(f_b[k], "f_b[" + std::to_string(k) + "]", at::kCPU);
  }
  // Detached and contiguous (a copy only for a non-contiguous tensor); only
  // raw pointers are used inside parallel_for.
  std::vector<at::Tensor> a(p.tensors), b(p.tensors);
  std::vector<int64_t> numel(p.tensors);
  for (int64_t k = 0; k < p.tensors; ++k) {
    a[k] = f_a[k].detach().contiguous();
    b[k] = f_b[k].detach().contiguous();
    numel[k] = a[k].numel();
  }
  double d2 = 0.0;
  AT_DISPATCH_FLOATING_TYPES(a[0].scalar_type(), "ftdfast_fisher_distance", [&] {
    std::vector<const scalar_t*> pa(p.tensors), pb(p.tensors);
    for (int64_t k = 0; k < p.tensors; ++k) {
      pa[k] = a[k].const_data_ptr<scalar_t>();
      pb[k] = b[k].const_data_ptr<scalar_t>();
    }
    // Pass 1: traces, sign checks and the Hellinger inner product, in one read.
    const auto chunks = make_chunks(numel);
    std::vector<PairStats> stats(chunks.size());
    at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
      for (int64_t c = begin; c < end; ++c) {
        const Chunk& ch = chunks[c];
        stats[c] = pair_stats(pa[ch.span] + ch.begin, pb[ch.span] + ch.begin, ch.end - ch.begin);
      }
    });
    std::vector<SumMin> per_a(p.tensors), per_b(p.tensors);
    double root_products = 0.0;
    for (size_t c = 0; c < chunks.size(); ++c) {
      per_a[chunks[c].span].merge(stats[c].a);
      per_b[chunks[c].span].merge(stats[c].b);
      root_products += stats[c].root_products;
    }
    const double tr_a = check_trace(per_a, "f_a"), tr_b = check_trace(per_b, "f_b");
    // d^2 = 1 - <sqrt p_a, sqrt p_b>: exact up to rounding, but for close Fishers
    // (d^2 < kOnePassMinD2) the subtraction cancels digits; pass 2 then sums the
    // squared differences of the square roots directly.
    d2 = 1.0 - root_products / (std::sqrt(tr_a) * std::sqrt(tr_b));
    if (!(d2 >= kOnePassMinD2) || !raw_products_in_range(tr_a, tr_b)) {
      const double rs_a = 1.0 / std::sqrt(tr_a), rs_b = 1.0 / std::sqrt(tr_b);
      std::vector<double> partial(chunks.size());
      at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          const Chunk& ch = chunks[c];
          partial[c] = sq_diff_of_sqrts(pa[ch.span] + ch.begin, pb[ch.span] + ch.begin,
                                        ch.end - ch.begin, rs_a, rs_b);
        }
      });
      d2 = 0.0;
      for (const double v : partial) {
        d2 += v;
      }
      d2 *= 0.5;
    }
  });
  // Rounding can only push d^2 slightly below 0 or d slightly above 1; NaN passes.
  const double d = std::isnan(d2) ? d2 : std::min(1.0, std::sqrt(std::max(0.0, d2)));
  return at::scalar_tensor(d, a[0].options());
}

// Entries of a block of the matrix pass: R + C square-rooted rows of this
// length (double) stay in L2 while the R x C inner products run over them.
constexpr int64_t kBlock = 2048;

// out[j] = sqrt(x[j]) in double over [0, n), and x's sum and min (for the
// traces and the sign checks) from the same read. The square root is taken in
// the input's precision (float inputs: a relative error of about 6e-8 per root,
// far inside what a float Fisher holds); products and sums are in double. This
// is the portable version (and the tail of the vector ones).
template <typename scalar_t>
SumMin sqrt_sum_min_scalar(double* __restrict__ out, const scalar_t* __restrict__ x, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    out[j] = static_cast<double>(std::sqrt(x[j]));
  }
  return sum_min(x, n);
}

#ifdef FTDFAST_DIST_AVX
// 8 square roots at once. With FMA: the 12-bit reciprocal square root refined by
// one Newton step on sqrt (y + (v - y^2) r / 2), within about 1 ulp of the
// correctly rounded root, in a third of the time of vsqrtps; lanes at 0 give 0,
// and a vector with a subnormal entry (where the estimate is not defined) takes
// vsqrtps. Infinite and NaN entries are refused by the caller's sum check.
#define FTDFAST_DIST_TARGET_FMA __attribute__((target("avx2,fma")))

bool has_fma() {
  static const bool yes = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return yes;
}

FTDFAST_DIST_TARGET_FMA inline __m256 sqrt_ps(__m256 v) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 tiny = _mm256_cmp_ps(v, _mm256_set1_ps(std::numeric_limits<float>::min()), _CMP_LT_OQ);
  const __m256 is_zero = _mm256_cmp_ps(v, zero, _CMP_EQ_OQ);
  if (_mm256_movemask_ps(_mm256_andnot_ps(is_zero, tiny)) != 0) {
    return _mm256_sqrt_ps(v);
  }
  const __m256 r = _mm256_rsqrt_ps(v);
  const __m256 y = _mm256_mul_ps(v, r);
  const __m256 e = _mm256_fnmadd_ps(y, y, v);
  const __m256 root = _mm256_fmadd_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), r), e, y);
  return _mm256_blendv_ps(root, zero, is_zero);
}

// The float version of sqrt_sum_min (AVX2 and FMA).
FTDFAST_DIST_TARGET_FMA SumMin sqrt_sum_min_avx(double* __restrict__ out, const float* __restrict__ x, int64_t n) {
  const __m256 inf = _mm256_set1_ps(std::numeric_limits<float>::infinity());
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  __m256 m = inf;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    // The next block of this vector (the matrix pass reads R + C vectors a block at a
    // time: without this, the hardware prefetcher restarts on every block).
    _mm_prefetch(reinterpret_cast<const char*>(x + j + kBlock), _MM_HINT_T0);
    const __m256 v = _mm256_loadu_ps(x + j);
    s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    m = _mm256_min_ps(v, m);  // a NaN in v keeps m: NaNs reach the sum, not the min
    const __m256 r = sqrt_ps(v);
    _mm256_storeu_pd(out + j, _mm256_cvtps_pd(_mm256_castps256_ps128(r)));
    _mm256_storeu_pd(out + j + 4, _mm256_cvtps_pd(_mm256_extractf128_ps(r, 1)));
  }
  SumMin tail = sqrt_sum_min_scalar(out + j, x + j, n - j);
  alignas(32) float mv[8];
  _mm256_store_ps(mv, m);
  for (const float v : mv) {
    tail.min = std::min(tail.min, static_cast<double>(v));
  }
  tail.sum += hsum(_mm256_add_pd(s0, s1));
  return tail;
}

// The float version of sqrt_sum_min with AVX-512: 16 entries per step, the
// 14-bit reciprocal square root refined by the same Newton step (within about
// 1 ulp), zeros through a mask; a vector with a subnormal entry takes the
// correctly rounded vsqrtps.
bool has_avx512() {
  static const bool yes = __builtin_cpu_supports("avx512f");
  return yes;
}

__attribute__((target("avx512f"))) SumMin sqrt_sum_min_avx512(double* __restrict__ out,
                                                               const float* __restrict__ x, int64_t n) {
  const __m512 zero = _mm512_setzero_ps(), half = _mm512_set1_ps(0.5f);
  const __m512 tiny = _mm512_set1_ps(std::numeric_limits<float>::min());
  __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
  __m512 m = _mm512_set1_ps(std::numeric_limits<float>::infinity());
  int64_t j = 0;
  for (; j + 16 <= n; j += 16) {
    _mm_prefetch(reinterpret_cast<const char*>(x + j + kBlock), _MM_HINT_T0);
    const __m512 v = _mm512_loadu_ps(x + j);
    s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
    m = _mm512_min_ps(v, m);  // a NaN in v keeps m: NaNs reach the sum, not the min
    const __mmask16 is_zero = _mm512_cmp_ps_mask(v, zero, _CMP_EQ_OQ);
    const __mmask16 subnormal = _mm512_cmp_ps_mask(v, tiny, _CMP_LT_OQ) & ~is_zero;
    __m512 root;
    if (subnormal != 0) {
      root = _mm512_sqrt_ps(v);
    } else {
      const __m512 r = _mm512_rsqrt14_ps(v);
      const __m512 y = _mm512_mul_ps(v, r);
      const __m512 e = _mm512_fnmadd_ps(y, y, v);
      root = _mm512_mask_mov_ps(_mm512_fmadd_ps(_mm512_mul_ps(half, r), e, y), is_zero, zero);
    }
    _mm512_storeu_pd(out + j, _mm512_cvtps_pd(_mm512_castps512_ps256(root)));
    _mm512_storeu_pd(out + j + 8,
                     _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(root), 1))));
  }
  SumMin tail = sqrt_sum_min_scalar(out + j, x + j, n - j);
  tail.sum += _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
  tail.min = std::min(tail.min, static_cast<double>(_mm512_reduce_min_ps(m)));
  return tail;
}

FTDFAST_DIST_TARGET_AVX SumMin sqrt_sum_min_avx(double* __restrict__ out, const double* __restrict__ x, int64_t n) {
  const __m256d inf = _mm256_set1_pd(std::numeric_limits<double>::infinity());
  __m256d s = _mm256_setzero_pd(), m = inf;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    _mm_prefetch(reinterpret_cast<const char*>(x + j + kBlock), _MM_HINT_T0);
    const __m256d v = _mm256_loadu_pd(x + j);
    s = _mm256_add_pd(s, v);
    m = _mm256_min_pd(v, m);
    _mm256_storeu_pd(out + j, _mm256_sqrt_pd(v));
  }
  SumMin tail = sqrt_sum_min_scalar(out + j, x + j, n - j);
  tail.sum += hsum(s);
  tail.min = std::min(tail.min, hmin(m));
  return tail;
}
#endif

template <typename scalar_t>
SumMin sqrt_sum_min(double* __restrict__ out, const scalar_t* __restrict__ x, int64_t n) {
#ifdef FTDFAST_DIST_AVX
  if constexpr (std::is_same_v<scalar_t, float>) {
    if (has_avx512()) {
      return sqrt_sum_min_avx512(out, x, n);
    }
  }
  if (std::is_same_v<scalar_t, float> ? has_fma() : has_avx()) {
    return sqrt_sum_min_avx(out, x, n);
  }
#endif
  return sqrt_sum_min_scalar(out, x, n);
}

// acc[r * ldc + c] += <x_r, y_c> for a TR x TC tile of (row, column) pairs over
// n entries: every loaded vector of roots feeds TC (or TR) multiply-adds from
// registers, instead of one dot product re-reading both vectors per pair.
// 64-byte GCC vectors, lowered per target_clones ISA (one zmm with AVX-512,
// two ymm with AVX2); the order of every sum is fixed.
template <int TR, int TC>
FTDFAST_TARGET_CLONES void tile_products(double* acc, int64_t ldc, const double* const* x, const double* const* y,
                                         int64_t n) {
  typedef double V __attribute__((vector_size(64)));
  constexpr int64_t L = 64 / sizeof(double);
  auto load = [](const double* p) {
    V v;
    std::memcpy(&v, p, sizeof(V));
    return v;
  };
  V s[TR][TC] = {};
  int64_t j = 0;
  for (; j + L <= n; j += L) {
    V yc[TC];
    for (int c = 0; c < TC; ++c) {
      yc[c] = load(y[c] + j);
    }
    for (int r = 0; r < TR; ++r) {
      const V xr = load(x[r] + j);
      for (int c = 0; c < TC; ++c) {
        s[r][c] += xr * yc[c];
      }
    }
  }
  for (int r = 0; r < TR; ++r) {
    for (int c = 0; c < TC; ++c) {
      double t = 0.0;
      for (int64_t l = 0; l < L; ++l) {
        t += s[r][c][l];
      }
      for (int64_t k = j; k < n; ++k) {
        t += x[r][k] * y[c][k];
      }
      acc[r * ldc + c] += t;
    }
  }
}

template <int TR>
void tile_products_rows(double* acc, int64_t ldc, const double* const* x, const double* const* y, int64_t tc,
                        int64_t n) {
  switch (tc) {
    case 1: return tile_products<TR, 1>(acc, ldc, x, y, n);
    case 2: return tile_products<TR, 2>(acc, ldc, x, y, n);
    case 3: return tile_products<TR, 3>(acc, ldc, x, y, n);
    default: return tile_products<TR, 4>(acc, ldc, x, y, n);
  }
}

// acc[r * C + c] += <x_r, y_c> over a block of `len` square roots for all R x C
// pairs; the roots of vector v start at v * kBlock of x (rows) and y (columns).
// Tiles of up to 4 x 4 pairs (16 accumulators: registers with AVX-512).
void block_products(double* acc, const double* x, const double* y, int64_t R, int64_t C, int64_t len) {
  constexpr int64_t kTileR = 4, kTileC = 4;
  for (int64_t r0 = 0; r0 < R; r0 += kTileR) {
    for (int64_t c0 = 0; c0 < C; c0 += kTileC) {
      const int64_t tr = std::min(kTileR, R - r0), tc = std::min(kTileC, C - c0);
      const double* xs[kTileR];
      const double* ys[kTileC];
      for (int64_t r = 0; r < tr; ++r) {
        xs[r] = x + (r0 + r) * kBlock;
      }
      for (int64_t c = 0; c < tc; ++c) {
        ys[c] = y + (c0 + c) * kBlock;
      }
      double* a = acc + r0 * C + c0;
      switch (tr) {
        case 1: tile_products_rows<1>(a, C, xs, ys, tc, len); break;
        case 2: tile_products_rows<2>(a, C, xs, ys, tc, len); break;
        case 3: tile_products_rows<3>(a, C, xs, ys, tc, len); break;
        default: tile_products_rows<4>(a, C, xs, ys, tc, len); break;
      }
    }
  }
}

// What the single pass over both matrices gives: each row's and column's sum
// and min, and the raw Hellinger products G[r, c] = sum_k sqrt(rows[r, k] cols[c, k]).
struct MatrixPass {
  std::vector<SumMin> rows, cols;
  std::vector<double> products;  // (R, C) row-major
};

// One read of both matrices, block by block: every block square-roots a block
// of each row and column into an in-cache buffer and forms all R x C inner
// products on it (a GEMM of the square roots that is never materialised:
// memory-bandwidth bound for the usual few rows). Never an (R, P) copy. Each
// group of blocks owns a slot of partials; slots are merged in order, so the
// result does not depend on the thread count.
template <typename scalar_t>
MatrixPass matrix_pass(const scalar_t* rows, const scalar_t* cols, bool same, int64_t R, int64_t C, int64_t P) {
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  // at most ~256 slots: bounded memory (256 (R C + R + C) partials) and enough work items per thread
  const int64_t per_slot = std::max<int64_t>(1, (blocks + 255) / 256);
  const int64_t slots = (blocks + per_slot - 1) / per_slot;
  const int64_t vectors = same ? R : R + C;
  std::vector<double> products(static_cast<size_t>(slots * R * C), 0.0);
  std::vector<SumMin> stats(static_cast<size_t>(slots * vectors));
  at::parallel_for(0, slots, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> roots(static_cast<size_t>(vectors * kBlock));
    const double* col_roots = roots.data() + (same ? 0 : R * kBlock);
    for (int64_t slot = begin; slot < end; ++slot) {
      double* acc = products.data() + slot * R * C;
      SumMin* st = stats.data() + slot * vectors;
      const int64_t b_end = std::min(blocks, (slot + 1) * per_slot);
      for (int64_t blk = slot * per_slot; blk < b_end; ++blk) {
        const int64_t k0 = blk * kBlock, len = std::min(P, k0 + kBlock) - k0;
        for (int64_t v = 0; v < vectors; ++v) {
          const scalar_t* src = v < R ? rows + v * P + k0 : cols + (v - R) * P + k0;
          st[v].merge(sqrt_sum_min(roots.data() + v * kBlock, src, len));
        }
        block_products(acc, roots.data(), col_roots, R, C, len);
      }
    }
  });
  MatrixPass out;
  out.rows.resize(static_cast<size_t>(R));
  out.cols.resize(static_cast<size_t>(same ? 0 : C));
  out.products.assign(static_cast<size_t>(R * C), 0.0);
  for (int64_t slot = 0; slot < slots; ++slot) {
    for (int64_t i = 0; i < R * C; ++i) {
      out.products[i] += products[static_cast<size_t>(slot * R * C + i)];
    }
    for (int64_t v = 0; v < vectors; ++v) {
      (v < R ? out.rows[v] : out.cols[v - R]).merge(stats[static_cast<size_t>(slot * vectors + v)]);
    }
  }
  if (same) {
    out.cols = out.rows;
  }
  return out;
}

// The checked trace of each row of one argument; `name` ("rows" / "cols")
// names the argument in the messages.
std::vector<double> checked_sums(const std::vector<SumMin>& per_row, const char* name) {
  std::vector<double> sums(per_row.size());
  for (size_t r = 0; r < per_row.size(); ++r) {
    TORCH_CHECK(per_row[r].min >= 0.0, "ftdfast: ", name, "[", r, "] has a negative entry (min ",
                per_row[r].min, "); a Fisher diagonal must be non-negative");
    TORCH_CHECK(std::isfinite(per_row[r].sum), "ftdfast: ", name, "[", r,
                "] has NaN or infinite entries (sum ", per_row[r].sum, ")");
    TORCH_CHECK(per_row[r].sum > 0.0, "ftdfast: ", name, "[", r,
                "] is all zeros; a Fisher diagonal must have a positive trace");
    sums[r] = per_row[r].sum;
  }
  return sums;
}

// d^2 of one pair from its definition, 0.5 sum_k (sqrt(a_k) rs_a - sqrt(b_k) rs_b)^2,
// in chunks run in parallel and summed in order: the cancellation-free value.
template <typename scalar_t>
double exact_d2(const scalar_t* a, const scalar_t* b, int64_t P, double rs_a, double rs_b) {
  const auto chunks = make_chunks({P});
  std::vector<double> partial(chunks.size());
  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      partial[c] = sq_diff_of_sqrts(a + chunks[c].begin, b + chunks[c].begin, chunks[c].end - chunks[c].begin,
                                    rs_a, rs_b);
    }
  });
  double d2 = 0.0;
  for (const double v : partial) {
    d2 += v;
  }
  return 0.5 * d2;
}

at::Tensor fisher_distance_matrix_cpu(const at::Tensor& rows_in, const at::Tensor& cols_in) {
  const auto p = make_fisher_distance_matrix_params(rows_in, cols_in);
  FTDFAST_CHECK_DEVICE_TYPE(rows_in, "rows", at::kCPU);
  FTDFAST_CHECK_DEVICE_TYPE(cols_in, "cols", at::kCPU);
  if (p.r == 0 || p.c == 0) {
    return at::empty({p.r, p.c}, rows_in.options());
  }
  // Detached: worker threads of at::parallel_for do not inherit the caller's
  // below-autograd dispatch state (only raw pointers are used there anyway).
  const auto rows = rows_in.detach().contiguous();
  // The same tensor on both sides (all pairs within one set): square roots once.
  const bool same = cols_in.is_same(rows_in);
  const auto cols = same ? rows : cols_in.detach().contiguous();
  auto d = at::empty({p.r, p.c}, at::TensorOptions().dtype(at::kDouble));
  double* out = d.data_ptr<double>();
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "ftdfast_fisher_distance_matrix", [&] {
    const scalar_t* r = rows.const_data_ptr<scalar_t>();
    const scalar_t* c = cols.const_data_ptr<scalar_t>();
    const MatrixPass pass = matrix_pass(r, c, same, p.r, p.c, p.p);
    const auto sum_r = checked_sums(pass.rows, "rows");
    const auto sum_c = same ? sum_r : checked_sums(pass.cols, "cols");
    for (int64_t i = 0; i < p.r; ++i) {
      for (int64_t j = 0; j < p.c; ++j) {
        // d^2 = 1 - <sqrt p, sqrt q> (the Hellinger identity), exact up to rounding;
        // for close pairs (d^2 < kOnePassMinD2) that subtraction cancels digits, and
        // the pair's d^2 is summed from its definition instead (one more read of two rows).
        double d2 = 1.0 - pass.products[i * p.c + j] / (std::sqrt(sum_r[i]) * std::sqrt(sum_c[j]));
        if (same && i == j) {
          d2 = 0.0;
        } else if (!(d2 >= kOnePassMinD2) || !raw_products_in_range(sum_r[i], sum_c[j])) {
          d2 = exact_d2(r + i * p.p, c + j * p.p, p.p, 1.0 / std::sqrt(sum_r[i]), 1.0 / std::sqrt(sum_c[j]));
        }
        out[i * p.c + j] = std::sqrt(std::min(1.0, std::max(0.0, d2)));
      }
    }
  });
  return d.to(rows_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(ftdfast, CPU, m) {
  m.impl("fisher_distance", &fisher_distance_cpu);
  m.impl("fisher_distance_matrix", &fisher_distance_matrix_cpu);
}

}  // namespace ftdfast::cpu
