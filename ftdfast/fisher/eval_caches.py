"""Parameter-derived tensors that modules cache in eval mode, and how the Fisher pass bypasses them.

timm's LeViT and EfficientFormer(V2) attention modules keep ``attention_biases[:, idx]`` in a
dict ``attention_bias_cache`` (device -> tensor) while not training. A cached tensor made under
``torch.no_grad`` (an evaluation pass before the Fisher, or ftdfast's own determinism check) is
cut off from its parameter, so autograd sees no dependence and the parameter's Fisher would come
out as exactly zero; one made in an earlier pass holds that pass's graph. A per-sample gradient
through ``torch.func`` sees the cache instead of the parameter it swaps in. ftdfast therefore
empties these caches before every forward that records a graph and around every ``torch.func``
call: each forward recomputes the tensor from the parameter (the module refills its cache, which
is all the cache is for). The user's numbers and parameters are unchanged.
"""
from __future__ import annotations

from typing import List, Tuple

import torch.nn as nn

CACHE_ATTRIBUTES = ("attention_bias_cache",)  # timm: levit, efficientformer, efficientformer_v2, tiny_vit, ...


def find_caches(model: nn.Module) -> List[Tuple[nn.Module, str]]:
    """The (module, attribute) pairs under ``model`` that hold a known eval-mode cache (a dict)."""
    return [(m, a) for m in model.modules() for a in CACHE_ATTRIBUTES if isinstance(getattr(m, a, None), dict)]


def clear_caches(caches: List[Tuple[nn.Module, str]]) -> None:
    """Empty each cache in place (the modules refill them on their next forward)."""
    for module, attribute in caches:
        cache = getattr(module, attribute, None)
        if isinstance(cache, dict):
            cache.clear()
