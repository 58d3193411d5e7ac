"""Loaders returning :class:`LabeledData`, and ``load_dataset`` which finds a named dataset on disk.

Every loader takes ``normalize`` (see :data:`ftdfast.data.normalize.NormalizeArg`): by default the
known statistics of the dataset's name, else the per-channel statistics of its training split.
"""
from __future__ import annotations

import glob
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import formats
from .labeled import LabeledData, from_arrays, stratified_split
from .normalize import NormalizeArg, canonical_name

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
DIGIT_CLASSES = tuple(str(i) for i in range(10))
FASHION_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"   # Debian's dataset-fashion-mnist package

KNOWN_CLASSES = {"mnist": DIGIT_CLASSES, "digits": DIGIT_CLASSES, "fashion-mnist": FASHION_CLASSES}
_TORCHVISION = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST", "cifar10": "CIFAR10", "cifar100": "CIFAR100"}
DATASET_NAMES = ("digits",) + tuple(_TORCHVISION)


def load_digits(test_fraction: float = 0.25, seed: int = 0, normalize: NormalizeArg = "auto") -> LabeledData:
    """scikit-learn's 1,797 8x8 grey digits (no download): x (n, 1, 8, 8) from pixels / 16, classes "0".."9".

    The split is stratified and seeded (:func:`stratified_split`): per digit, a seeded
    ``round(count * test_fraction)`` go to the test side.
    """
    try:
        from sklearn.datasets import load_digits as _sk_digits
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the built-in digits need scikit-learn: pip install scikit-learn") from e
    d = _sk_digits()
    x = torch.tensor(d.images, dtype=torch.float32).div_(16.0)
    y = torch.tensor(d.target, dtype=torch.int64)
    train, test = stratified_split(y, test_fraction, seed)
    return from_arrays("digits", x[train], y[train], x[test], y[test], DIGIT_CLASSES, normalize)


def load_npz(path: str, *, name: Optional[str] = None, classes: Optional[Sequence[str]] = None,
             normalize: NormalizeArg = "auto") -> LabeledData:
    """An ``.npz`` archive with x_train, y_train, x_test, y_test[, classes].

    x: uint8 (N, H, W) grey or (N, H, W, 3) colour (float images in [0, 1] are taken as is);
    y: (N,) integer labels. ``name`` defaults to the file's stem; ``classes`` overrides the archive's;
    without either, "mnist" and "fashion-mnist" get their standard names, others "0", "1", ...
    """
    arrays, stored = formats.read_npz(path)
    name = name or os.path.splitext(os.path.basename(path))[0]
    if classes is None:
        classes = stored if stored is not None else KNOWN_CLASSES.get(canonical_name(name))
    return from_arrays(name, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"],
                       classes, normalize)


def load_idx(directory: str, *, name: Optional[str] = None, classes: Optional[Sequence[str]] = None,
             normalize: NormalizeArg = "auto") -> LabeledData:
    """MNIST-style IDX files (gzipped or not) in ``directory``: train-images-idx3-ubyte[.gz],
    train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz].

    ``name`` defaults to the folder's name; the class names default to Fashion-MNIST's for
    ``"fashion-mnist"``, "0".."9" for ``"mnist"`` and "0", "1", ... (up to the largest label) otherwise.
    """
    files = formats.find_idx_files(directory)
    if files is None:
        raise FileNotFoundError(f"{directory}: no IDX data set here; expected the four files "
                                f"{formats.idx_file_names()}")
    name = name or os.path.basename(os.path.normpath(directory))
    classes = classes if classes is not None else KNOWN_CLASSES.get(canonical_name(name))
    a = {k: formats.read_idx(p) for k, p in files.items()}
    for k in ("x_train", "x_test"):
        if a[k].ndim != 3:
            raise ValueError(f"{files[k]}: IDX images of shape {a[k].shape}; expected (N, H, W)")
    return from_arrays(name, a["x_train"], a["y_train"], a["x_test"], a["y_test"], classes, normalize)


def load_image_folder(root: str, *, test_fraction: float = 0.25, seed: int = 0, mode: str = "auto",
                      size: Optional[Tuple[int, int]] = None, name: Optional[str] = None,
                      normalize: NormalizeArg = "auto") -> LabeledData:
    """Images in class folders (needs Pillow). Two layouts:

    - ``root/train/<class>/*.png`` and ``root/test/<class>/*.png``: the given split; the classes are
      the sub-folders of ``train/`` (a test class folder must be one of them);
    - ``root/<class>/*.png``: split by :func:`stratified_split` with ``test_fraction`` and ``seed``.

    Classes are sorted by folder name; files by name. ``mode``: "auto" (grey when every image is
    grey, else RGB), "L" or "RGB"; ``size``: (h, w) to resize to (otherwise all sizes must agree).
    """
    layout = formats.image_folder_layout(root)
    name = name or os.path.basename(os.path.normpath(root))
    if layout == "split":
        classes, p_train, y_train = formats.class_files(os.path.join(root, "train"))
        extra = sorted(set(formats._subdirs(os.path.join(root, "test"))) - set(classes))
        if extra:
            raise ValueError(f"{os.path.join(root, 'test')}: class folders {extra} are not in "
                             f"{os.path.join(root, 'train')} (classes {classes})")
        _, p_test, y_test = formats.class_files(os.path.join(root, "test"), classes)
        if not p_test:
            raise ValueError(f"{os.path.join(root, 'test')}: no images in its class folders")
        x = formats.read_images(p_train + p_test, mode, size)
        x_train, x_test = x[:len(p_train)], x[len(p_train):]
    else:
        classes, paths, labels = formats.class_files(root)
        x = formats.read_images(paths, mode, size)
        train, test = stratified_split(torch.tensor(labels), test_fraction, seed)
        y = np.asarray(labels)
        x_train, y_train, x_test, y_test = x[train.numpy()], y[train.numpy()], x[test.numpy()], y[test.numpy()]
    return from_arrays(name, x_train, np.asarray(y_train), x_test, np.asarray(y_test), classes, normalize)


def load_torchvision(name: str, root: str, *, download: bool = False,
                     normalize: NormalizeArg = "auto") -> LabeledData:
    """A torchvision dataset ("mnist", "fashion-mnist", "cifar10", "cifar100") stored under ``root``.

    Nothing is downloaded unless ``download=True``. MNIST's classes are named "0".."9".
    """
    key = canonical_name(name)
    if key not in _TORCHVISION:
        raise ValueError(f"torchvision dataset {name!r} is not one of {tuple(_TORCHVISION)}")
    cls_name = _TORCHVISION[key]
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise ImportError(f"loading {name!r} through torchvision needs torchvision: pip install torchvision "
                          f"(or provide {key}.npz / IDX files instead)") from e
    cls = getattr(tvd, cls_name)
    try:
        train = cls(root, train=True, download=download)
        test = cls(root, train=False, download=download)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"torchvision {cls_name} data not found under {os.path.abspath(root)} ({e}); download it once with "
            f"torchvision.datasets.{cls_name}({root!r}, download=True) or load_torchvision({name!r}, {root!r}, "
            f"download=True)") from e

    def arrays(ds) -> Tuple[Any, Any]:
        return np.asarray(ds.data), np.asarray(ds.targets)

    (xa, ya), (xb, yb) = arrays(train), arrays(test)
    classes = DIGIT_CLASSES if key == "mnist" else tuple(str(c) for c in train.classes)
    return from_arrays(key, xa, ya, xb, yb, classes, normalize)


# --- load_dataset ---------------------------------------------------------------------------------

def default_data_dir() -> str:
    """``$FTDFAST_DATA_DIR`` if set, else ``./data``."""
    return os.environ.get("FTDFAST_DATA_DIR") or "data"


def _candidates(key: str, d: str, kw: Dict[str, Any]) -> List[Tuple[str, Callable[[], Optional[LabeledData]]]]:
    """(what is looked for, attempt) in search order; an attempt returns None when its files are absent."""
    def npz(*patterns: str):
        def attempt():
            for pat in patterns:
                hits = sorted(h for h in glob.glob(os.path.join(d, pat))
                              if not (key == "cifar10" and os.path.basename(h).startswith("cifar100")))
                if hits:
                    return load_npz(hits[0], name=key, **kw)
            return None
        return attempt

    def idx(folder: str):
        return lambda: load_idx(folder, name=key, **kw) if formats.find_idx_files(folder) else None

    out = []
    if key in ("mnist", "fashion-mnist"):
        stems = ["mnist.npz"] if key == "mnist" else ["fashion-mnist.npz", "fashion_mnist.npz"]
        out.append((" or ".join(os.path.join(d, s) for s in stems), npz(*stems)))
        dirs = [d, os.path.join(d, key)] + ([os.path.join(d, "fashion_mnist"), FASHION_SYSTEM_DIR]
                                            if key == "fashion-mnist" else [])
        out += [(f"IDX files in {folder}", idx(folder)) for folder in dirs]
    else:
        out.append((f"{os.path.join(d, key)}.npz or {os.path.join(d, key)}*.npz", npz(f"{key}.npz", f"{key}*.npz")))
    out.append((f"torchvision {_TORCHVISION[key]} under {d}", lambda: _torchvision_if_present(key, d, kw)))
    return out


def _torchvision_if_present(key: str, d: str, kw: Dict[str, Any]) -> Optional[LabeledData]:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return None
    try:
        return load_torchvision(key, d, **kw)
    except FileNotFoundError:
        return None


def load_dataset(name_or_path: str, data_dir: Optional[str] = None, **kw: Any) -> LabeledData:
    """A dataset by name or path.

    Names (case-insensitive): ``"digits"`` (scikit-learn, built in: ``seed``, ``test_fraction``),
    ``"mnist"``, ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"``. For a name, ``data_dir``
    (default :func:`default_data_dir`) is searched in this order:

    - mnist: ``mnist.npz``; IDX files in ``data_dir``, then ``data_dir/mnist``; torchvision MNIST;
    - fashion-mnist: ``fashion-mnist.npz``; IDX files in ``data_dir``, ``data_dir/fashion-mnist``,
      ``/usr/share/datasets/fashion-mnist`` (Debian's dataset-fashion-mnist); torchvision FashionMNIST;
    - cifar10 / cifar100: ``cifar10.npz``, else the first ``cifar10*.npz`` (e.g. ``cifar10-small.npz``);
      torchvision CIFAR10 / CIFAR100 (never downloaded).

    A path is loaded by its kind: a ``.npz`` file, a folder with IDX files, or an image folder.
    ``kw`` goes to the loader (``normalize`` for every one).
    """
    key = canonical_name(name_or_path)
    if key == "digits":
        return load_digits(**kw)
    if key in _TORCHVISION:
        d = data_dir if data_dir is not None else default_data_dir()
        candidates = _candidates(key, d, kw)
        for _, attempt in candidates:
            data = attempt()
            if data is not None:
                return data
        looked = "\n  ".join(desc for desc, _ in candidates)
        fix = (f"put {key}.npz (arrays x_train, y_train, x_test, y_test[, classes]) in {d}"
               + (", or the four IDX files " + formats.idx_file_names() if key in ("mnist", "fashion-mnist") else "")
               + (", or apt-get install dataset-fashion-mnist" if key == "fashion-mnist" else "")
               + f", or download once with torchvision.datasets.{_TORCHVISION[key]}({d!r}, download=True)"
               + "; pass data_dir= or set FTDFAST_DATA_DIR to search elsewhere")
        raise FileNotFoundError(f"dataset {key!r} not found; looked for:\n  {looked}\nFix: {fix}")
    path = name_or_path
    if os.path.isfile(path):
        if path.lower().endswith(".npz"):
            return load_npz(path, **kw)
        raise ValueError(f"{path}: not a .npz file; pass a .npz archive, a folder of IDX files or an image folder")
    if os.path.isdir(path):
        if formats.find_idx_files(path):
            return load_idx(path, **kw)
        return load_image_folder(path, **kw)
    raise FileNotFoundError(f"{path}: no such file or directory, and not a dataset name "
                            f"(known names: {', '.join(DATASET_NAMES)})")
