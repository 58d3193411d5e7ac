// csrc/cuda/sq_grad_sum.cu built for the emulator (see emu.h).
#include "emu.h"

#include "../../csrc/cuda/sq_grad_sum.cu"
