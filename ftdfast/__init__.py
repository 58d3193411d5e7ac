"""ftdfast: the exact diagonal Fisher of PyTorch models, Fisher task distances and task-aware NAS.

The native extension (``ftdfast._C``) is optional: without it every path runs in
pure PyTorch (see :mod:`ftdfast.native._ext`).
"""
from ._version import __version__
from .fisher import Call, FisherDiagonal, find_rule, fisher_diagonal, register_rule  # noqa: E402
from .cache import Cache  # noqa: E402
from .check import CheckResult, check  # noqa: E402
from .data import LabeledData, augment, from_tensors, load_dataset  # noqa: E402
from .distance import (DistanceMatrix, cosine_distance, distance_matrix, fisher_task_distance,  # noqa: E402
                       legacy_distance, pad_to_common, task_distance)
from .models import ARCHS, build_model, register_model  # noqa: E402
from .tasks import RegressionTask, Task, TaskData, image_tasks, paper_tasks  # noqa: E402
from .train import TrainConfig, TrainResult, evaluate, get_trained, seed_everything, train_model  # noqa: E402
from . import uses  # noqa: E402,F401  (ftdfast.uses: EWC, fisher_merge, fisher_saliency, prune_masks)
from . import transfer  # noqa: E402,F401  (ftdfast.transfer: rank_sources and the transferability estimators)

__all__ = ["__version__", "fisher_diagonal", "FisherDiagonal", "register_rule", "find_rule", "Call", "check", "CheckResult",
           "LabeledData", "load_dataset", "from_tensors", "augment",
           "Task", "RegressionTask", "TaskData", "paper_tasks", "image_tasks",
           "ARCHS", "build_model", "register_model",
           "TrainConfig", "TrainResult", "train_model", "evaluate", "seed_everything", "get_trained", "Cache",
           "task_distance", "fisher_task_distance", "legacy_distance", "cosine_distance", "pad_to_common",
           "DistanceMatrix", "distance_matrix"]
