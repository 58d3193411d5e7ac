"""Small on-disk datasets written by the tests themselves."""
from __future__ import annotations

import gzip
import os

import numpy as np


def rand_images(rng: np.random.Generator, n: int, h: int, w: int, colour: bool = False) -> np.ndarray:
    return rng.integers(0, 256, size=(n, h, w, 3) if colour else (n, h, w), dtype=np.uint8)


def write_npz(path, rng, *, n=7, m=5, h=5, w=6, colour=False, k=3, classes=True):
    arrays = dict(x_train=rand_images(rng, n, h, w, colour), y_train=np.arange(n, dtype=np.uint8) % k,
                  x_test=rand_images(rng, m, h, w, colour), y_test=np.arange(m, dtype=np.uint8)[::-1] % k)
    if classes:
        arrays["classes"] = np.array([f"class{i}" for i in range(k)])
    np.savez(path, **arrays)
    return arrays


def write_idx(path: str, a: np.ndarray, gz: bool) -> None:
    """An IDX file of the uint8 array ``a`` (the MNIST format), gzipped when ``gz``."""
    raw = bytes([0, 0, 0x08, a.ndim]) + np.array(a.shape, dtype=">u4").tobytes() + a.astype(np.uint8).tobytes()
    if gz:
        raw = gzip.compress(raw)
    with open(path, "wb") as f:
        f.write(raw)


def write_idx_set(directory, rng, *, gz: bool, n=9, m=4, h=4, w=3, k=10):
    os.makedirs(directory, exist_ok=True)
    arrays = dict(x_train=rand_images(rng, n, h, w), y_train=(np.arange(n) % k).astype(np.uint8),
                  x_test=rand_images(rng, m, h, w), y_test=(np.arange(m) % k).astype(np.uint8))
    ext = ".gz" if gz else ""
    names = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte"}
    for key, stem in names.items():
        write_idx(os.path.join(str(directory), stem + ext), arrays[key], gz)
    return arrays


def write_pngs(folder, images: np.ndarray, prefix: str = "img") -> None:
    from PIL import Image
    os.makedirs(folder, exist_ok=True)
    for i, a in enumerate(images):
        Image.fromarray(a).save(os.path.join(str(folder), f"{prefix}{i:02d}.png"))
