// The extension module `ftdfast._C` and the `ftdfast` operator namespace.
//
// Each op lives in its own files: its schema and CPU kernel in
// csrc/cpu/<op>.cpp (TORCH_LIBRARY_FRAGMENT and TORCH_LIBRARY_IMPL(ftdfast,
// CPU, m)), its CUDA glue in csrc/cuda/<op>_glue.cpp (TORCH_LIBRARY_IMPL(ftdfast,
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

// Claims the namespace (a second TORCH_LIBRARY(ftdfast, ...) anywhere fails
// at load time); the ops are defined by the fragments in csrc/cpu/<op>.cpp.
TORCH_LIBRARY(ftdfast, m) {}
