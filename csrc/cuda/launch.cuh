// Kernel launch helper for csrc/cuda/*.cu.
//
// FTDFAST_LAUNCH(grid, block, stream, kernel)(args...) is
// kernel<<<grid, block, 0, stream>>>(args...). It is a macro only so that the
// host-side emulator (tests/cuda_emu, which runs the kernels on CPU threads to
// check their index arithmetic without a GPU) can define its own version
// before including a .cu file.
#pragma once

#ifndef FTDFAST_LAUNCH
#define FTDFAST_LAUNCH(grid, block, stream, ...) __VA_ARGS__<<<(grid), (block), 0, (stream)>>>
#endif
