"""One user seed, many independent streams: :func:`derive_seed`.

Every random choice of a search (the candidate pools of every FUSE iteration, the candidates' initial
weights, the train/validation split, the batch order) takes its seed from ``derive_seed(user_seed, *labels)``
with labels that name the stream, e.g. ``("baseline", fingerprint)``, ``("ta_nas",)``, ``("fuse_general",)``,
``("random_general",)``, then ``("iteration", 3)`` inside a search. Two streams with different labels are
independent (a SHA-256 of the labels), so the baselines of a dictionary, the target's TA-NAS search and the
general-space baselines never draw the same candidate pools, while a rerun with the same user seed repeats
every one of them.
"""
from __future__ import annotations

import hashlib
from typing import Union

import numpy as np

Label = Union[str, int]


def derive_seed(seed: int, *labels: Label) -> int:
    """A seed in ``[0, 2**63)`` for the stream ``labels`` of the user seed ``seed``.

    ``derive_seed(s)`` (no labels) is ``s`` itself when ``0 <= s < 2**63``, so a caller that derives nothing
    keeps the seed it was given. Labels are strings or ints; ``derive_seed(0, "a", 1)`` differs from
    ``derive_seed(0, "a1")`` and from ``derive_seed(1, "a")``.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {seed!r}")
    seed = int(seed)
    if not labels and 0 <= seed < 2 ** 63:
        return seed
    h = hashlib.sha256(repr(seed).encode())
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, (str, int, np.integer)):
            raise TypeError(f"seed labels are strings or ints, got {label!r}")
        h.update(b"\x00" + type(label).__name__.encode()[:1] + str(label).encode())
    return int.from_bytes(h.digest()[:8], "little") >> 1
