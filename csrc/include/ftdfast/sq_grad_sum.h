// The C++ interface of ftdfast::sq_grad_sum_linear and ftdfast::sq_grad_sum_conv:
// their sizes and input checks (defined in csrc/cpu/sq_grad_sum_*.cpp, used by
// the CPU kernels and the CUDA glue csrc/cuda/sq_grad_sum_glue.cpp) and, in CUDA
// builds, the kernels of csrc/cuda/sq_grad_sum.cu. No torch headers (the .cu
// includes this). Index letters: n sample, t position, i in (features), o out
// (features).
#pragma once

#include <array>
#include <cstdint>
#include <vector>

#include "ftdfast/aten_fwd.h"

namespace ftdfast {

// sq_grad_sum_linear: a (n, t, i), g (n, t, o) -> S (o, i).
struct SqGradSumLinearParams {
  int64_t n;  // samples
  int64_t t;  // positions per sample (1 for a plain MLP input)
  int64_t i;  // in features
  int64_t o;  // out features

  // True when the result is all zeros (or empty) without any work.
  bool trivial() const { return n == 0 || t == 0 || i == 0 || o == 0; }
};

// Validates a and g for sq_grad_sum_linear (shape, dtype, same device) and
// returns the sizes. Device-type checks are left to each kernel.
SqGradSumLinearParams make_sq_grad_sum_linear_params(const at::Tensor& a, const at::Tensor& g);

// sq_grad_sum_conv: input (n, C_in, *spatial), grad_output (n, C_out,
// *spatial_out), weight (C_out, C_in / groups, *kernel) -> S (weight shape).
// Spatial sizes are stored as 3-D with leading 1s (a Conv1d is 1 x 1 x L), so
// kernels need only one code path.
struct SqGradSumConvParams {
  int64_t n;       // samples
  int64_t dims;    // spatial dimensions: 1, 2 or 3
  int64_t c_in;    // input channels
  int64_t c_out;   // output channels
  int64_t groups;  // convolution groups
  std::array<int64_t, 3> in, out, kernel, stride, padding, dilation;
  std::vector<int64_t> weight_shape;

  int64_t cg() const { return c_in / groups; }    // input channels per group
  int64_t og() const { return c_out / groups; }   // output channels per group
  int64_t k() const { return kernel[0] * kernel[1] * kernel[2]; }  // kernel taps
  int64_t ckg() const { return cg() * k(); }      // weight columns (C_in / groups * taps)
  int64_t t() const { return out[0] * out[1] * out[2]; }  // output positions
  int64_t in_numel() const { return in[0] * in[1] * in[2]; }
  bool trivial() const { return n == 0 || c_out == 0 || ckg() == 0 || t() == 0; }
};

// Validates input, grad_output and the convolution arguments for
// sq_grad_sum_conv (shapes, conv arithmetic, dtypes, same device) and returns
// the sizes. Device-type checks are left to each kernel.
SqGradSumConvParams make_sq_grad_sum_conv_params(
    const at::Tensor& input, const at::Tensor& grad_output, c10::ArrayRef<int64_t> weight_shape,
    c10::ArrayRef<int64_t> stride, c10::ArrayRef<int64_t> padding, c10::ArrayRef<int64_t> dilation,
    int64_t groups);

}  // namespace ftdfast

#ifdef FTDFAST_WITH_CUDA
#include "ftdfast/cuda_interface.h"

namespace ftdfast::cuda {

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

}  // namespace ftdfast::cuda
#endif  // FTDFAST_WITH_CUDA
