"""Genotype: validation, views, dict and JSON round trips, malformed input."""
import json

import pytest

from ftdfast.nas import Genotype, as_genotype, uniform_genotype

G3 = Genotype(3, ((("conv_3x3", 0), ("identity", 1)),
                  (("max_pool_3x3", 1), ("conv_7x1_1x7", 2)),
                  (("zero", 3), ("dil_conv_5x5", 0))))


def test_views():
    assert G3.topology == ((0, 1), (1, 2), (0, 3))
    assert G3.ops == ("conv_3x3", "identity", "max_pool_3x3", "conv_7x1_1x7", "zero", "dil_conv_5x5")
    assert G3.op_set == ("zero", "identity", "max_pool_3x3", "conv_3x3", "dil_conv_5x5", "conv_7x1_1x7")
    assert "max_pool_3x3(1)" in str(G3)


def test_lists_are_stored_as_tuples_and_compare_equal():
    g = Genotype(3, [[list(e) for e in node] for node in G3.edges])
    assert g == G3 and hash(g) == hash(G3)
    assert isinstance(g.edges[0][0], tuple)


@pytest.mark.parametrize("g", [G3, uniform_genotype("conv_5x5", 4), uniform_genotype("zero", 3)], ids=str)
def test_json_and_dict_round_trip(g):
    assert Genotype.from_json(g.to_json()) == g
    assert Genotype.from_dict(json.loads(json.dumps(g.to_dict()))) == g
    assert as_genotype(g.to_json()) == g and as_genotype(g.to_dict()) == g and as_genotype(g) is g


def _edges(*nodes):
    return tuple(tuple(node) for node in nodes)


@pytest.mark.parametrize("num_nodes, edges, match", [
    (3, _edges([("conv_3x3", 0), ("sep_conv_3x3", 1)], [("identity", 0), ("identity", 1)],
               [("identity", 0), ("identity", 1)]), r"unknown operation 'sep_conv_3x3' at node 0"),
    (3, _edges([("conv_3x3", 0), ("identity", 1)], [("identity", 0), ("identity", 3)],
               [("identity", 0), ("identity", 1)]), r"node 1 has input index 3.*later node"),
    (3, _edges([("conv_3x3", 0), ("identity", 2)], [("identity", 0), ("identity", 1)],
               [("identity", 0), ("identity", 1)]), r"node 0 has input index 2"),
    (3, _edges([("conv_3x3", 0), ("identity", -1)], [("identity", 0), ("identity", 1)],
               [("identity", 0), ("identity", 1)]), r"input index -1"),
    (3, _edges([("conv_3x3", 1), ("identity", 1)], [("identity", 0), ("identity", 1)],
               [("identity", 0), ("identity", 1)]), r"node 0 takes input 1 twice"),
    (5, _edges(*[[("identity", 0), ("identity", 1)]] * 5), r"num_nodes must be 3 or 4, got 5"),
    (2, _edges(*[[("identity", 0), ("identity", 1)]] * 2), r"num_nodes must be 3 or 4, got 2"),
    (4, _edges(*[[("identity", 0), ("identity", 1)]] * 3), r"num_nodes is 4 but edges describe 3 nodes"),
    (3, _edges([("identity", 0)], [("identity", 0), ("identity", 1)], [("identity", 0), ("identity", 1)]),
     r"node 0 must have exactly 2 edges"),
    (3, _edges([("identity", 0), ("identity", "1")], [("identity", 0), ("identity", 1)],
               [("identity", 0), ("identity", 1)]), r"input index must be an int"),
])
def test_invalid_genotypes(num_nodes, edges, match):
    with pytest.raises(ValueError, match=match):
        Genotype(num_nodes, edges)


@pytest.mark.parametrize("text, match", [
    ("{not json", r"malformed genotype JSON"),
    ('[1, 2]', r"malformed genotype: expected an object"),
    ('{"num_nodes": 3}', r"missing keys \['edges'\]"),
    ('{"num_nodes": 3, "edges": [], "extra": 1}', r"unexpected keys \['extra'\]"),
    ('{"num_nodes": 3, "edges": [[["conv_3x3", 0], ["identity", 1]]]}', r"edges describe 1 nodes"),
    ('{"num_nodes": 3.0, "edges": []}', r"num_nodes must be 3 or 4, got 3.0"),
    ('{"num_nodes": 3, "edges": [[["conv_3x3", 0], ["identity", true]], [["identity", 0], ["identity", 1]], '
     '[["identity", 0], ["identity", 1]]]}', r"input index must be an int"),
])
def test_malformed_json(text, match):
    with pytest.raises(ValueError, match=match):
        Genotype.from_json(text)


def test_as_genotype_rejects_other_types():
    with pytest.raises(TypeError, match="expected a Genotype, dict or JSON string"):
        as_genotype(3)
