"""SearchSpace: size, sampling determinism, the task-aware restriction, serialization, errors."""
import random

import pytest
import torch

from ftdfast.nas import ALL_OPS, Genotype, SearchSpace, uniform_genotype

BASE = Genotype(4, ((("conv_3x3", 1), ("identity", 0)),
                    (("conv_3x3", 2), ("max_pool_3x3", 0)),
                    (("zero", 1), ("identity", 3)),
                    (("conv_3x3", 4), ("conv_3x3", 2))))


def test_full_space_size_by_hand():
    # node i chooses 2 of its i + 2 inputs and 10 * 10 operations
    three = (1 * 100) * (3 * 100) * (6 * 100)
    four = three * (10 * 100)
    assert SearchSpace().size() == three + four == 18_018_000_000


@pytest.mark.parametrize("space", [
    SearchSpace(node_counts=(3,), ops=("zero", "identity")),
    SearchSpace(node_counts=(3, 4), ops=("conv_3x3",)),
    SearchSpace(ops=("avg_pool_3x3", "conv_5x5"), topology=((0, 1), (0, 2), (1, 3))),
], ids=["3nodes-2ops", "both-counts-1op", "fixed-topology"])
def test_size_matches_enumeration(space):
    all_g = list(space.genotypes())
    assert len(all_g) == len(set(all_g)) == space.size()
    assert all(space.contains(g) for g in all_g)


def test_sampling_is_reproducible_and_varied():
    space = SearchSpace()
    assert [space.sample(s) for s in range(5)] == [space.sample(s) for s in range(5)]
    assert len({space.sample(s) for s in range(20)}) == 20
    gen_a, gen_b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    seq_a = [space.sample(gen_a) for _ in range(4)]
    assert seq_a == [space.sample(gen_b) for _ in range(4)]
    assert len(set(seq_a)) == 4                        # the generator advances
    assert space.sample_many(6, 11) == space.sample_many(6, 11)
    assert space.sample(random.Random(5)) == space.sample(random.Random(5))


def test_samples_lie_in_the_space_with_canonical_wiring():
    space = SearchSpace(node_counts=(4,), ops=("conv_3x3", "zero", "avg_pool_3x3"))
    for g in space.sample_many(30, 0):
        assert space.contains(g) and g.num_nodes == 4
        assert all(a[1] < b[1] for a, b in g.edges)
        assert set(g.ops) <= {"conv_3x3", "zero", "avg_pool_3x3"}


def test_restriction_keeps_topology_and_only_the_used_operations():
    r = SearchSpace().restrict_to(BASE)
    assert r.node_counts == (4,)
    assert r.topology == ((0, 1), (0, 2), (1, 3), (2, 4))
    assert r.ops == ("zero", "identity", "max_pool_3x3", "conv_3x3")   # ALL_OPS order
    assert r.size() == 4 ** 8
    assert r.contains(BASE) and BASE in r
    samples = r.sample_many(10, 1)
    assert all(g.topology == BASE.topology and set(g.ops) <= set(BASE.ops) for g in samples)
    rewired = Genotype(4, BASE.edges[:3] + (((("conv_3x3", 4), ("conv_3x3", 3))),))
    assert not r.contains(rewired)
    other_op = Genotype(4, BASE.edges[:3] + (((("conv_5x5", 4), ("conv_3x3", 2))),))
    assert not r.contains(other_op)
    assert SearchSpace().contains(rewired) and SearchSpace().contains(other_op)


def test_restriction_of_a_restriction_is_itself():
    r = SearchSpace().restrict_to(BASE)
    assert r.restrict_to(BASE) == r
    assert r.restrict_to(r.sample(0)).size() <= r.size()


def test_round_trip():
    for space in (SearchSpace(), SearchSpace().restrict_to(BASE), SearchSpace(node_counts=3, ops=["zero"])):
        assert SearchSpace.from_json(space.to_json()) == space
        assert SearchSpace.from_dict(space.to_dict()) == space


@pytest.mark.parametrize("kwargs, match", [
    (dict(ops=("conv_3x3", "conv_11x11")), r"unknown operation 'conv_11x11' in the search space"),
    (dict(ops=()), r"ops must be a non-empty list"),
    (dict(node_counts=(2, 3)), r"node_counts must be a non-empty subset of \(3, 4\)"),
    (dict(node_counts=(3,), topology=((0, 1), (0, 2), (1, 3), (2, 4))), r"topology has 4 nodes but node_counts"),
    (dict(topology=((0, 1), (0, 3), (1, 3))), r"node 1 has input index 3"),
    (dict(topology=((0, 0), (0, 2), (1, 3))), r"node 0 takes input 0 twice"),
])
def test_invalid_spaces(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SearchSpace(**kwargs)


def test_malformed_space_json_and_oversized_requests():
    with pytest.raises(ValueError, match="malformed search space JSON"):
        SearchSpace.from_json("{")
    with pytest.raises(ValueError, match="malformed search space"):
        SearchSpace.from_dict({"nodes": [3]})
    with pytest.raises(ValueError, match="cannot draw 3 distinct genotypes from a space of 1"):
        SearchSpace(ops=("zero",), topology=((0, 1), (0, 1), (0, 1))).sample_many(3, 0)


def test_all_ops_default():
    assert SearchSpace().ops == ALL_OPS
    assert SearchSpace(ops=tuple(reversed(ALL_OPS))).ops == ALL_OPS


# ---------------------------------------------------------------------- restriction stays inside (issue 12)
def test_restriction_with_no_operation_in_common_raises():
    parent = SearchSpace(ops=("conv_3x3", "max_pool_3x3"))
    with pytest.raises(ValueError, match="none of which this space allows"):
        parent.restrict_to(uniform_genotype("identity", 3))


def test_restriction_keeps_only_the_parents_operations():
    parent = SearchSpace(ops=("conv_3x3", "max_pool_3x3"))
    g = Genotype(3, ((("conv_3x3", 0), ("identity", 1)), (("identity", 1), ("conv_3x3", 2)),
                     (("zero", 0), ("conv_3x3", 3))))
    r = parent.restrict_to(g)
    assert r.ops == ("conv_3x3",) and all(parent.contains(h) for h in r.genotypes())


def test_restriction_to_a_cell_of_another_wiring_or_size_raises():
    fixed = SearchSpace().restrict_to(BASE)
    with pytest.raises(ValueError, match="differs from this space's fixed topology"):
        fixed.restrict_to(uniform_genotype("conv_3x3", 4))
    with pytest.raises(ValueError, match=r"has 4 nodes but this space allows \(3,\)"):
        SearchSpace(node_counts=(3,)).restrict_to(BASE)


def test_network_of_a_genotype_outside_the_space_raises():
    with pytest.raises(ValueError, match="is not in this search space"):
        SearchSpace(ops=("conv_3x3",)).network(uniform_genotype("identity", 3), channels=2, layers=1,
                                               num_classes=2, in_channels=1)
