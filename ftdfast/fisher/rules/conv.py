"""Convolutions (1-D, 2-D, 3-D, transposed): the per-sample weight gradient is a weight-only
convolution backward of that sample; biases are output gradients summed over positions."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..conv_weight import ConvWeight
from ..factors import PerSample, wide_sum
from ..registry import Call, register_rule


def _padded_input(module: nn.modules.conv._ConvNd, x: torch.Tensor):
    """The input as the convolution itself sees it, and the padding still to apply."""
    dims = len(module.kernel_size)
    if module.padding_mode != "zeros":
        return F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode), [0] * dims
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return x, [0] * dims
        pads = []  # 'same': total dilation*(k-1), the extra one on the right, as torch does
        for k, d in zip(reversed(module.kernel_size), reversed(module.dilation)):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads), [0] * dims
    return x, list(module.padding)


@register_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def conv(module: nn.modules.conv._ConvNd, call: Call):
    x, g = call.args[0], call.grad
    if x.dim() != len(module.kernel_size) + 2:
        return None  # an unbatched input
    x, padding = _padded_input(module, x)
    out = {"weight": ConvWeight(x, g, tuple(module.weight.shape), module.stride, padding,
                                module.dilation, module.groups)}
    if module.bias is not None:
        out["bias"] = PerSample(wide_sum(g, tuple(range(2, g.dim()))))
    return out


@register_rule(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
def conv_transpose(module: nn.modules.conv._ConvTransposeNd, call: Call):
    x, g = call.args[0], call.grad
    dims = len(module.kernel_size)
    if x.dim() != dims + 2 or module.padding_mode != "zeros":
        return None
    output_size = call.args[1] if len(call.args) > 1 else call.kwargs.get("output_size")
    output_padding = module._output_padding(x, output_size, module.stride, module.padding,
                                            module.kernel_size, dims, module.dilation)
    out = {"weight": ConvWeight(x, g, tuple(module.weight.shape), module.stride, module.padding,
                                module.dilation, module.groups, transposed=True,
                                output_padding=output_padding)}
    if module.bias is not None:
        out["bias"] = PerSample(wide_sum(g, tuple(range(2, g.dim()))))
    return out
