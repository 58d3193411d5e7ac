"""The task sets of the paper (Le, Soltani, Dong, Tarokh: Fisher Task Distance and its application in
neural architecture search), named ``f"{dataset}:{i}"`` for i = 0..3.

- MNIST-like (mnist, digits, fashion-mnist): 0 vs rest (binary); 6 vs rest; 0, 1, 2, 3 and other
  (5 classes); all 10.
- CIFAR-10: {automobile, cat, ship} vs rest; {cat, ship, truck} vs rest; bird, frog, horse and other
  (4 classes); all 10.
- CIFAR-100: vehicles 1 and 2 vs rest; household furniture and electrical devices vs rest; the 10
  vehicle classes and other (11); vehicles 1 and 2, furniture, devices and other (21).
- ImageNet (an approximation): four 10-class subset tasks, see :data:`IMAGENET_LISTS`.

For MNIST-like data the classes are indices (class i is digit i, or Fashion-MNIST's i-th class).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

from ..data.labeled import LabeledData
from ..data.normalize import canonical_name
from .task import Task, resolve_classes

CIFAR100_SUPERCLASSES: Dict[str, tuple] = {
    "vehicles_1": ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    "vehicles_2": ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
    "household_furniture": ("bed", "chair", "couch", "table", "wardrobe"),
    "household_electrical_devices": ("clock", "keyboard", "lamp", "telephone", "television"),
}

#: Four 10-class lists standing in for the paper's ImageNet tasks, whose exact lists are not available
#: here: Imagenette, Imagewoof (dog breeds), ten birds and ten cars, by ImageNet class name.
IMAGENET_LISTS = (
    ("tench", "English springer", "cassette player", "chain saw", "church", "French horn", "garbage truck",
     "gas pump", "golf ball", "parachute"),
    ("Australian terrier", "Border terrier", "Samoyed", "beagle", "Shih-Tzu", "English foxhound",
     "Rhodesian ridgeback", "dingo", "golden retriever", "Old English sheepdog"),
    ("goldfinch", "house finch", "junco", "indigo bunting", "robin", "bulbul", "jay", "magpie", "chickadee",
     "water ouzel"),
    ("ambulance", "beach wagon", "cab", "convertible", "jeep", "limousine", "minivan", "Model T", "racer",
     "sports car"),
)

PAPER_DATASETS = ("mnist", "digits", "fashion-mnist", "cifar10", "cifar100", "imagenet")


def paper_tasks(name: str, data: LabeledData, *,
                class_lists: Optional[Sequence[Sequence[str]]] = None) -> List[Task]:
    """The paper's four tasks for dataset ``name``, checked against ``data``'s classes.

    Class names are resolved to indices of ``data.classes`` (a missing name raises ValueError
    listing the valid ones). For ``"imagenet"`` the paper's lists are not reproduced: the tasks are
    four 10-class subset tasks over ``class_lists`` (default :data:`IMAGENET_LISTS`), an
    approximation that needs a dataset whose class names include them.
    """
    key = canonical_name(name)
    s = lambda i: f"{name}:{i}"  # noqa: E731
    if key in ("mnist", "digits", "fashion-mnist"):
        if data.num_classes != 10:
            raise ValueError(f"{name} tasks need 10 classes, {data.name!r} has {data.num_classes}")
        return [Task(s(0), (0,), binary=True), Task(s(1), (6,), binary=True),
                Task(s(2), (0, 1, 2, 3), other=True), Task(s(3))]
    if key == "cifar10":
        r = lambda names: resolve_classes(names, data.classes)  # noqa: E731
        if data.num_classes != 10:
            raise ValueError(f"cifar10 tasks need 10 classes, {data.name!r} has {data.num_classes}")
        return [Task(s(0), r(("automobile", "cat", "ship")), binary=True),
                Task(s(1), r(("cat", "ship", "truck")), binary=True),
                Task(s(2), r(("bird", "frog", "horse")), other=True), Task(s(3))]
    if key == "cifar100":
        sc = CIFAR100_SUPERCLASSES
        vehicles = resolve_classes(sc["vehicles_1"] + sc["vehicles_2"], data.classes)
        home = resolve_classes(sc["household_furniture"] + sc["household_electrical_devices"], data.classes)
        return [Task(s(0), vehicles, binary=True), Task(s(1), home, binary=True),
                Task(s(2), vehicles, other=True), Task(s(3), vehicles + home, other=True)]
    if key == "imagenet":
        lists = IMAGENET_LISTS if class_lists is None else class_lists
        if len(lists) != 4:
            raise ValueError(f"imagenet tasks need four class lists, got {len(lists)}")
        tasks = []
        for i, names in enumerate(lists):
            try:
                tasks.append(Task(s(i), resolve_classes(names, data.classes)))
            except ValueError as e:
                raise ValueError(
                    f"ImageNet task {i} needs a dataset whose class names include {list(names)}; {e}. The paper's "
                    "ImageNet lists are not available: pass class_lists= with four lists of your data's class "
                    "names") from e
        return tasks
    raise ValueError(f"no paper tasks for {name!r}; known: {', '.join(PAPER_DATASETS)}")


def class_tasks(data: LabeledData) -> List[Task]:
    """The paper's MNIST design for any labelled data with C >= 3 classes (e.g. an image folder), named
    ``f"{data.name}:{i}"``: 0: class 0 vs rest (binary); 1: class 1 vs rest; 2: the first ceil(C / 2) classes
    and "other"; 3: all C classes."""
    C = data.num_classes
    if C < 3:
        raise ValueError(f"{data.name!r} has {C} classes; the class task set needs at least 3 (two one-vs-rest "
                         "tasks, a subset with 'other' and the full task)")
    s = lambda i: f"{data.name}:{i}"  # noqa: E731
    half = tuple(range((C + 1) // 2))
    return [Task(s(0), (0,), binary=True), Task(s(1), (1,), binary=True), Task(s(2), half, other=True), Task(s(3))]
