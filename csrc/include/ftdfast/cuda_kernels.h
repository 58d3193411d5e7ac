// Interface of the CUDA kernels in csrc/cuda/*.cu, shared by nvcc (the
// kernels) and the host compiler (the torch glue in csrc/cuda/ops_cuda.cpp).
//
// No torch headers here or in the .cu files: kernels take raw device pointers
// in one parameter struct per kernel, plus the stream to launch on, and return
// the cudaError_t of the launch. Every launcher is a template explicitly
// instantiated for float and double in its .cu file. Index letters: n sample,
// t position, i in (features), o out (features).
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

// Small helpers used by both the kernels and the glue.
#if defined(__CUDACC__)
#define FTDFAST_HOST_DEVICE __host__ __device__
#else
#define FTDFAST_HOST_DEVICE
#endif

namespace ftdfast::cuda {

// ---------------------------------------------------------------- sq_grad_sum
// Both sq_grad_sum kernels compute, per conv group (1 for the linear op),
// S[m, c] = sum_n (sum_t B_n[t, m] * A_n[t, c])^2 with a block per output
// tile (rows m, columns c): per sample the G_n tile is accumulated over
// positions in registers (operands staged in shared memory), then squared and
// added to a second register tile, written once at the end. When tiles are
// few, samples are split over grid z; split z writes its own partial plane
// out + z * rows_total * cols, which the glue sums (deterministic; no atomics).

// Tile shapes, chosen by plan_sq_grad_sum.
enum TileConfig : int {
  kTile64 = 0,  // 64 x 64 tile, 256 threads, 4 x 4 per thread
  kTile32 = 1,  // 32 x 32 tile, 256 threads, 2 x 2 per thread
  kTile16 = 2,  // 16 x 16 tile, 256 threads, 1 x 1 per thread
};

struct SqGradSumPlan {
  int config;           // a TileConfig
  int64_t tile_rows;    // rows (m) per tile
  int64_t tile_cols;    // columns (c) per tile
  int64_t tiles;        // groups * row tiles * column tiles (grid x)
  int64_t splits;       // sample ranges (grid z); partial planes in the output
};

// The tile shape and sample split for `groups` independent (rows x cols)
// outputs over n samples on a device with `sm_count` multiprocessors.
SqGradSumPlan plan_sq_grad_sum(int64_t rows, int64_t cols, int64_t groups, int64_t n, int sm_count);

// sq_grad_sum_linear: a (n, t, i), g (n, t, o), contiguous, t >= 1.
// out: plan.splits partial planes of (o, i), each fully written.
template <typename T>
struct SqGradSumLinearArgs {
  const T* a;
  const T* g;
  T* out;
  int64_t n, t, i, o;
  SqGradSumPlan plan;
};

template <typename T>
cudaError_t launch_sq_grad_sum_linear(const SqGradSumLinearArgs<T>& args, cudaStream_t stream);

// sq_grad_sum_conv: input (n, c_in, in[0], in[1], in[2]) and grad_output
// (n, c_out, out[0], out[1], out[2]), contiguous; spatial sizes padded to 3-D
// with leading 1s (Conv1d/2d are 3-D convolutions with size-1 dims). The "A"
// operand is the implicit im2col of the input: column c = ci * taps + tap of
// group g reads input channel g * (c_in / groups) + ci at the tap's offset
// (zero padding), row = output position. out: plan.splits partial planes of
// (c_out, (c_in / groups) * taps), i.e. the flattened weight shape.
// All per-sample sizes must fit in int32 (checked by the glue).
template <typename T>
struct SqGradSumConvArgs {
  const T* input;
  const T* grad_output;
  T* out;
  int64_t n;
  int c_in, c_out, groups;
  int in[3], out_size[3], kernel[3], stride[3], padding[3], dilation[3];
  SqGradSumPlan plan;
};

template <typename T>
cudaError_t launch_sq_grad_sum_conv(const SqGradSumConvArgs<T>& args, cudaStream_t stream);

// ------------------------------------------------------------ fisher_distance
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
