"""Every bad input gets an error that names the problem."""
import os

import numpy as np
import pytest
import torch

from ftdfast.data import (LabeledData, augment, from_tensors, load_dataset, load_idx, load_image_folder, load_npz,
                          load_torchvision, stratified_split)
from ftdfast.data.formats import read_idx

from .helpers import rand_images, write_idx, write_idx_set, write_pngs

X = np.zeros((4, 3, 3), np.uint8)
Y = np.array([0, 1, 2, 0])


def test_missing_npz_names_the_path(tmp_path):
    path = str(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="nope.npz: no such .npz file"):
        load_npz(path)


def test_npz_missing_array(tmp_path):
    np.savez(tmp_path / "part.npz", x_train=X, y_train=Y, x_test=X)
    with pytest.raises(ValueError, match=r"has no y_test .*expected x_train, y_train, x_test, y_test"):
        load_npz(str(tmp_path / "part.npz"))


@pytest.mark.parametrize("shape", [(4, 5), (4, 2, 2, 2, 2), (4, 2, 2, 2)], ids=["2d", "5d", "2-channels"])
def test_wrong_image_shape(shape):
    with pytest.raises(ValueError, match=r"x_train has shape \(4, .*\); expected \(N, H, W\) grey or \(N, H, W, 3\)"):
        from_tensors(np.zeros(shape, np.uint8), Y, X, Y)


def test_label_out_of_range_with_class_names():
    with pytest.raises(ValueError, match=r"y_test has labels out of range \[0, 3\): label 7 at sample 2"):
        from_tensors(X, Y, X, np.array([0, 1, 7, 0]), classes=["a", "b", "c"])


def test_negative_label():
    with pytest.raises(ValueError, match=r"y_train has labels out of range .*label -1 at sample 1"):
        from_tensors(X, np.array([0, -1, 0, 0]), X, Y)


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="x_train has 4 samples but y_train has 3"):
        from_tensors(X, Y[:3], X, Y)


def test_empty_split():
    with pytest.raises(ValueError, match=r"x_test is empty \(0 samples\)"):
        from_tensors(X, Y, X[:0], Y[:0])


def test_train_and_test_image_shapes_differ():
    with pytest.raises(ValueError, match=r"x_train images are \(1, 3, 3\) but x_test images are \(1, 3, 4\)"):
        from_tensors(X, Y, np.zeros((4, 3, 4), np.uint8), Y)


def test_float_labels_and_bad_pixel_dtype():
    with pytest.raises(ValueError, match="y_train has dtype torch.float32; expected integer class labels"):
        from_tensors(X, Y.astype(np.float32), X, Y)
    with pytest.raises(ValueError, match="x_train has dtype torch.int64; expected uint8"):
        from_tensors(X.astype(np.int64), Y, X, Y)


def test_bad_normalize_arguments():
    with pytest.raises(ValueError, match="normalize='median' is not one of"):
        from_tensors(X, Y, X, Y, normalize="median")
    with pytest.raises(ValueError, match=r"needs 1 values each \(one per channel\), got 3 and 3"):
        from_tensors(X, Y, X, Y, normalize=((0.1, 0.2, 0.3), (1, 1, 1)))
    with pytest.raises(ValueError, match="std values must be > 0"):
        from_tensors(X, Y, X, Y, normalize=((0.1,), (0.0,)))


def test_labeled_data_checks_its_fields():
    x, y = torch.zeros(2, 1, 2, 2), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"class names must be unique, repeated: \['a'\]"):
        LabeledData("t", x, y, x, y, ("a", "a"), (0.0,), (1.0,))
    with pytest.raises(ValueError, match="y_train must be an int64 tensor"):
        LabeledData("t", x, y.int(), x, y, ("a", "b"), (0.0,), (1.0,))
    with pytest.raises(ValueError, match=r"mean and std need one value per channel \(1\)"):
        LabeledData("t", x, y, x, y, ("a", "b"), (0.0, 0.0), (1.0,))


def test_subset_bounds():
    d = from_tensors(X, Y, X, Y)
    with pytest.raises(ValueError, match=r"keep between 1 and 4 samples"):
        d.subset(train=5)
    with pytest.raises(ValueError, match=r"indices outside \[0, 4\)"):
        d.subset(test=[0, 4])


def test_idx_folder_without_files_lists_the_names(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no IDX data set here; expected .*train-images-idx3-ubyte\[.gz\]"):
        load_idx(str(tmp_path))


def test_idx_bad_header_and_truncated_file(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x08\x01\x00")
    with pytest.raises(ValueError, match="bad: not an IDX file"):
        read_idx(str(tmp_path / "bad"))
    write_idx(str(tmp_path / "short"), np.zeros((3, 2, 2), np.uint8), gz=True)
    raw = __import__("gzip").decompress((tmp_path / "short").read_bytes())[:-1]
    (tmp_path / "short").write_bytes(raw)
    with pytest.raises(ValueError, match=r"declares shape \(3, 2, 2\) \(12 values\) but the file holds 11"):
        read_idx(str(tmp_path / "short"))


def test_idx_labels_out_of_range_for_mnist(tmp_path):
    write_idx_set(tmp_path / "mnist", np.random.default_rng(0), gz=False)
    write_idx(str(tmp_path / "mnist" / "t10k-labels-idx1-ubyte"), np.array([0, 1, 2, 10], np.uint8), gz=False)
    with pytest.raises(ValueError, match=r"y_test has labels out of range \[0, 10\): label 10 at sample 3"):
        load_idx(str(tmp_path / "mnist"))


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing: no such image folder"):
        load_image_folder(str(tmp_path / "missing"))
    (tmp_path / "flat").mkdir()
    with pytest.raises(ValueError, match="flat: no class sub-folders"):
        load_image_folder(str(tmp_path / "flat"))
    (tmp_path / "flat" / "a").mkdir()
    with pytest.raises(ValueError, match="class folder without images"):
        load_image_folder(str(tmp_path / "flat"))
    rng = np.random.default_rng(0)
    write_pngs(tmp_path / "s" / "train" / "a", rand_images(rng, 2, 2, 2))
    write_pngs(tmp_path / "s" / "test" / "b", rand_images(rng, 1, 2, 2))
    with pytest.raises(ValueError, match=r"class folders \['b'\] are not in"):
        load_image_folder(str(tmp_path / "s"))
    (tmp_path / "junk" / "a").mkdir(parents=True)
    (tmp_path / "junk" / "a" / "x.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="x.png: not a readable image"):
        load_image_folder(str(tmp_path / "junk"))


def test_torchvision_missing_names_the_root(tmp_path):
    pytest.importorskip("torchvision")
    with pytest.raises(FileNotFoundError, match=rf"CIFAR10 data not found under {tmp_path}.*download=True"):
        load_torchvision("cifar10", str(tmp_path))
    with pytest.raises(ValueError, match="is not one of"):
        load_torchvision("svhn", str(tmp_path))


def test_load_dataset_not_found_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("mnist", str(tmp_path))
    msg = str(e.value)
    for part in [os.path.join(str(tmp_path), "mnist.npz"), f"IDX files in {tmp_path}", "torchvision MNIST under",
                 "Fix:", "download=True", "FTDFAST_DATA_DIR"]:
        assert part in msg
    with pytest.raises(FileNotFoundError, match="no such file or directory, and not a dataset name"):
        load_dataset(str(tmp_path / "svhn"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a .npz file"):
        load_dataset(str(tmp_path / "notes.txt"))


def test_split_and_augment_arguments():
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        stratified_split([0, 1], 1.0)
    g = torch.Generator()
    with pytest.raises(ValueError, match=r"needs a \(n, c, h, w\) tensor"):
        augment(torch.zeros(2, 3, 3), g)
    with pytest.raises(ValueError, match="crop_padding must be an int >= 0"):
        augment(torch.zeros(1, 1, 3, 3), g, crop_padding=-1)
