"""Models the user names on the command line as ``module:factory`` (``ftdfast fisher --model``, ``check``)."""
from __future__ import annotations

import importlib
import os
import sys
from typing import Optional

import torch


def load_user_model(spec: str, weights: Optional[str] = None) -> torch.nn.Module:
    """The model ``spec`` = ``"module:factory"`` names (a factory called with no arguments, or an ``nn.Module``
    instance), with ``weights`` loaded (any state file or ``save_pretrained`` folder
    :func:`ftdfast.uses.checkpoints.read_weights` reads), in eval mode; a ValueError naming the problem otherwise.
    The working directory is put on ``sys.path`` so that a local module is found."""
    from ..uses.checkpoints import read_weights
    if ":" not in spec:
        raise ValueError(f"--model must be module:factory (e.g. mypkg.models:make_net), got {spec!r}")
    mod_name, attr = spec.split(":", 1)
    sys.path.insert(0, os.getcwd())
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"--model {spec}: cannot import {attr!r} from {mod_name!r}: {e}") from None
    model = factory() if callable(factory) and not isinstance(factory, torch.nn.Module) else factory
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"--model {spec} gave {type(model).__name__}, not an nn.Module")
    if weights:
        state = read_weights(weights, "--weights")
        try:
            model.load_state_dict(state)
        except (RuntimeError, TypeError, KeyError) as e:
            raise ValueError(f"{weights}: does not fit --model {spec}: {e}") from None
    return model.eval()
