// The C++ interface of ftdfast::fisher_distance and
// ftdfast::fisher_distance_matrix: their sizes and input checks (defined in
// csrc/cpu/fisher_distance.cpp, used by the CPU kernels and the CUDA glue
// csrc/cuda/fisher_distance_glue.cpp) and, in CUDA builds, the kernels of
// csrc/cuda/fisher_distance.cu. No torch headers (the .cu includes this).
#pragma once

#include <cstdint>

#include "ftdfast/aten_fwd.h"

namespace ftdfast {

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
FisherDistanceParams make_fisher_distance_params(c10::ArrayRef<at::Tensor> f_a,
                                                 c10::ArrayRef<at::Tensor> f_b);

// fisher_distance_matrix: rows (R, P), cols (C, P) -> D (R, C).
struct FisherDistanceMatrixParams {
  int64_t r;  // rows (Fishers on the left)
  int64_t c;  // cols (Fishers on the right)
  int64_t p;  // parameters (entries of one flattened Fisher diagonal)
};

// Validates rows and cols for fisher_distance_matrix (2-D, same P, dtype,
// device) and returns the sizes. Value and device-type checks are left to
// each kernel.
FisherDistanceMatrixParams make_fisher_distance_matrix_params(const at::Tensor& rows,
                                                              const at::Tensor& cols);

}  // namespace ftdfast

#ifdef FTDFAST_WITH_CUDA
#include "ftdfast/cuda_interface.h"

namespace ftdfast::cuda {

// One entry per parameter k: f_a[k] and f_b[k] (contiguous, numel entries
// each) and the index of the first of its chunks of kFisherChunk entries.
template <typename T>
struct FisherSegment {
  const T* a;
  const T* b;
  int64_t numel;
  int64_t first_chunk;
};

constexpr int64_t kFisherChunk = 8192;

// Number of chunks of a tensor of `numel` entries.
FTDFAST_HOST_DEVICE inline int64_t fisher_chunks(int64_t numel) { return (numel + kFisherChunk - 1) / kFisherChunk; }

// FisherDistanceArgs::workspace, in doubles: the per-chunk partials of pass 1
// (4 per chunk) and pass 2 (1 per chunk), then the result (kFisherResultSize
// doubles, read back by the glue), then two unsigned counters (zeroed by the
// launcher) in the slot at fisher_counters_offset.
FTDFAST_HOST_DEVICE inline int64_t fisher_result_offset(int64_t chunks) { return 5 * chunks; }
FTDFAST_HOST_DEVICE inline int64_t fisher_counters_offset(int64_t chunks) { return 5 * chunks + 8; }
FTDFAST_HOST_DEVICE inline int64_t fisher_workspace_doubles(int64_t chunks) { return 5 * chunks + 16; }

// The result, at workspace + fisher_result_offset(chunks).
enum FisherResult : int {
  kTraceA = 0,  // sum of f_a
  kTraceB = 1,  // sum of f_b
  kMinA = 2,    // min of f_a (NaNs ignored; +inf when empty)
  kMinB = 3,    // min of f_b
  kSumSq = 4,   // sum of (sqrt(a / tr_a) - sqrt(b / tr_b))^2
  kFisherResultSize = 5,
};

// Two passes over the lists (no concatenated copy), one block per chunk:
// pass 1 sums and mins per chunk, and the last block to finish reduces all
// chunks (in a fixed order: deterministic) into the result; pass 2 sums
// (sqrt(a / tr_a) - sqrt(b / tr_b))^2 per chunk, and its last block reduces
// them into result[kSumSq] and writes d = min(1, sqrt(max(0, sum / 2))) (NaN
// passes) to *out. All accumulation in double. Value checks (negative, NaN,
// zero trace) are left to the glue, which reads the result back.
template <typename T>
struct FisherDistanceArgs {
  const FisherSegment<T>* segments;  // device array, non-empty tensors only
  int64_t tensors;                   // entries of segments (>= 1)
  int64_t chunks;                    // total chunks (>= 1)
  double* workspace;                 // fisher_workspace_doubles(chunks) doubles
  T* out;                            // the 0-dim output
};

template <typename T>
cudaError_t launch_fisher_distance(const FisherDistanceArgs<T>& args, cudaStream_t stream);

// ----------------------------------------------------- fisher_distance_matrix
// out[r, j] = sqrt(x[r, j] / sum[r]) in double for a contiguous (rows, p)
// matrix x (the square-rooted, normalised Fisher diagonals before the GEMM).
// A division, as in the reference: a row proportional to another gives
// exactly the same values, so their distance is exactly 0.
template <typename T>
struct SqrtNormalizeArgs {
  const T* x;
  const double* sum;  // rows entries: the row sums
  double* out;
  int64_t rows, p;
};

template <typename T>
cudaError_t launch_sqrt_normalize(const SqrtNormalizeArgs<T>& args, cudaStream_t stream);

}  // namespace ftdfast::cuda
#endif  // FTDFAST_WITH_CUDA
