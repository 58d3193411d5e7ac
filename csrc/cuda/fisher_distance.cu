// CUDA kernels for ftdfast::fisher_distance and the element-wise part of
// ftdfast::fisher_distance_matrix (no torch headers; launched by
// csrc/cuda/fisher_distance_glue.cpp).
//
// fisher_distance: f_a, f_b lists of per-parameter Fisher diagonals ->
//   d = || sqrt(f_a / tr f_a) - sqrt(f_b / tr f_b) ||_2 / sqrt(2)
// in two passes over the tensors, read in place through a table of pointers
// (no concatenated copy). Every tensor is cut into chunks of kFisherChunk
// entries and each pass runs one block per chunk (of any tensor: a block
// finds its tensor by binary search in the table):
//   pass 1: per chunk the sums and mins of f_a and f_b;
//   pass 2: per chunk the sum of (sqrt(a) / sqrt(tr_a) - sqrt(b) / sqrt(tr_b))^2
//           (no product of raw entries: Fishers scaled by 1e-200 or 1e+150
//           give the distance of the unscaled ones).
// Each block writes its partial to its own slot; the last block of a pass to
// finish (a counter, after a memory fence) reduces all slots in a fixed order,
// so the result is deterministic. Everything is accumulated in double.
#include <cmath>
#include <cstdint>

#include <cuda_runtime.h>

#include "ftdfast/fisher_distance.h"
#include "launch.cuh"

namespace ftdfast::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kUnroll = 8;  // loads in flight per thread and list
static_assert(kFisherChunk % (kThreads * kUnroll) == 0, "whole iterations per chunk");

__device__ __forceinline__ double min_ignoring_nan(double m, double v) { return v < m ? v : m; }

// Block-wide sums (Op::combine) of kValues doubles per thread, in a fixed
// order (shared-memory tree), returned to thread 0. `buf` holds
// kValues * kThreads doubles.
template <int kValues, class Combine>
__device__ __forceinline__ void block_reduce(double (&v)[kValues], double* buf, Combine combine) {
  const int tid = threadIdx.x;
#pragma unroll
  for (int q = 0; q < kValues; ++q) buf[q * kThreads + tid] = v[q];
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (tid < width) {
#pragma unroll
      for (int q = 0; q < kValues; ++q) {
        buf[q * kThreads + tid] = combine(q, buf[q * kThreads + tid], buf[q * kThreads + tid + width]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int q = 0; q < kValues; ++q) v[q] = buf[q * kThreads];
}

// Tensor k and entries [begin, end) of chunk `chunk`.
template <typename T>
__device__ __forceinline__ void locate(const FisherSegment<T>* __restrict__ segments, int64_t tensors,
                                       int64_t chunk, int64_t& k, int64_t& begin, int64_t& end) {
  int64_t lo = 0, hi = tensors - 1;  // last k with first_chunk <= chunk
  while (lo < hi) {
    const int64_t mid = (lo + hi + 1) / 2;
    if (segments[mid].first_chunk <= chunk) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  k = lo;
  begin = (chunk - segments[k].first_chunk) * kFisherChunk;
  const int64_t stop = begin + kFisherChunk;
  end = stop < segments[k].numel ? stop : segments[k].numel;
}

// True in every thread of the block that finished last among gridDim.x
// blocks (after thread 0 stored this block's partial).
__device__ __forceinline__ bool finished_last(unsigned int* counter, bool* flag) {
  if (threadIdx.x == 0) {
    __threadfence();  // this block's partial is visible before the count
    *flag = atomicAdd(counter, 1u) == gridDim.x - 1;
  }
  __syncthreads();
  const bool last = *flag;
  if (last) {
    __threadfence();  // and the other blocks' partials before they are read
  }
  return last;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fisher_pass1(FisherDistanceArgs<T> p) {
  __shared__ double buf[4 * kThreads];
  __shared__ bool last;
  int64_t k, begin, end;
  locate(p.segments, p.tensors, blockIdx.x, k, begin, end);
  const T* __restrict__ a = p.segments[k].a;
  const T* __restrict__ b = p.segments[k].b;
  const double inf = INFINITY;
  double v[4] = {0.0, 0.0, inf, inf};  // sum a, sum b, min a, min b
  for (int64_t base = begin + threadIdx.x; base < end; base += kThreads * kUnroll) {
    T va[kUnroll], vb[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + static_cast<int64_t>(u) * kThreads;
      va[u] = j < end ? a[j] : T(0);
      vb[u] = j < end ? b[j] : T(0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (base + static_cast<int64_t>(u) * kThreads < end) {
        const double x = static_cast<double>(va[u]), y = static_cast<double>(vb[u]);
        v[0] += x;
        v[1] += y;
        v[2] = min_ignoring_nan(v[2], x);
        v[3] = min_ignoring_nan(v[3], y);
      }
    }
  }
  auto combine = [](int q, double x, double y) { return q < 2 ? x + y : min_ignoring_nan(x, y); };
  block_reduce<4>(v, buf, combine);
  double* part = p.workspace;  // 4 per chunk
  if (threadIdx.x == 0) {
    for (int q = 0; q < 4; ++q) part[4 * static_cast<int64_t>(blockIdx.x) + q] = v[q];
  }
  unsigned int* counters = reinterpret_cast<unsigned int*>(p.workspace + fisher_counters_offset(p.chunks));
  if (!finished_last(&counters[0], &last)) return;
  // Last block: all chunks, thread tid taking chunks tid, tid + kThreads, ...
  double w[4] = {0.0, 0.0, inf, inf};
  for (int64_t c = threadIdx.x; c < p.chunks; c += kThreads) {
    const volatile double* pc = part + 4 * c;
    w[0] += pc[0];
    w[1] += pc[1];
    w[2] = min_ignoring_nan(w[2], pc[2]);
    w[3] = min_ignoring_nan(w[3], pc[3]);
  }
  block_reduce<4>(w, buf, combine);
  if (threadIdx.x == 0) {
    double* result = p.workspace + fisher_result_offset(p.chunks);
    result[kTraceA] = w[0];
    result[kTraceB] = w[1];
    result[kMinA] = w[2];
    result[kMinB] = w[3];
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fisher_pass2(FisherDistanceArgs<T> p) {
  __shared__ double buf[kThreads];
  __shared__ bool last;
  int64_t k, begin, end;
  locate(p.segments, p.tensors, blockIdx.x, k, begin, end);
  const T* __restrict__ a = p.segments[k].a;
  const T* __restrict__ b = p.segments[k].b;
  double* result = p.workspace + fisher_result_offset(p.chunks);
  // Each input normalized by its own trace before the two meet; 1 / sqrt(trace)
  // is finite for every positive double trace (1 / trace overflows below ~5.6e-309).
  const double rs_a = 1.0 / sqrt(result[kTraceA]), rs_b = 1.0 / sqrt(result[kTraceB]);
  double v[1] = {0.0};
  for (int64_t base = begin + threadIdx.x; base < end; base += kThreads * kUnroll) {
    T va[kUnroll], vb[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t j = base + static_cast<int64_t>(u) * kThreads;
      va[u] = j < end ? a[j] : T(0);
      vb[u] = j < end ? b[j] : T(0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      // Entries past the end are 0 on both sides: they add 0.
      const double d = sqrt(static_cast<double>(va[u])) * rs_a - sqrt(static_cast<double>(vb[u])) * rs_b;
      v[0] += d * d;
    }
  }
  auto add = [](int, double x, double y) { return x + y; };
  block_reduce<1>(v, buf, add);
  double* part = p.workspace + 4 * p.chunks;  // 1 per chunk
  if (threadIdx.x == 0) part[blockIdx.x] = v[0];
  unsigned int* counters = reinterpret_cast<unsigned int*>(p.workspace + fisher_counters_offset(p.chunks));
  if (!finished_last(&counters[1], &last)) return;
  double w[1] = {0.0};
  for (int64_t c = threadIdx.x; c < p.chunks; c += kThreads) {
    w[0] += static_cast<const volatile double*>(part)[c];
  }
  block_reduce<1>(w, buf, add);
  if (threadIdx.x == 0) {
    result[kSumSq] = w[0];
    // Rounding can only push d^2 slightly below 0 or d slightly above 1; NaN passes.
    const double d2 = 0.5 * w[0];
    const double d = isnan(d2) ? d2 : fmin(1.0, sqrt(fmax(0.0, d2)));
    *p.out = static_cast<T>(d);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) sqrt_normalize_kernel(SqrtNormalizeArgs<T> p) {
  const int64_t step = static_cast<int64_t>(gridDim.x) * kThreads;
  for (int64_t r = blockIdx.y; r < p.rows; r += gridDim.y) {
    const double sum = p.sum[r];
    const T* __restrict__ x = p.x + r * p.p;
    double* __restrict__ out = p.out + r * p.p;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x; j < p.p; j += step) {
      out[j] = sqrt(static_cast<double>(x[j]) / sum);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t launch_fisher_distance(const FisherDistanceArgs<T>& p, cudaStream_t stream) {
  if (p.tensors < 1 || p.chunks < 1 || p.chunks > 0x7fffffff) {
    return cudaErrorInvalidValue;
  }
  unsigned int* counters = reinterpret_cast<unsigned int*>(p.workspace + fisher_counters_offset(p.chunks));
  cudaError_t err = cudaMemsetAsync(counters, 0, 2 * sizeof(unsigned int), stream);
  if (err != cudaSuccess) return err;
  const dim3 grid(static_cast<unsigned>(p.chunks));
  FTDFAST_LAUNCH(grid, kThreads, stream, fisher_pass1<T>)(p);
  err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  FTDFAST_LAUNCH(grid, kThreads, stream, fisher_pass2<T>)(p);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_sqrt_normalize(const SqrtNormalizeArgs<T>& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.p <= 0) return cudaSuccess;
  const int64_t col_blocks = (p.p + kThreads - 1) / kThreads;
  const dim3 grid(static_cast<unsigned>(col_blocks < 1024 ? col_blocks : 1024),
                  static_cast<unsigned>(p.rows < 65535 ? p.rows : 65535));
  FTDFAST_LAUNCH(grid, kThreads, stream, sqrt_normalize_kernel<T>)(p);
  return cudaGetLastError();
}

template cudaError_t launch_fisher_distance<float>(const FisherDistanceArgs<float>&, cudaStream_t);
template cudaError_t launch_fisher_distance<double>(const FisherDistanceArgs<double>&, cudaStream_t);
template cudaError_t launch_sqrt_normalize<float>(const SqrtNormalizeArgs<float>&, cudaStream_t);
template cudaError_t launch_sqrt_normalize<double>(const SqrtNormalizeArgs<double>&, cudaStream_t);

}  // namespace ftdfast::cuda
