"""Task-aware NAS (TA-NAS): the search space, the skeleton network and FUSE.

* :mod:`~ftdfast.nas.genotype`: :class:`Genotype` (one cell: 3 or 4 nodes, two (op, input) edges per node),
  :data:`ALL_OPS`;
* :mod:`~ftdfast.nas.ops`: the ten operations, the registry :data:`OPS` (``(C, stride, affine) -> nn.Module``);
* :mod:`~ftdfast.nas.network`: :class:`Cell`, :class:`Network` (stem, cells with reductions at 1/3 and 2/3,
  global pooling, Linear head);
* :mod:`~ftdfast.nas.space`: :class:`SearchSpace` (sampling, size, the task-aware ``restrict_to``);
* :mod:`~ftdfast.nas.fuse`: :func:`fuse` (softmax mixture of candidates, alpha fitted on validation data),
  :func:`split_train_val`;
* :mod:`~ftdfast.nas.batched`: :class:`BatchedCandidates` (candidates sharing a skeleton run as one network);
* :mod:`~ftdfast.nas.tanas`: :class:`TaskDictionary`, :func:`build_dictionary`, :class:`TaskAwareNAS` (the
  paper's Algorithm 2), :func:`fuse_search`, :func:`random_search`, :class:`Budget`;
* :mod:`~ftdfast.nas.evaluate`: :func:`compare` (TA-NAS against FUSE and random search in the general space and
  hand-designed networks, equal budgets) and its markdown table.
"""
from .batched import BatchedCandidates
from .fuse import FuseMixture, FuseResult, fuse, split_train_val
from .genotype import ALL_OPS, NODE_COUNTS, Genotype, as_genotype, uniform_genotype
from .network import Cell, Network, reduction_indices
from .ops import OPS, ConvOp, FactorizedReduce, make_op
from .space import SearchSpace
from .tanas import (BaselineEntry, Budget, SearchOutcome, TaskAwareNAS, TaskDictionary, build_dictionary,
                    fuse_search, random_search)

__all__ = ["ALL_OPS", "NODE_COUNTS", "OPS", "Genotype", "as_genotype", "uniform_genotype", "make_op", "ConvOp",
           "FactorizedReduce", "Cell", "Network", "reduction_indices", "SearchSpace", "BatchedCandidates",
           "FuseMixture", "FuseResult", "fuse", "split_train_val",
           "Budget", "SearchOutcome", "BaselineEntry", "TaskDictionary", "build_dictionary", "TaskAwareNAS",
           "fuse_search", "random_search"]
