// A minimal CUDA emulator for checking ftdfast's kernels without a GPU.
//
// run.sh compiles each csrc/cuda/*.cu as host C++ with this file in front
// (g++ -std=c++20 -pthread -include emu.h -x c++). A launch runs every
// block in turn with one OS thread per CUDA thread; __syncthreads is a
// std::barrier over the block's threads, __shared__ variables are function
// statics (one per block at a time, since blocks run one after another). This checks index arithmetic,
// bounds, tiling, split and reduction logic and barrier placement, not the
// memory model or performance. Host memory stands in for device memory.
#pragma once

#include <atomic>
#include <barrier>
#include <cmath>
#include <cstring>
#include <thread>
#include <vector>

#include <cuda_runtime.h>

namespace emu {

inline thread_local uint3 thread_idx, block_idx;
inline thread_local dim3 block_dim, grid_dim;
inline std::barrier<>* block_barrier = nullptr;

inline void syncthreads() { block_barrier->arrive_and_wait(); }
inline void threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline unsigned int atomic_add(unsigned int* p, unsigned int v) {
  return std::atomic_ref<unsigned int>(*p).fetch_add(v);
}

// FTDFAST_LAUNCH(grid, block, stream, kernel)(args...).
template <class F>
struct Launch {
  dim3 grid, block;
  F f;
  template <class... Args>
  void operator()(Args... args) const {
    const unsigned nt = block.x * block.y * block.z;
    std::barrier<> bar(nt);
    block_barrier = &bar;
    std::vector<std::thread> threads;
    threads.reserve(nt);
    for (unsigned t = 0; t < nt; ++t) {
      threads.emplace_back([&, t] {
        thread_idx = uint3{t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
        block_dim = block;
        grid_dim = grid;
        for (unsigned z = 0; z < grid.z; ++z) {
          for (unsigned y = 0; y < grid.y; ++y) {
            for (unsigned x = 0; x < grid.x; ++x) {
              block_idx = uint3{x, y, z};
              f(args...);
              bar.arrive_and_wait();  // the next block reuses the statics
            }
          }
        }
      });
    }
    for (auto& th : threads) th.join();
    block_barrier = nullptr;
  }
};

template <class F>
Launch<F> launch(dim3 grid, dim3 block, F f) {
  return Launch<F>{grid, block, f};
}

}  // namespace emu

#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __forceinline__
#undef __launch_bounds__
#define __global__
#define __device__
#define __host__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)
#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define blockDim (::emu::block_dim)
#define gridDim (::emu::grid_dim)
#define __syncthreads() ::emu::syncthreads()
#define __threadfence() ::emu::threadfence()
#define atomicAdd(p, v) ::emu::atomic_add(p, v)
#define FTDFAST_LAUNCH(grid, block, stream, ...) ::emu::launch(dim3(grid), dim3(block), __VA_ARGS__)

using std::fmax;
using std::fmin;
using std::isnan;
using std::sqrt;
