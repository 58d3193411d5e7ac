"""Readers for the on-disk formats: ``.npz`` archives, MNIST-style IDX files, image folders.

Each returns NumPy arrays; :mod:`ftdfast.data.loaders` turns them into ``LabeledData``. :func:`read_npz_split`
reads one split of an ``.npz`` as ``(X, y)`` tensors (the CLI's ``--data``).
"""
from __future__ import annotations

import gzip
import math
import os
import zipfile
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def read_npz(path: str) -> Tuple[Dict[str, np.ndarray], Optional[List[str]]]:
    """The arrays x_train, y_train, x_test, y_test of an ``.npz`` file and its optional ``classes``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such .npz file; expected an archive with the arrays "
                                f"{', '.join(NPZ_KEYS)}[, classes]")
    with np.load(path, allow_pickle=False) as f:
        missing = [k for k in NPZ_KEYS if k not in f.files]
        if missing:
            raise ValueError(f"{path}: the .npz archive has no {', '.join(missing)} (it has {sorted(f.files)}); "
                             f"expected {', '.join(NPZ_KEYS)}[, classes]")
        arrays = {k: f[k] for k in NPZ_KEYS}
        classes = [str(c) for c in f["classes"].reshape(-1)] if "classes" in f.files else None
    return arrays, classes


# --- IDX (the MNIST file format) ---------------------------------------------------------------

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
IDX_NAMES = {"x_train": ("train", "images", 3), "y_train": ("train", "labels", 1),
             "x_test": ("t10k", "images", 3), "y_test": ("t10k", "labels", 1)}


def read_idx(path: str) -> np.ndarray:
    """One IDX file (gzipped or not, detected by its first bytes) as an array of its declared shape."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such IDX file")
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: a corrupt gzip file ({e})") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES:
        raise ValueError(f"{path}: not an IDX file (header {raw[:4].hex() or 'empty'}; expected 00 00 <type> <ndim>)")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: IDX header declares {ndim} dimensions but the file ends after {len(raw)} bytes")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    dtype = np.dtype(_IDX_TYPES[raw[2]])
    count = math.prod(shape)
    have = (len(raw) - 4 - 4 * ndim) // dtype.itemsize
    if have != count:
        raise ValueError(f"{path}: IDX header declares shape {shape} ({count} values) but the file holds {have}")
    return np.frombuffer(raw, dtype, count, 4 + 4 * ndim).reshape(shape).astype(dtype.newbyteorder("="))


def find_idx_files(directory: str) -> Optional[Dict[str, str]]:
    """The four IDX files of ``directory`` (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
    ``t10k-...``; ``.idx`` spellings too), or None when any is missing."""
    found = {}
    for key, (prefix, kind, d) in IDX_NAMES.items():
        for stem in (f"{prefix}-{kind}-idx{d}-ubyte", f"{prefix}-{kind}.idx{d}-ubyte"):
            hit = next((os.path.join(directory, stem + ext) for ext in ("", ".gz")
                        if os.path.isfile(os.path.join(directory, stem + ext))), None)
            if hit:
                found[key] = hit
                break
        else:
            return None
    return found


def idx_file_names() -> str:
    return ", ".join(f"{p}-{k}-idx{d}-ubyte[.gz]" for p, k, d in IDX_NAMES.values())


# --- image folders ------------------------------------------------------------------------------

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _subdirs(path: str) -> List[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def class_files(root: str, classes: Optional[Sequence[str]] = None) -> Tuple[List[str], List[str], List[int]]:
    """(class names, image paths, labels) of ``root/<class>/<image>``; classes sorted by folder name."""
    names = list(classes) if classes is not None else _subdirs(root)
    if not names:
        raise ValueError(f"{root}: no class sub-folders; expected {root}/<class>/<image files>")
    paths, labels = [], []
    for k, name in enumerate(names):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        files = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS)
                       and os.path.isfile(os.path.join(folder, f)))
        if not files and classes is None:
            raise ValueError(f"{folder}: class folder without images (looked for {', '.join(IMAGE_EXTENSIONS)})")
        paths += [os.path.join(folder, f) for f in files]
        labels += [k] * len(files)
    return names, paths, labels


def read_images(paths: Sequence[str], mode: str = "auto", size: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Images as uint8 (n, h, w) for grey or (n, h, w, 3) for colour.

    ``mode``: ``"L"`` grey, ``"RGB"`` colour, ``"auto"``: grey when every image is grey, else colour.
    ``size``: (h, w) to resize every image to; without it all images must share one size.
    """
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("reading an image folder needs Pillow: pip install pillow") from e
    if mode not in ("auto", "L", "RGB"):
        raise ValueError(f"mode={mode!r} is not one of 'auto', 'L', 'RGB'")
    images = []
    for p in paths:
        try:
            with Image.open(p) as im:
                im.load()
                images.append(im.copy())
        except OSError as e:
            raise ValueError(f"{p}: not a readable image ({e})") from e
    if mode == "auto":
        mode = "L" if all(im.mode in _GREY_MODES for im in images) else "RGB"
    arrays = []
    for p, im in zip(paths, images):
        im = im.convert(mode)
        if size is not None:
            im = im.resize((int(size[1]), int(size[0])), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        if arrays and a.shape != arrays[0].shape:
            raise ValueError(f"{p} is {a.shape[1]}x{a.shape[0]} (w x h) but {paths[0]} is "
                             f"{arrays[0].shape[1]}x{arrays[0].shape[0]}; pass size=(h, w) to resize all images")
        arrays.append(a)
    return np.stack(arrays)


def image_folder_layout(root: str) -> str:
    """``"split"`` when ``root`` has ``train/`` and ``test/`` sub-folders, else ``"single"``."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such image folder")
    return "split" if all(os.path.isdir(os.path.join(root, s)) for s in ("train", "test")) else "single"


def first_line(error: BaseException) -> str:
    """``"Type: first line of the message"``, without torch's advice to retry with weights_only=False."""
    first = (str(error).splitlines() or [""])[0]
    if "weights" in first.lower():
        first = "it holds objects other than tensors and plain data"
    return f"{type(error).__name__}: {first}"


def open_npz(path: str, option: str):
    """``np.load(path)`` of an .npz archive (no pickles), or an error naming the file and ``option`` (the
    argument it came from)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file ({option})")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: not a readable .npz archive (given as {option}); write one with "
                         "numpy.savez(path, x=..., y=...)") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: a single .npy array, not an .npz archive of named arrays ({option}); write it "
                         "with numpy.savez")
    return archive


def read_npz_split(path: str, split: str, option: str = "--data"):
    """``(X, y)`` tensors from an .npz with ``x_<split>``/``y_<split>`` (or ``x``/``y``) arrays, for the CLI's
    ``--data``. uint8 images become floats in [0, 1], channels first: (n, h, w) -> (n, 1, h, w),
    (n, h, w, c) -> (n, c, h, w); integer labels int64, float targets float32. ``option`` names the argument in
    errors."""
    with open_npz(path, option) as z:
        keys = (f"x_{split}", f"y_{split}") if f"x_{split}" in z else ("x", "y")
        if keys[0] not in z or keys[1] not in z:
            raise ValueError(f"{path}: expected arrays x_{split}/y_{split} (or x/y); found {sorted(z.files)}")
        try:
            x, y = z[keys[0]], z[keys[1]]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            why = "it holds Python objects, which are not loaded" if "pickle" in str(e) else first_line(e)
            raise ValueError(f"{path}: array {keys[0]} or {keys[1]} cannot be read ({why}); save numeric arrays "
                             "with numpy.savez") from None
    for key, a in zip(keys, (x, y)):
        if a.dtype.kind not in "biuf":
            raise ValueError(f"{path}: array {key} has dtype {a.dtype}; expected numbers (uint8 images, floats, "
                             "integer labels)")
        if a.ndim == 0:
            raise ValueError(f"{path}: array {key} is a scalar; expected one entry per sample")
    if len(x) != len(y):
        raise ValueError(f"{path}: {len(x)} inputs but {len(y)} labels")
    xt = torch.from_numpy(np.ascontiguousarray(x))
    if x.dtype == np.uint8:
        xt = xt.float() / 255.0
        if xt.dim() == 3:
            xt = xt.unsqueeze(1)
        elif xt.dim() == 4 and xt.shape[-1] in (1, 3):
            xt = xt.permute(0, 3, 1, 2).contiguous()
    else:
        xt = xt.float()
    yt = torch.from_numpy(np.ascontiguousarray(y))
    yt = yt.long() if not np.issubdtype(y.dtype, np.floating) else yt.float()
    return xt, yt
