// What the CUDA section of every op header (ftdfast/<op>.h) needs; seen by
// nvcc (the kernels), the host compiler (the torch glue) and the emulator.
//
// No torch headers: a kernel takes raw device pointers in one parameter
// struct, plus the stream to launch on, and returns the cudaError_t of the
// launch. Every launcher is a template explicitly instantiated for float and
// double in its .cu file.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

// Small helpers used by both the kernels and the glue.
#if defined(__CUDACC__)
#define FTDFAST_HOST_DEVICE __host__ __device__
#else
#define FTDFAST_HOST_DEVICE
#endif
