"""Fisher Task Distance between tasks, its baselines, and distance matrices over seeds.

- :func:`fisher_task_distance` (F_ab, F_bb) -> d in [0, 1]; :func:`legacy_distance` (d ** 2, as the
  authors report it); :func:`cosine_distance` (the baseline); all three in the registry :data:`MEASURES`.
- :func:`task_distance` (net_a, net_b, test data of b): computes both Fishers, then a distance.
- :func:`pad_to_common` / :func:`pad_head`: zero padding of heads of different widths (head="legacy").
- :func:`distance_matrix` (tasks, arch, seeds): trains, computes every Fisher, resumable.
- :class:`DistanceMatrix`: per-seed matrices, mean/std, closest source, Markdown, JSON, heatmaps, MDS atlas.
"""
from .measures import DEFAULT_MEASURE, MEASURES, cosine_distance, fisher_task_distance, get_measure, legacy_distance
from .mds import classical_mds
from .padding import pad_head, pad_to_common
from .result import DistanceMatrix
from .task import task_distance
from .matrix import HEADS, distance_matrix

__all__ = ["fisher_task_distance", "legacy_distance", "cosine_distance", "task_distance", "MEASURES",
           "DEFAULT_MEASURE", "get_measure",
           "pad_head", "pad_to_common", "DistanceMatrix", "classical_mds",
           "distance_matrix", "HEADS"]
