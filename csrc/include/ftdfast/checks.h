// Named input checks for ftdfast kernels.
//
// Macro parameters are named so they cannot clash with member names (e.g.
// `.type()`). Each macro raises c10::Error (RuntimeError in Python) with a message that
// names the argument and the problem. `name` is a C string describing the
// argument, e.g. "a (n, t, i)".
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

// t must have exactly d dimensions.
#define FTDFAST_CHECK_DIM(t, name, d)                                     \
  TORCH_CHECK((t).dim() == (d), "ftdfast: ", name, " must be ", (d),      \
              "-D, got a ", (t).dim(), "-D tensor of shape ", (t).sizes())

// t must be float32 or float64.
#define FTDFAST_CHECK_FLOATING(t, name)                                  \
  TORCH_CHECK((t).scalar_type() == at::kFloat ||                         \
                  (t).scalar_type() == at::kDouble,                      \
              "ftdfast: ", name, " must have dtype float32 or float64, got ", \
              (t).scalar_type())

// x and y must share a dtype.
#define FTDFAST_CHECK_SAME_DTYPE(x, xname, y, yname)                      \
  TORCH_CHECK((x).scalar_type() == (y).scalar_type(), "ftdfast: ", xname, \
              " and ", yname, " must have the same dtype, got ",          \
              (x).scalar_type(), " and ", (y).scalar_type())

// x and y must be on the same device.
#define FTDFAST_CHECK_SAME_DEVICE(x, xname, y, yname)                      \
  TORCH_CHECK((x).device() == (y).device(), "ftdfast: ", xname, " and ",   \
              yname, " must be on the same device, got ", (x).device(),    \
              " and ", (y).device())

// t must live on a device of type `dev_type` (e.g. at::kCPU).
#define FTDFAST_CHECK_DEVICE_TYPE(t, name, dev_type)                       \
  TORCH_CHECK((t).device().type() == (dev_type), "ftdfast: ", name,       \
              " must be a ", c10::DeviceTypeName(dev_type), " tensor, got ", \
              (t).device())

// x.size(d) must equal y.size(d); `what` names the index, e.g. "n (samples)".
#define FTDFAST_CHECK_SIZE_MATCH(x, xname, y, yname, d, what)              \
  TORCH_CHECK((x).size(d) == (y).size(d), "ftdfast: ", xname, " and ",     \
              yname, " must agree on dim ", (d), " = ", what, ", got ",    \
              (x).size(d), " and ", (y).size(d), " (shapes ", (x).sizes(), \
              " and ", (y).sizes(), ")")
