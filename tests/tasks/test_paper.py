import pytest
import torch

from ftdfast.data import load_digits
from ftdfast.data.loaders import FASHION_CLASSES
from ftdfast.tasks import CIFAR100_SUPERCLASSES, IMAGENET_LISTS, paper_tasks

from .common import make_data

CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
CIFAR100 = tuple("""apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly
camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man
maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain
plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake
spider squirrel streetcar sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip
turtle wardrobe whale willow_tree wolf woman worm""".split())


def test_cifar100_name_list_is_complete():
    assert len(CIFAR100) == 100 == len(set(CIFAR100))


def test_digits_tasks_match_the_paper_and_build():
    data = load_digits()
    tasks = paper_tasks("digits", data)
    assert [t.name for t in tasks] == ["digits:0", "digits:1", "digits:2", "digits:3"]
    assert [(t.kind, t.classes) for t in tasks] == [("binary", (0,)), ("binary", (6,)),
                                                    ("other", (0, 1, 2, 3)), ("full", None)]
    counts = torch.bincount(data.y_train)
    t0, t1, t2, t3 = (t.build(data, seed=0) for t in tasks)
    assert torch.bincount(t0.y_train).tolist() == [int(counts[0])] * 2
    assert torch.bincount(t1.y_train).tolist() == [int(counts[6])] * 2
    m = int(counts[:4].min())
    assert torch.bincount(t2.y_train).tolist() == counts[:4].tolist() + [m]
    assert [t.num_classes for t in (t0, t1, t2, t3)] == [2, 2, 5, 10]
    assert t3.x_train.shape == data.x_train.shape


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_mnist_like_names(name):
    data = make_data([3] * 10, [2] * 10, classes=FASHION_CLASSES if name == "fashion-mnist" else None)
    tasks = paper_tasks(name, data)
    assert [t.name for t in tasks] == [f"{name}:{i}" for i in range(4)]
    assert tasks[1].classes == (6,)


def test_cifar10_tasks_resolve_names():
    data = make_data([4] * 10, [3] * 10, classes=CIFAR10, shape=(3, 2, 2))
    tasks = paper_tasks("cifar10", data)
    named = [None if t.classes is None else [CIFAR10[i] for i in t.classes] for t in tasks]
    assert named == [["automobile", "cat", "ship"], ["cat", "ship", "truck"], ["bird", "frog", "horse"], None]
    assert [t.kind for t in tasks] == ["binary", "binary", "other", "full"]
    built = [t.build(data, seed=1) for t in tasks]
    assert [td.num_classes for td in built] == [2, 2, 4, 10]
    assert torch.bincount(built[0].y_train).tolist() == [12, 12]     # 3 classes x 4 positives, 12 of 28 negatives
    assert torch.bincount(built[2].y_test).tolist() == [3, 3, 3, 3]


def test_cifar100_tasks_use_the_superclass_names():
    counts = [2 + k % 3 for k in range(100)]
    data = make_data(counts, [1] * 100, classes=CIFAR100)
    t0, t1, t2, t3 = paper_tasks("cifar100", data)
    sc = CIFAR100_SUPERCLASSES
    names = lambda t: [CIFAR100[i] for i in t.classes]  # noqa: E731
    assert names(t0) == list(sc["vehicles_1"] + sc["vehicles_2"]) == names(t2)
    assert names(t1) == list(sc["household_furniture"] + sc["household_electrical_devices"])
    assert names(t3) == names(t0) + names(t1)
    assert (t0.binary, t1.binary, t2.other, t3.other) == (True, True, True, True)
    assert (t2.num_classes, t3.num_classes) == (11, 21)
    td = t3.build(data, seed=0)
    listed = [counts[i] for i in t3.classes]
    assert torch.bincount(td.y_train).tolist() == listed + [min(listed)]


def test_cifar100_tasks_need_cifar100_names():
    with pytest.raises(ValueError, match="class name 'bicycle' is not a class of this dataset"):
        paper_tasks("cifar100", make_data([1] * 10, [1] * 10, classes=CIFAR10))


def test_imagenet_tasks_from_matching_class_names():
    # spellings as image-folder names would have them: lower case with underscores
    names = [n.lower().replace(" ", "_") for lst in IMAGENET_LISTS for n in lst] + ["filler"]
    data = make_data([2] * len(names), [1] * len(names), classes=names)
    tasks = paper_tasks("imagenet", data)
    assert [t.num_classes for t in tasks] == [10] * 4 and all(t.kind == "subset" for t in tasks)
    assert tasks[3].classes == tuple(range(30, 40))


def test_imagenet_tasks_explain_what_is_missing():
    with pytest.raises(ValueError, match=r"ImageNet task 0 needs a dataset whose class names include \['tench'"):
        paper_tasks("imagenet", make_data([1] * 10, [1] * 10, classes=CIFAR10))
    data = make_data([1] * 4, [1] * 4, classes=("a", "b", "c", "d"))
    tasks = paper_tasks("imagenet", data, class_lists=[("a",), ("b",), ("c",), ("d", "a")])
    assert [t.classes for t in tasks] == [(0,), (1,), (2,), (3, 0)]


def test_unknown_dataset_and_wrong_class_count():
    with pytest.raises(ValueError, match="no paper tasks for 'svhn'; known: mnist"):
        paper_tasks("svhn", make_data([1] * 10, [1] * 10))
    with pytest.raises(ValueError, match="mnist tasks need 10 classes, 'toy' has 5"):
        paper_tasks("mnist", make_data([1] * 5, [1] * 5))
