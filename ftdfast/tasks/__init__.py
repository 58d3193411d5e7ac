"""Tasks: classification tasks (full, subset, one-vs-rest binary, with "other") and pixel regression
tasks built from a :class:`~ftdfast.data.LabeledData`, and the paper's task sets.

    >>> from ftdfast.data import load_dataset
    >>> from ftdfast.tasks import paper_tasks
    >>> data = load_dataset("digits")
    >>> td = paper_tasks("digits", data)[0].build(data, seed=0)   # digit 0 vs rest, balanced
"""
from typing import Any, Dict, Union

from .paper import CIFAR100_SUPERCLASSES, IMAGENET_LISTS, PAPER_DATASETS, class_tasks, paper_tasks
from .regression import TARGETS, RegressionTask, gaussian_blur, grey, image_tasks, sobel_magnitude
from .task import Task, resolve_classes
from .taskdata import TaskData


def task_from_dict(d: Dict[str, Any]) -> Union[Task, RegressionTask]:
    """The task a ``to_dict()`` describes (classification or regression)."""
    return RegressionTask.from_dict(d) if d.get("kind") == "regression" else Task.from_dict(d)


__all__ = ["Task", "RegressionTask", "TaskData", "paper_tasks", "class_tasks", "image_tasks", "task_from_dict",
           "resolve_classes", "TARGETS", "CIFAR100_SUPERCLASSES", "IMAGENET_LISTS", "PAPER_DATASETS",
           "grey", "sobel_magnitude", "gaussian_blur"]
