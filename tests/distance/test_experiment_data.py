"""`ftdfast distance` on other data: Fashion-MNIST (IDX files, as Debian's dataset-fashion-mnist installs them)
and an image folder of one's own classes, each on small data written by the test."""
import numpy as np
import pytest

import ftdfast
from ftdfast.cli import main
from ftdfast.experiment import load_tasks, paper_family
from ftdfast.tasks import class_tasks
from tests.data.helpers import write_idx_set, write_pngs

ARGS = ["--seeds", "2", "--epochs", "1", "--epsilon", "0.5", "--no-progress"]


def _structured_images(rng, labels, h, w, colour=False):
    """Images whose class shows: a bright square at a class-dependent place on noise, uint8."""
    n = len(labels)
    x = rng.integers(0, 60, size=(n, h, w, 3) if colour else (n, h, w)).astype(np.uint8)
    for i, c in enumerate(labels):
        r, q = divmod(int(c) % 9, 3)
        x[i, r * h // 3:(r + 1) * h // 3, q * w // 3:(q + 1) * w // 3] = 255
    return x


def test_fashion_mnist_idx_files_through_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "data" / "fashion-mnist"
    arrays = write_idx_set(folder, rng, gz=True, n=300, m=100, h=9, w=9, k=10)
    # rewrite with images that carry their label, so the networks learn something
    from tests.data.helpers import write_idx
    write_idx(str(folder / "train-images-idx3-ubyte.gz"), _structured_images(rng, arrays["y_train"], 9, 9), True)
    write_idx(str(folder / "t10k-images-idx3-ubyte.gz"), _structured_images(rng, arrays["y_test"], 9, 9), True)
    out = tmp_path / "res"
    assert main(["distance", "--dataset", "fashion-mnist", "--data-dir", str(tmp_path / "data"), "--out", str(out)]
                + ARGS) == 0
    m = ftdfast.DistanceMatrix.load(out / "distance_small_cnn.json")
    assert m.tasks == [f"fashion-mnist:{i}" for i in range(4)] and m.per_seed.shape == (2, 4, 4)
    off = m.per_seed[:, ~np.eye(4, dtype=bool)]
    assert np.all((off > 0) & (off <= 1)) and m.meta["fisher"] == "exact"
    assert np.isfinite(m.std[~np.eye(4, dtype=bool)]).all()
    assert "closest source" in (out / "summary.md").read_text()


def test_image_folder_through_the_cli_gets_the_class_task_set(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "shapes"
    names = ["circle", "cross", "dot", "line"]
    for split, n in (("train", 30), ("test", 12)):
        for c, name in enumerate(names):
            write_pngs(root / split / name, _structured_images(rng, [c] * n, 9, 9, colour=True))
    _, tasks = load_tasks(str(root), None, "paper")
    assert [t.task.name for t in tasks] == [f"shapes:{i}" for i in range(4)]
    assert [t.num_classes for t in tasks] == [2, 2, 3, 4]  # 0 vs rest, 1 vs rest, {0, 1} + other, all
    out = tmp_path / "res"
    assert main(["distance", "--dataset", str(root), "--out", str(out)] + ARGS) == 0
    m = ftdfast.DistanceMatrix.load(out / "distance_small_cnn.json")
    assert m.tasks == [f"shapes:{i}" for i in range(4)] and np.isfinite(m.mean).all()
    assert m.meta["dataset"] == "shapes"


def test_class_tasks_and_paper_family():
    data = ftdfast.from_tensors(*(np.zeros((6, 1, 4, 4), np.float32), np.arange(6) % 5,
                                  np.zeros((5, 1, 4, 4), np.float32), np.arange(5)))
    tasks = class_tasks(data)
    assert [(t.classes, t.binary, t.other) for t in tasks] == [((0,), True, False), ((1,), True, False),
                                                              ((0, 1, 2), False, True), (None, False, False)]
    two = ftdfast.from_tensors(np.zeros((4, 1, 4, 4), np.float32), np.arange(4) % 2,
                               np.zeros((2, 1, 4, 4), np.float32), np.arange(2))
    with pytest.raises(ValueError, match="at least 3"):
        class_tasks(two)
    assert paper_family("path/to/cifar10-small.npz", data) == "cifar10"
    assert paper_family("Fashion-MNIST", data) == "fashion-mnist"
    assert paper_family("cifar100", data) == "cifar100" and paper_family("/x/shapes", data) is None
