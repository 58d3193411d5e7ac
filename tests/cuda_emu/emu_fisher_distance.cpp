// csrc/cuda/fisher_distance.cu built for the emulator (see emu.h).
#include "emu.h"

#include "../../csrc/cuda/fisher_distance.cu"
