// The extension module `ftdfast._C` and the `ftdfast` operator namespace.
//
// The schemas of every op are below (one TORCH_LIBRARY block). Each op's kernels
// live in their own files: its CPU kernel in csrc/cpu/<op>.cpp
// (TORCH_LIBRARY_IMPL(ftdfast, CPU, m)), its CUDA glue in csrc/cuda/<op>_glue.cpp (TORCH_LIBRARY_IMPL(ftdfast,
// CUDA, m)), its kernel in csrc/cuda/<op>.cu and its C++ interface in
// csrc/include/ftdfast/<op>.h. Index letters used in every schema: n sample,
// t position, i in, o out.
#include <Python.h>

#include <torch/library.h>

extern "C" {
// An empty `ftdfast._C` module: importing it loads this shared library,
// which runs the static initialisers that register the ops. No pybind11.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "ftdfast native ops; importing registers torch.ops.ftdfast.*",  // doc
      -1,  // no per-interpreter state
      nullptr,  // methods
  };
  return PyModule_Create(&module_def);
}
}

// Every op's schema, in one place; the kernels register with
// TORCH_LIBRARY_IMPL(ftdfast, CPU/CUDA, m) in their own files.
TORCH_LIBRARY(ftdfast, m) {
  // S[o, i] = sum_n (sum_t g[n, t, o] * a[n, t, i])^2 for a (n, t, i), g (n, t, o):
  // the per-sample squared weight gradients of a linear layer, summed over samples.
  m.def("sq_grad_sum_linear(Tensor a, Tensor g) -> Tensor");
  // S = sum_n G_n * G_n (shape weight_shape) for a Conv1d/2d/3d with zero
  // padding, G_n being sample n's weight gradient given input (n, C_in, *spatial)
  // and grad_output (n, C_out, *spatial_out).
  m.def(
      "sq_grad_sum_conv(Tensor input, Tensor grad_output, int[] weight_shape, int[] stride, "
      "int[] padding, int[] dilation, int groups) -> Tensor");
  // Fisher Task Distance between two diagonal Fishers, each given as a list of
  // per-parameter tensors (f_a[k] and f_b[k] of the same shape, non-negative):
  // d = || sqrt(f_a / tr f_a) - sqrt(f_b / tr f_b) ||_2 / sqrt(2) in [0, 1], a
  // 0-dim tensor; tr sums over every tensor of the list.
  m.def("fisher_distance(Tensor[] f_a, Tensor[] f_b) -> Tensor");
  // All pairwise distances D (R, C) between rows (R, P) and cols (C, P), each
  // row a flattened Fisher diagonal: D[r, c] = fisher_distance(rows[r], cols[c])
  // from the Hellinger identity d^2 = 1 - <sqrt(p_r), sqrt(q_c)>, one GEMM.
  m.def("fisher_distance_matrix(Tensor rows, Tensor cols) -> Tensor");
}
