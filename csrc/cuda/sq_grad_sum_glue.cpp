// CUDA registration of ftdfast::sq_grad_sum_linear and
// ftdfast::sq_grad_sum_conv: input checks, device guard, current stream,
// contiguous inputs, dtype dispatch (float32/float64), output and workspace
// allocation, then the raw-pointer launchers of csrc/cuda/sq_grad_sum.cu (declared
// in ftdfast/sq_grad_sum.h), whose cudaError_t is checked here. Schemas and CPU
// kernels: csrc/cpu/. The CPU kernels define the semantics; these match them,
// error messages included.
#include <climits>
#include <cstdint>

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "ftdfast/checks.h"
#include "ftdfast/sq_grad_sum.h"
#include "glue.h"

namespace ftdfast::cuda {
namespace {

int sm_count() { return at::cuda::getCurrentDeviceProperties()->multiProcessorCount; }

// Sums the split partial planes (splits, *shape) of a sq_grad_sum kernel.
at::Tensor reduce_splits(const at::Tensor& partials, int64_t splits) {
  return splits == 1 ? partials.select(0, 0) : partials.sum(0);
}

// ---------------------------------------------------------- sq_grad_sum_linear
at::Tensor sq_grad_sum_linear_cuda(const at::Tensor& a_in, const at::Tensor& g_in) {
  const auto p = make_sq_grad_sum_linear_params(a_in, g_in);
  FTDFAST_CHECK_DEVICE_TYPE(a_in, "a", at::kCUDA);
  FTDFAST_CHECK_DEVICE_TYPE(g_in, "g", at::kCUDA);
  const c10::cuda::CUDAGuard guard(a_in.device());
  if (p.trivial()) {
    return at::zeros({p.o, p.i}, a_in.options());
  }
  // Detached: the op has no autograd formula.
  const auto a = a_in.detach().contiguous();
  const auto g = g_in.detach().contiguous();
  if (p.t == 1) {
    // One position per sample: S = (g * g)^T (a * a), a single GEMM.
    return at::mm(g.reshape({p.n, p.o}).square().t(), a.reshape({p.n, p.i}).square());
  }
  const SqGradSumPlan plan = plan_sq_grad_sum(p.o, p.i, 1, p.n, sm_count());
  auto partials = at::empty({plan.splits, p.o, p.i}, a.options());
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "ftdfast_sq_grad_sum_linear_cuda", [&] {
    SqGradSumLinearArgs<scalar_t> args{};
    args.a = a.const_data_ptr<scalar_t>();
    args.g = g.const_data_ptr<scalar_t>();
    args.out = partials.data_ptr<scalar_t>();
    args.n = p.n;
    args.t = p.t;
    args.i = p.i;
    args.o = p.o;
    args.plan = plan;
    FTDFAST_CUDA_CHECK(launch_sq_grad_sum_linear(args, at::cuda::getCurrentCUDAStream()),
                       "sq_grad_sum_linear");
  });
  return reduce_splits(partials, plan.splits);
}

// ------------------------------------------------------------ sq_grad_sum_conv
at::Tensor sq_grad_sum_conv_cuda(const at::Tensor& input, const at::Tensor& grad_output,
                                 at::IntArrayRef weight_shape, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const auto p = make_sq_grad_sum_conv_params(input, grad_output, weight_shape, stride, padding,
                                              dilation, groups);
  FTDFAST_CHECK_DEVICE_TYPE(input, "input", at::kCUDA);
  FTDFAST_CHECK_DEVICE_TYPE(grad_output, "grad_output", at::kCUDA);
  const c10::cuda::CUDAGuard guard(input.device());
  if (p.trivial()) {
    return at::zeros(weight_shape, input.options());
  }
  // The kernel indexes within one sample in 32-bit integers.
  constexpr int64_t kMax = INT_MAX;
  TORCH_CHECK(p.c_in * p.in_numel() <= kMax && p.c_out * p.t() <= kMax && p.c_out * p.ckg() <= kMax &&
                  p.in[0] + 2 * p.padding[0] + p.kernel[0] * p.dilation[0] <= kMax &&
                  p.in[1] + 2 * p.padding[1] + p.kernel[1] * p.dilation[1] <= kMax &&
                  p.in[2] + 2 * p.padding[2] + p.kernel[2] * p.dilation[2] <= kMax &&
                  p.out[0] * p.stride[0] <= kMax && p.out[1] * p.stride[1] <= kMax &&
                  p.out[2] * p.stride[2] <= kMax,
              "ftdfast: sq_grad_sum_conv on CUDA needs each sample's input (", p.c_in * p.in_numel(),
              " entries), grad_output (", p.c_out * p.t(), ") and weight (", p.c_out * p.ckg(),
              ") to have fewer than 2^31 entries");
  const auto x = input.detach().contiguous();
  const auto gy = grad_output.detach().contiguous();
  const SqGradSumPlan plan = plan_sq_grad_sum(p.og(), p.ckg(), p.groups, p.n, sm_count());
  auto partials = at::empty({plan.splits, p.c_out, p.ckg()}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "ftdfast_sq_grad_sum_conv_cuda", [&] {
    SqGradSumConvArgs<scalar_t> args{};
    args.input = x.const_data_ptr<scalar_t>();
    args.grad_output = gy.const_data_ptr<scalar_t>();
    args.out = partials.data_ptr<scalar_t>();
    args.n = p.n;
    args.c_in = static_cast<int>(p.c_in);
    args.c_out = static_cast<int>(p.c_out);
    args.groups = static_cast<int>(p.groups);
    for (int j = 0; j < 3; ++j) {
      args.in[j] = static_cast<int>(p.in[j]);
      args.out_size[j] = static_cast<int>(p.out[j]);
      args.kernel[j] = static_cast<int>(p.kernel[j]);
      args.stride[j] = static_cast<int>(p.stride[j]);
      args.padding[j] = static_cast<int>(p.padding[j]);
      args.dilation[j] = static_cast<int>(p.dilation[j]);
    }
    args.plan = plan;
    FTDFAST_CUDA_CHECK(launch_sq_grad_sum_conv(args, at::cuda::getCurrentCUDAStream()), "sq_grad_sum_conv");
  });
  return reduce_splits(partials, plan.splits).view(weight_shape);
}

}  // namespace

TORCH_LIBRARY_IMPL(ftdfast, CUDA, m) {
  m.impl("sq_grad_sum_linear", &sq_grad_sum_linear_cuda);
  m.impl("sq_grad_sum_conv", &sq_grad_sum_conv_cuda);
}

}  // namespace ftdfast::cuda
