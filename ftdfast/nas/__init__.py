"""Task-aware NAS (TA-NAS): search spaces, skeleton networks, FUSE, searches and the task dictionary.

* :mod:`~ftdfast.nas.genotype`: :class:`Genotype` (one cell: 3 or 4 nodes, two (op, input) edges per node),
  :data:`ALL_OPS`;
* :mod:`~ftdfast.nas.operations`: the ten operations, the registry :data:`OPS` (``(C, stride, affine) ->
  nn.Module``);
* :mod:`~ftdfast.nas.network`: :class:`Cell`, :class:`Network` (stem, cells with reductions at 1/3 and 2/3,
  global pooling, Linear head);
* :mod:`~ftdfast.nas.space`: :class:`SearchSpace` (sampling, size, the task-aware ``restrict_to``);
* :mod:`~ftdfast.nas.nasbench201`: the NAS-Bench-201 space (:class:`NB201Genotype`, :class:`NB201Space`,
  :class:`NB201Network`) and its accuracy table (:func:`load_nasbench201`), for scoring searches without
  training;
* :mod:`~ftdfast.nas.fuse`: :func:`fuse` (softmax mixture of candidates, alpha fitted on validation data) and
  its schedule :class:`FuseConfig`, :func:`split_train_val`;
* :mod:`~ftdfast.nas.batched`: :class:`BatchedCandidates` (candidates sharing a skeleton run as one network);
* :mod:`~ftdfast.nas.seeds`: :func:`derive_seed` (one user seed, an independent stream per search);
* :mod:`~ftdfast.nas.search`: :class:`Budget` (presets, the :data:`SCHEDULES`, :meth:`Budget.plan`),
  :func:`fuse_search`, :func:`random_search`,
  :class:`SearchOutcome`;
* :mod:`~ftdfast.nas.dictionary`: :class:`TaskDictionary`, :func:`build_dictionary`,
  :func:`dictionary_report`;
* :mod:`~ftdfast.nas.tanas`: :class:`TaskAwareNAS` (the paper's Algorithm 2);
* :mod:`~ftdfast.nas.evaluate`: :func:`compare` (TA-NAS against FUSE and random search in the general space and
  hand-designed networks, equal budgets) and its markdown table.
"""
from .batched import BatchedCandidates
from .dictionary import BaselineEntry, TaskDictionary, build_dictionary, dictionary_report
from .fuse import FuseConfig, FuseMixture, FuseResult, fuse, split_train_val
from .genotype import ALL_OPS, NODE_COUNTS, Genotype, as_genotype, uniform_genotype
from .nasbench201 import NB201_OPS, NB201Genotype, NB201Network, NB201Space, NB201Table, load_nasbench201
from .network import Cell, Network, reduction_indices
from .operations import OPS, ConvOp, FactorizedReduce, make_op
from .search import SCHEDULES, Budget, SearchOutcome, SearchPlan, fuse_search, random_search, random_search_steps
from .seeds import derive_seed
from .space import SearchSpace
from .tanas import TaskAwareNAS

__all__ = ["ALL_OPS", "NODE_COUNTS", "OPS", "Genotype", "as_genotype", "uniform_genotype", "make_op", "ConvOp",
           "FactorizedReduce", "Cell", "Network", "reduction_indices", "SearchSpace", "BatchedCandidates",
           "FuseConfig", "FuseMixture", "FuseResult", "fuse", "split_train_val", "derive_seed",
           "Budget", "SCHEDULES", "SearchPlan", "random_search_steps", "SearchOutcome", "BaselineEntry", "TaskDictionary", "build_dictionary", "dictionary_report",
           "TaskAwareNAS", "fuse_search", "random_search",
           "NB201_OPS", "NB201Genotype", "NB201Space", "NB201Network", "NB201Table", "load_nasbench201"]
