import numpy as np
import pytest
import torch

from ftdfast.data import (KNOWN_STATS, LabeledData, denormalize, from_tensors, load_dataset, load_digits,
                          load_idx, load_image_folder, load_npz, load_torchvision)
from ftdfast.data.loaders import FASHION_CLASSES

from .helpers import rand_images, write_idx_set, write_npz, write_pngs


def _pixels(a: np.ndarray) -> torch.Tensor:
    """uint8 (n, h, w[, 3]) -> the float (n, c, h, w) a loader should produce before normalization."""
    t = torch.from_numpy(a).float() / 255
    return t.unsqueeze(1) if a.ndim == 3 else t.permute(0, 3, 1, 2)


def _raw(d: LabeledData) -> tuple:
    return denormalize(d.x_train, d.mean, d.std), denormalize(d.x_test, d.mean, d.std)


@pytest.mark.parametrize("colour", [False, True], ids=["grey", "colour"])
def test_npz_round_trip(tmp_path, colour):
    a = write_npz(tmp_path / "toy.npz", np.random.default_rng(0), colour=colour)
    d = load_npz(str(tmp_path / "toy.npz"), normalize=None)
    assert d.name == "toy" and d.classes == ("class0", "class1", "class2")
    assert d.input_shape == ((3 if colour else 1), 5, 6)
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    torch.testing.assert_close(d.x_train, _pixels(a["x_train"]), rtol=0, atol=0)
    torch.testing.assert_close(d.x_test, _pixels(a["x_test"]), rtol=0, atol=0)
    assert d.y_train.tolist() == a["y_train"].tolist() and d.y_test.tolist() == a["y_test"].tolist()


def test_npz_normalized_by_default_and_invertible(tmp_path):
    a = write_npz(tmp_path / "toy.npz", np.random.default_rng(1), colour=True)
    d = load_dataset(str(tmp_path / "toy.npz"))
    assert d.x_train.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    torch.testing.assert_close(d.x_train.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), rtol=0, atol=1e-5)
    x_train, x_test = _raw(d)
    torch.testing.assert_close(x_train, _pixels(a["x_train"]), rtol=0, atol=1e-6)
    torch.testing.assert_close(x_test, _pixels(a["x_test"]), rtol=0, atol=1e-6)


def test_npz_without_classes_names_them_by_index(tmp_path):
    write_npz(tmp_path / "plain.npz", np.random.default_rng(2), k=4, classes=False)
    assert load_npz(str(tmp_path / "plain.npz")).classes == ("0", "1", "2", "3")


@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "plain"])
def test_idx_round_trip(tmp_path, gz):
    a = write_idx_set(tmp_path / "mnist", np.random.default_rng(3), gz=gz)
    d = load_idx(str(tmp_path / "mnist"), normalize=None)
    assert d.name == "mnist" and d.classes == tuple(str(i) for i in range(10))
    torch.testing.assert_close(d.x_train, _pixels(a["x_train"]), rtol=0, atol=0)
    torch.testing.assert_close(d.x_test, _pixels(a["x_test"]), rtol=0, atol=0)
    assert d.y_test.tolist() == a["y_test"].tolist()
    assert d.y_train.tolist() == a["y_train"].tolist()


def test_load_dataset_mnist_prefers_npz_then_idx(tmp_path):
    a = write_idx_set(tmp_path / "mnist", np.random.default_rng(4), gz=True)
    d = load_dataset("MNIST", str(tmp_path))
    assert d.name == "mnist" and d.mean == KNOWN_STATS["mnist"][0]
    torch.testing.assert_close(_raw(d)[0], _pixels(a["x_train"]), rtol=0, atol=1e-6)
    write_npz(tmp_path / "mnist.npz", np.random.default_rng(5), n=3, m=2, k=2)
    assert load_dataset("mnist", str(tmp_path)).x_train.shape[0] == 3


def test_load_dataset_fashion_mnist_idx_gets_class_names(tmp_path):
    write_idx_set(tmp_path / "fashion-mnist", np.random.default_rng(6), gz=True)
    d = load_dataset("fashion_mnist", str(tmp_path))
    assert d.name == "fashion-mnist" and d.classes == FASHION_CLASSES
    assert d.mean == KNOWN_STATS["fashion-mnist"][0]


def test_load_dataset_cifar10_finds_small_npz_not_cifar100(tmp_path):
    write_npz(tmp_path / "cifar100.npz", np.random.default_rng(7), colour=True)
    with pytest.raises(FileNotFoundError, match="cifar10"):
        load_dataset("cifar10", str(tmp_path))
    write_npz(tmp_path / "cifar10-small.npz", np.random.default_rng(8), n=4, colour=True)
    d = load_dataset("CIFAR-10", str(tmp_path))
    assert d.name == "cifar10" and d.x_train.shape == (4, 3, 5, 6)
    assert (d.mean, d.std) == KNOWN_STATS["cifar10"]
    assert load_dataset("cifar100", str(tmp_path)).x_train.shape[0] == 7


def test_load_dataset_uses_env_data_dir(tmp_path, monkeypatch):
    write_npz(tmp_path / "mnist.npz", np.random.default_rng(9), n=6)
    monkeypatch.setenv("FTDFAST_DATA_DIR", str(tmp_path))
    assert load_dataset("mnist").x_train.shape[0] == 6


def test_torchvision_mnist_from_raw_files(tmp_path):
    pytest.importorskip("torchvision")
    a = write_idx_set(tmp_path / "MNIST" / "raw", np.random.default_rng(10), gz=False)
    d = load_torchvision("mnist", str(tmp_path), normalize=None)
    assert d.classes == tuple(str(i) for i in range(10))
    torch.testing.assert_close(d.x_test, _pixels(a["x_test"]), rtol=0, atol=0)
    assert d.y_train.tolist() == a["y_train"].tolist()


def test_image_folder_with_train_and_test(tmp_path):
    rng = np.random.default_rng(11)
    imgs = {(s, c): rand_images(rng, n, 4, 5, colour=True) for s, c, n in
            [("train", "cat", 3), ("train", "dog", 2), ("test", "cat", 1), ("test", "dog", 2)]}
    for (s, c), a in imgs.items():
        write_pngs(tmp_path / "pets" / s / c, a)
    d = load_image_folder(str(tmp_path / "pets"), normalize=None)
    assert d.name == "pets" and d.classes == ("cat", "dog") and d.input_shape == (3, 4, 5)
    assert d.y_train.tolist() == [0, 0, 0, 1, 1] and d.y_test.tolist() == [0, 1, 1]
    want = np.concatenate([imgs["train", "cat"], imgs["train", "dog"]])
    torch.testing.assert_close(d.x_train, _pixels(want), rtol=0, atol=0)


def test_image_folder_single_split_is_stratified_and_seeded(tmp_path):
    rng = np.random.default_rng(12)
    for c, n in [("a", 8), ("b", 5), ("c", 3)]:
        write_pngs(tmp_path / "grey" / c, rand_images(rng, n, 3, 3))
    root = str(tmp_path / "grey")
    d = load_dataset(root, seed=0)
    assert d.input_shape == (1, 3, 3)
    # per class round(n / 4) go to test: 2, 1, 1
    assert torch.bincount(d.y_test).tolist() == [2, 1, 1]
    assert torch.bincount(d.y_train).tolist() == [6, 4, 2]
    assert d.fingerprint() == load_image_folder(root, seed=0).fingerprint()
    prints = {load_image_folder(root, seed=s).fingerprint() for s in range(4)}
    assert len(prints) > 1


def test_image_folder_resizes_on_request(tmp_path):
    rng = np.random.default_rng(13)
    write_pngs(tmp_path / "r" / "train" / "x", rand_images(rng, 2, 4, 4))
    write_pngs(tmp_path / "r" / "test" / "x", rand_images(rng, 1, 6, 5))
    with pytest.raises(ValueError, match=r"pass size=\(h, w\)"):
        load_image_folder(str(tmp_path / "r"))
    assert load_image_folder(str(tmp_path / "r"), size=(3, 7)).input_shape == (1, 3, 7)


def test_from_tensors_keeps_inputs_and_accepts_layouts():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 2, 3, 5, generator=g)
    before = x.clone()
    d = from_tensors(x, torch.tensor([0, 1, 2, 0, 1, 2]), x[:2], torch.tensor([1, 1]), classes=["p", "q", "r"])
    assert torch.equal(x, before)
    torch.testing.assert_close(denormalize(d.x_train, d.mean, d.std), x, rtol=0, atol=1e-6)
    u8 = rand_images(np.random.default_rng(1), 4, 3, 2, colour=True)
    e = from_tensors(u8, np.array([0, 1, 0, 1]), u8, np.array([1, 0, 0, 0]), normalize=None)
    torch.testing.assert_close(e.x_train, _pixels(u8), rtol=0, atol=0)
    assert e.classes == ("0", "1")


def test_digits_split_is_stratified_deterministic_and_seeded():
    from sklearn.datasets import load_digits as sk
    counts = np.bincount(sk().target)
    d = load_digits()
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    assert d.x_train.shape[0] + d.x_test.shape[0] == counts.sum()
    assert torch.bincount(d.y_test).tolist() == [int(np.floor(c / 4 + 0.5)) for c in counts]
    assert d.fingerprint() == load_digits().fingerprint()
    assert d.fingerprint() != load_digits(seed=1).fingerprint()
    assert load_dataset("digits").fingerprint() == d.fingerprint()


def test_subset_first_k_and_indices():
    d = from_tensors(torch.arange(10.).view(10, 1, 1, 1), torch.arange(10) % 2, torch.zeros(3, 1, 1, 1),
                     torch.tensor([0, 1, 0]), normalize=None)
    s = d.subset(train=4)
    assert s.x_train.flatten().tolist() == [0, 1, 2, 3] and s.x_test.shape[0] == 3
    t = d.subset(train=[9, 2], test=torch.tensor([1]))
    assert t.x_train.flatten().tolist() == [9, 2] and t.y_test.tolist() == [1]
    assert s.fingerprint() != d.fingerprint() and s.classes == d.classes


def test_fingerprint_stable_cached_and_sensitive():
    x = torch.rand(5, 1, 3, 3, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 1, 2, 0, 1])
    make = lambda x=x, classes=("a", "b", "c"): from_tensors(x, y, x, y, classes=classes, normalize=None)  # noqa
    d = make()
    assert d.fingerprint() == make().fingerprint() and len(d.fingerprint()) == 64
    assert d.fingerprint() is d.fingerprint()
    x2 = x.clone()
    x2[4, 0, 2, 2] += 1e-3
    assert make(x=x2).fingerprint() != d.fingerprint()
    assert make(classes=("a", "b", "z")).fingerprint() != d.fingerprint()


def test_sample_is_random_seeded_and_safe_for_class_sorted_files():
    from ftdfast.data import from_tensors
    y = torch.arange(10).repeat_interleave(50)  # sorted by class, like the shared mnist.npz
    data = from_tensors(torch.rand(500, 1, 4, 4), y, torch.rand(100, 1, 4, 4), torch.arange(10).repeat_interleave(10))
    s = data.sample(train=100, test=30, seed=1)
    assert len(s.y_train) == 100 and len(s.y_test) == 30
    assert len(set(s.y_train.tolist())) == 10  # first-100 would hold classes 0 and 1 only
    assert torch.equal(data.sample(train=100, seed=1).y_train, s.y_train)
    assert not torch.equal(data.sample(train=100, seed=2).y_train, s.y_train)
    with pytest.raises(ValueError, match="keep between 1 and 500"):
        data.sample(train=501)
