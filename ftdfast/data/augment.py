"""Training-time augmentation: random crop with zero padding, and random horizontal flip."""
from __future__ import annotations

import torch


def augment(x: torch.Tensor, generator: torch.Generator, *, crop_padding: int = 2,
            flip: bool = True) -> torch.Tensor:
    """A randomly shifted (and optionally mirrored) copy of the batch ``x`` (n, c, h, w).

    Each sample is zero-padded by ``crop_padding`` pixels on every side and cropped back to
    (h, w) at an offset drawn uniformly from ``[0, 2 * crop_padding]`` per axis; with ``flip``
    it is mirrored left-right with probability 1/2. (Zero is the channel mean of normalized
    data.) Flips suit natural images; for digits and text the caller should pass
    ``flip=False``. The draws come from ``generator`` (a CPU generator), so the result is a
    function of ``x`` and the generator's state; ``x`` is not modified.

    Returns a new tensor of the shape, dtype and device of ``x``.
    """
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"augment needs a (n, c, h, w) tensor, got shape {tuple(getattr(x, 'shape', ()))}")
    if not isinstance(crop_padding, int) or crop_padding < 0:
        raise ValueError(f"crop_padding must be an int >= 0, got {crop_padding!r}")
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    n, c, h, w = x.shape
    p = crop_padding
    out = x
    if p > 0:
        oy = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * p + 1, (n,), generator=generator).to(x.device)
        padded = torch.nn.functional.pad(x, (p, p, p, p))
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (n, 1, h, 1)
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (n, 1, 1, w)
        ni = torch.arange(n, device=x.device)[:, None, None, None]
        ci = torch.arange(c, device=x.device)[None, :, None, None]
        out = padded[ni, ci, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out if out is not x else x.clone()
