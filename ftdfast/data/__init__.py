"""Labelled image data: loaders (npz, IDX, image folders, torchvision, scikit-learn digits, tensors),
per-channel normalization and augmentation.

    >>> from ftdfast.data import load_dataset
    >>> data = load_dataset("digits")          # built in, no download
    >>> data.x_train.shape, data.classes[:3]   # (n, 1, 8, 8), ('0', '1', '2')
"""
from .augment import augment
from .labeled import LabeledData, from_tensors, stratified_split
from .loaders import (DATASET_NAMES, default_data_dir, load_dataset, load_digits, load_idx, load_image_folder,
                      load_npz, load_torchvision)
from .normalize import KNOWN_STATS, channel_stats, denormalize

__all__ = ["LabeledData", "load_dataset", "load_digits", "load_npz", "load_idx", "load_image_folder",
           "load_torchvision", "from_tensors", "augment", "stratified_split", "KNOWN_STATS", "channel_stats",
           "denormalize", "default_data_dir", "DATASET_NAMES"]
