// Helpers of the CUDA glue files csrc/cuda/<op>_glue.cpp (host compiler, torch).
#pragma once

#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

// Raises c10::Error naming the op when a launcher failed.
#define FTDFAST_CUDA_CHECK(expr, op)                                                        \
  do {                                                                                      \
    const cudaError_t ftdfast_err_ = (expr);                                                \
    TORCH_CHECK(ftdfast_err_ == cudaSuccess, "ftdfast: CUDA kernel of ", op, " failed: ",   \
                cudaGetErrorName(ftdfast_err_), ": ", cudaGetErrorString(ftdfast_err_));    \
  } while (0)
