// CPU kernels for ftdfast::fisher_distance and ftdfast::fisher_distance_matrix.
//
// fisher_distance: f_a, f_b lists of per-parameter Fisher diagonals ->
//   d = || sqrt(f_a / tr f_a) - sqrt(f_b / tr f_b) ||_2 / sqrt(2)
// with no concatenated copy:
//   pass 1: the two traces, each tensor's min (sign check) and sum_j sqrt(a_j b_j),
//           which gives d^2 = 1 - sum_j sqrt(a_j b_j) / sqrt(tr_a tr_b) in one read;
//   pass 2, only for close Fishers (d^2 < 1e-2, where that subtraction cancels
//           digits): the fused sum of (sqrt(a / tr_a) - sqrt(b / tr_b))^2.
// Each pass cuts every tensor into chunks and runs all chunks with one
// at::parallel_for; a chunk's double partial goes to its own slot and slots
// are summed in order, so the result does not depend on the thread count.
//
// fisher_distance_matrix: rows (R, P), cols (C, P) -> D (R, C) with
//   D[r, c] = sqrt(1 - <sqrt(p_r), sqrt(q_c)>),  p_r = rows[r] / sum(rows[r]),
// (the Hellinger identity), clamped to [0, 1]: one pass for the row sums, then
// one blocked pass that square-roots a block of every row and column in cache
// and forms all R x C inner products on it (a GEMM of the square roots that is
// never materialised: memory-bandwidth bound for the usual few rows).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
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
#include "ftdfast/params.h"

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
                                                    double inv_a, double inv_b) {
  const __m256d ia = _mm256_set1_pd(inv_a), ib = _mm256_set1_pd(inv_b);
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256d d0 = _mm256_sub_pd(_mm256_sqrt_pd(_mm256_mul_pd(load4(a + j), ia)),
                                     _mm256_sqrt_pd(_mm256_mul_pd(load4(b + j), ib)));
    const __m256d d1 = _mm256_sub_pd(_mm256_sqrt_pd(_mm256_mul_pd(load4(a + j + 4), ia)),
                                     _mm256_sqrt_pd(_mm256_mul_pd(load4(b + j + 4), ib)));
    s0 = _mm256_add_pd(s0, _mm256_mul_pd(d0, d0));
    s1 = _mm256_add_pd(s1, _mm256_mul_pd(d1, d1));
  }
  double r = hsum(_mm256_add_pd(s0, s1));
  for (; j < n; ++j) {
    const double d = std::sqrt(static_cast<double>(a[j]) * inv_a) -
                     std::sqrt(static_cast<double>(b[j]) * inv_b);
    r += d * d;
  }
  return r;
}

// sqrt_scaled with 4-wide AVX.
template <typename scalar_t>
FTDFAST_DIST_TARGET_AVX void sqrt_scaled_avx(double* __restrict__ out, const scalar_t* __restrict__ x,
                                             int64_t n, double inv) {
  const __m256d iv = _mm256_set1_pd(inv);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    _mm256_storeu_pd(out + j, _mm256_sqrt_pd(_mm256_mul_pd(load4(x + j), iv)));
  }
  for (; j < n; ++j) {
    out[j] = std::sqrt(static_cast<double>(x[j]) * inv);
  }
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

// sum_j (sqrt(a[j] * inv_a) - sqrt(b[j] * inv_b))^2 over [0, n), in double.
template <typename scalar_t>
double sq_diff_of_sqrts(const scalar_t* __restrict__ a, const scalar_t* __restrict__ b, int64_t n,
                        double inv_a, double inv_b) {
#ifdef FTDFAST_DIST_AVX
  if (has_avx()) {
    return sq_diff_of_sqrts_avx(a, b, n, inv_a, inv_b);
  }
#endif
  double s[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      const double d = std::sqrt(static_cast<double>(a[j + l]) * inv_a) -
                       std::sqrt(static_cast<double>(b[j + l]) * inv_b);
      s[l] += d * d;
    }
  }
  for (; j < n; ++j) {
    const double d = std::sqrt(static_cast<double>(a[j]) * inv_a) -
                     std::sqrt(static_cast<double>(b[j]) * inv_b);
    s[0] += d * d;
  }
  double r = 0.0;
  for (int l = 0; l < kLanes; ++l) {
    r += s[l];
  }
  return r;
}

// out[j] = sqrt(x[j] * inv) over [0, n), in double.
template <typename scalar_t>
void sqrt_scaled(double* __restrict__ out, const scalar_t* __restrict__ x, int64_t n, double inv) {
#ifdef FTDFAST_DIST_AVX
  if (has_avx()) {
    return sqrt_scaled_avx(out, x, n, inv);
  }
#endif
  for (int64_t j = 0; j < n; ++j) {
    out[j] = std::sqrt(static_cast<double>(x[j]) * inv);
  }
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
    if (!(d2 >= kOnePassMinD2)) {
      const double inv_a = 1.0 / tr_a, inv_b = 1.0 / tr_b;
      std::vector<double> partial(chunks.size());
      at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          const Chunk& ch = chunks[c];
          partial[c] = sq_diff_of_sqrts(pa[ch.span] + ch.begin, pb[ch.span] + ch.begin,
                                        ch.end - ch.begin, inv_a, inv_b);
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

// 1 / sum(m[r]) for each row of a contiguous (n, P) matrix, after the value
// checks; `name` ("rows" / "cols") names the argument in the messages.
template <typename scalar_t>
std::vector<double> inverse_row_sums(const scalar_t* x, int64_t n, int64_t P, const char* name) {
  std::vector<const scalar_t*> data(n);
  std::vector<int64_t> numel(n, P);
  for (int64_t r = 0; r < n; ++r) {
    data[r] = x + r * P;
  }
  const auto per_row = sum_min_per_span(data, numel);
  std::vector<double> inv(n);
  for (int64_t r = 0; r < n; ++r) {
    TORCH_CHECK(per_row[r].min >= 0.0, "ftdfast: ", name, "[", r, "] has a negative entry (min ",
                per_row[r].min, "); a Fisher diagonal must be non-negative");
    TORCH_CHECK(std::isfinite(per_row[r].sum), "ftdfast: ", name, "[", r,
                "] has NaN or infinite entries (sum ", per_row[r].sum, ")");
    TORCH_CHECK(per_row[r].sum > 0.0, "ftdfast: ", name, "[", r,
                "] is all zeros; a Fisher diagonal must have a positive trace");
    inv[r] = 1.0 / per_row[r].sum;
  }
  return inv;
}

// Entries of a block of the matrix pass: R + C square-rooted rows of this
// length (double) stay in L2 while the R x C inner products run over them.
constexpr int64_t kBlock = 2048;

// <x, y> over n doubles with independent accumulators (vectorisable, fixed order).
FTDFAST_TARGET_CLONES double dot(const double* __restrict__ x, const double* __restrict__ y, int64_t n) {
  double s[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) {
      s[l] += x[j + l] * y[j + l];
    }
  }
  for (; j < n; ++j) {
    s[0] += x[j] * y[j];
  }
  double r = 0.0;
  for (int l = 0; l < kLanes; ++l) {
    r += s[l];
  }
  return r;
}

// G[r, c] = sum_k sqrt(rows[r, k] * inv_r[r]) * sqrt(cols[c, k] * inv_c[c]) in one
// pass over both matrices, block by block: never an (R, P) or (C, P) copy. Each
// group of blocks owns a slot of R x C partial sums; slots are added in order, so
// the result does not depend on the thread count.
template <typename scalar_t>
at::Tensor hellinger_products(const scalar_t* rows, const scalar_t* cols, bool same, int64_t R, int64_t C,
                              int64_t P, const std::vector<double>& inv_r, const std::vector<double>& inv_c) {
  const int64_t blocks = (P + kBlock - 1) / kBlock;
  // at most ~256 slots: bounded memory (256 R C doubles) and enough work items per thread
  const int64_t per_slot = std::max<int64_t>(1, (blocks + 255) / 256);
  const int64_t slots = (blocks + per_slot - 1) / per_slot;
  std::vector<double> partial(static_cast<size_t>(slots * R * C), 0.0);
  at::parallel_for(0, slots, 1, [&](int64_t begin, int64_t end) {
    std::vector<double> sr(static_cast<size_t>(R * kBlock)), sc;
    if (!same) {
      sc.resize(static_cast<size_t>(C * kBlock));
    }
    for (int64_t slot = begin; slot < end; ++slot) {
      double* acc = partial.data() + slot * R * C;
      const int64_t b_end = std::min(blocks, (slot + 1) * per_slot);
      for (int64_t blk = slot * per_slot; blk < b_end; ++blk) {
        const int64_t k0 = blk * kBlock, len = std::min(P, k0 + kBlock) - k0;
        for (int64_t r = 0; r < R; ++r) {
          sqrt_scaled(sr.data() + r * kBlock, rows + r * P + k0, len, inv_r[r]);
        }
        const double* scp = sr.data();
        if (!same) {
          for (int64_t c = 0; c < C; ++c) {
            sqrt_scaled(sc.data() + c * kBlock, cols + c * P + k0, len, inv_c[c]);
          }
          scp = sc.data();
        }
        for (int64_t r = 0; r < R; ++r) {
          for (int64_t c = 0; c < C; ++c) {
            acc[r * C + c] += dot(sr.data() + r * kBlock, scp + c * kBlock, len);
          }
        }
      }
    }
  });
  auto g = at::zeros({R, C}, at::TensorOptions().dtype(at::kDouble));
  double* out = g.data_ptr<double>();
  for (int64_t slot = 0; slot < slots; ++slot) {
    for (int64_t i = 0; i < R * C; ++i) {
      out[i] += partial[static_cast<size_t>(slot * R * C + i)];
    }
  }
  return g;
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
  at::Tensor g;
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "ftdfast_fisher_distance_matrix", [&] {
    const scalar_t* r = rows.const_data_ptr<scalar_t>();
    const scalar_t* c = cols.const_data_ptr<scalar_t>();
    const auto inv_r = inverse_row_sums(r, p.r, p.p, "rows");
    const auto inv_c = same ? inv_r : inverse_row_sums(c, p.c, p.p, "cols");
    g = hellinger_products(r, c, same, p.r, p.c, p.p, inv_r, inv_c);
  });
  // d^2 = 1 - <sqrt p, sqrt q>; the inner product is in [0, 1] up to rounding.
  return g.neg_().add_(1.0).clamp_(0.0, 1.0).sqrt_().to(rows_in.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(ftdfast, CPU, m) {
  m.impl("fisher_distance", &fisher_distance_cpu);
  m.impl("fisher_distance_matrix", &fisher_distance_matrix_cpu);
}

}  // namespace ftdfast::cpu
