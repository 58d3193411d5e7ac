"""The NAS-Bench-201 space: genotype strings both ways, the space, the skeleton network, the table loader."""
import itertools
import os

import pytest
import torch

from ftdfast.nas import (NB201_OPS, Budget, NB201Genotype, NB201Network, NB201Space, NB201Table, fuse_search,
                         load_nasbench201)
from ftdfast.nas.nasbench201 import NB201Cell, ResidualReduction
from ftdfast.nas.search import SplitData

SHARED_TABLE = "/work/shared/datasets/nasbench201-accuracies.csv"
BEST = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_1x1~1|nor_conv_3x3~2|"

CELL_STRINGS = [   # (id, string, ops in edge order)
    ("all-none", "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", ("none",) * 6),
    ("mixed", "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_3x3~0|none~1|avg_pool_3x3~2|",
     ("avg_pool_3x3", "nor_conv_1x1", "skip_connect", "nor_conv_3x3", "none", "avg_pool_3x3")),
    ("3-node", "|nor_conv_1x1~0|+|avg_pool_3x3~0|skip_connect~1|", ("nor_conv_1x1", "avg_pool_3x3", "skip_connect")),
]
NODES = {"all-none": 4, "mixed": 4, "3-node": 3}


@pytest.mark.parametrize("name,text,ops", CELL_STRINGS, ids=[c[0] for c in CELL_STRINGS])
def test_string_both_ways(name, text, ops):
    g = NB201Genotype.from_string(text)
    assert g.ops == ops and g.to_string() == text and str(g) == text and g.num_nodes == NODES[name]
    assert NB201Genotype.from_dict(g.to_dict()) == g


@pytest.mark.parametrize("text,match", [
    ("|none~0|", "expected 3 nodes"),
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|+|none~0|none~1|none~2|none~3|", "expected 3 nodes"),
    ("|none~0|+|none~0|", "node 2 needs 2 edges"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "node 2 needs 2 edges"),
    ("|none~1|+|none~0|none~1|+|none~0|none~1|none~2|", "must be 'op~0'"),
    ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown NAS-Bench-201 operation 'conv'"),
    ("none~0+|none~0|none~1|+|none~0|none~1|none~2|", r"node 1 must look like \|op~0\|"),
])
def test_malformed_strings(text, match):
    with pytest.raises(ValueError, match=match):
        NB201Genotype.from_string(text)


def test_space_size_sampling_and_restriction():
    s = NB201Space()
    assert s.size() == 15625 == sum(1 for _ in s.genotypes())
    assert len(set(s.sample_many(50, 0))) == 50 and s.sample_many(5, 3) == s.sample_many(5, 3)
    r = s.restrict_to(BEST)
    assert r.ops == ("skip_connect", "nor_conv_1x1", "nor_conv_3x3") and r.size() == 729
    assert all(set(g.ops) <= set(r.ops) for g in r.sample_many(20, 1))
    assert NB201Space.from_dict(r.to_dict()) == r
    with pytest.raises(ValueError, match="none of which this space allows"):
        NB201Space(ops=("none",)).restrict_to(BEST)
    with pytest.raises(ValueError, match="is not in this search space"):
        r.network("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", channels=2, layers=1)


def test_genotype_edge_counts():
    assert NB201Genotype(("none",) * 3).num_nodes == 3 and NB201Genotype(("none",) * 6).num_nodes == 4
    for n in (1, 2, 4, 5, 7):
        with pytest.raises(ValueError, match="6 edge operations .4 nodes. or 3 .3 nodes."):
            NB201Genotype(("none",) * n)


def test_three_node_space():
    s = NB201Space(num_nodes=3)
    cells = list(s.genotypes())
    assert s.size() == 125 == len(set(cells)) and all(g.num_nodes == 3 for g in cells)
    assert {g.ops for g in cells} == set(itertools.product(NB201_OPS, repeat=3))
    assert all(g in s for g in s.sample_many(20, 0)) and s.sample(4).num_nodes == 3
    r = s.restrict_to("|nor_conv_1x1~0|+|nor_conv_1x1~0|skip_connect~1|")
    assert r == NB201Space(("skip_connect", "nor_conv_1x1"), num_nodes=3) and r.size() == 8
    assert NB201Space.from_dict(r.to_dict()) == r and r.to_dict()["num_nodes"] == 3
    # a 4-node cell's operations restrict a 3-node space (only the operations matter)
    r4 = s.restrict_to(BEST)
    assert r4.ops == ("skip_connect", "nor_conv_1x1", "nor_conv_3x3") and r4.num_nodes == 3
    assert "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|" not in s and "|none~0|+|none~0|none~1|" not in NB201Space()
    assert NB201Space().to_dict() == {"kind": "nasbench201", "ops": list(NB201_OPS)}   # 4-node dicts unchanged
    for bad in (2, 5, 4.0, True):
        with pytest.raises(ValueError, match="has 3 or 4 nodes"):
            NB201Space(num_nodes=bad)


def _reference_cell(cell: NB201Cell, x):
    """Node j = sum over every i < j of edge (j <- i), zeros included (an independent loop); the last node."""
    last = {3: 2, 6: 3}[len(cell.edge_ops)]
    nodes, e = [x], 0
    for j in range(1, last + 1):
        acc = torch.zeros_like(x)
        for i in range(j):
            acc = acc + cell.edge_ops[e](nodes[i])
            e += 1
        nodes.append(acc)
    return nodes[last]


@pytest.mark.parametrize("text", [c[1] for c in CELL_STRINGS] + [BEST], ids=[c[0] for c in CELL_STRINGS] + ["best"])
def test_cell_equals_a_reference_loop(text):
    torch.manual_seed(0)
    cell = NB201Cell(NB201Genotype.from_string(text), 3).double().eval()
    x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
    assert torch.allclose(cell(x), _reference_cell(cell, x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("size", [8, 9, 32])
def test_network_shapes_three_nodes(size):
    net = NB201Network(CELL_STRINGS[2][1], channels=4, layers=1, num_classes=5, in_channels=1)
    assert net(torch.randn(2, 1, size, size)).shape == (2, 5)
    cells = [m for m in net.modules() if isinstance(m, NB201Cell)]
    assert len(cells) == 3 and all(len(c.edge_ops) == 3 for c in cells)
    # conv parameters: 1x1 edges (C*C) in stages of C = 4, 8, 16, nothing in the pooling and skip edges
    cell_weights = sum(p.numel() for c in cells for n, p in c.named_parameters() if "weight" in n and p.dim() == 4)
    assert cell_weights == 4 * 4 + 8 * 8 + 16 * 16


@pytest.mark.parametrize("size", [8, 9, 32])
def test_network_shapes(size):
    net = NB201Network(BEST, channels=4, layers=2, num_classes=7, in_channels=3)
    assert net(torch.randn(3, 3, size, size)).shape == (3, 7)
    assert sum(isinstance(m, NB201Cell) for m in net.modules()) == 6
    assert sum(isinstance(m, ResidualReduction) for m in net.modules()) == 2
    assert net.classifier.in_features == 16
    with pytest.raises(ValueError, match="expects images"):
        net(torch.randn(3, 1, size, size))


def test_fuse_search_runs_in_the_space():
    g = torch.Generator().manual_seed(0)
    data = SplitData(torch.randn(96, 3, 8, 8, generator=g), torch.arange(96) % 3, torch.randn(20, 3, 8, 8),
                     torch.arange(20) % 3, 3, "toy")
    out = fuse_search(NB201Space(), data, Budget(iterations=1, candidates=3, rounds=1, w_steps=2, channels=2,
                                                 layers=1, batch_size=32), progress=False)
    assert isinstance(out.genotype, NB201Genotype) and isinstance(out.module, NB201Network)
    assert out.history[0]["genotypes"][out.history[0]["best"]] == out.genotype.to_dict()


def test_table_loader_on_a_small_file(tmp_path):
    path = tmp_path / "t.csv"
    rows = [(BEST, 90.0, 60.0), (CELL_STRINGS[0][1], 10.0, 1.0), (CELL_STRINGS[1][1], 50.0, 30.0)]
    path.write_text("index,cell,cifar10_test,cifar100_test\n" +
                    "".join(f"{i},{c},{a},{b}\n" for i, (c, a, b) in enumerate(rows)))
    t = load_nasbench201(str(path))
    assert len(t) == 3 and t.columns == ("cifar10_test", "cifar100_test")
    assert t.accuracy(BEST, "cifar10_test") == 90.0 and str(t.best("cifar100_test")) == BEST
    assert t.percentile(50.0, "cifar10_test") == pytest.approx(200 / 3) and t.percentile(5.0, "cifar10_test") == 0
    with pytest.raises(KeyError, match="no column 'imagenet16_val'"):
        t.accuracy(BEST, "imagenet16_val")
    with pytest.raises(KeyError, match="is not in"):
        t.accuracy("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|", "cifar10_test")


@pytest.mark.parametrize("content,match", [
    ("index,arch,cifar10_test\n0,x,1\n", "no 'cell' column"),
    ("cell,foo\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n", "no accuracy column"),
    ("cell,cifar10_test\n|none~0|+|none~0|none~1|+|none~0|none~1|none~2|,abc\n", "line 2"),
    ("cell,cifar10_test\n|bad~0|+|none~0|none~1|+|none~0|none~1|none~2|,1\n", "line 2: unknown"),
    ("cell,cifar10_test\n", "holds no cells"),
])
def test_table_loader_errors(tmp_path, content, match):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        load_nasbench201(str(path))
    with pytest.raises(FileNotFoundError, match="no such NAS-Bench-201 table"):
        load_nasbench201(str(tmp_path / "missing.csv"))


@pytest.mark.skipif(not os.path.exists(SHARED_TABLE), reason="the NAS-Bench-201 table is not on this machine")
def test_the_shared_table():
    t = load_nasbench201(SHARED_TABLE)
    assert len(t) == 15625 and set(t.cells) == set(NB201Space().genotypes())
    assert max(t.values("cifar10_test")) == pytest.approx(89.16, abs=0.01)      # the README's figure
    assert str(t.best("cifar10_val")) == BEST and t.percentile(89.16, "cifar10_test") == 100.0
    assert NB201_OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")


def _table(vals, tests, cells):
    return NB201Table(cells, {"v": list(vals), "t": list(tests)}, source="synthetic")


def _brute_best_of(table, n, space):
    """Average over every n-subset of the space's cells of the mean test accuracy of its tied best by "v"."""
    cells = [g for g in table.cells if g in space]
    n = min(n, len(cells))
    picks = []
    for subset in itertools.combinations(cells, n):
        top = max(table.accuracy(g, "v") for g in subset)
        tied = [table.accuracy(g, "t") for g in subset if table.accuracy(g, "v") == top]
        picks.append(sum(tied) / len(tied))
    return sum(picks) / len(picks)


def test_expected_best_of_by_hand():
    cells = list(NB201Space(("none", "skip_connect"), num_nodes=3).genotypes())[:3]
    t = _table([3, 2, 1], [10, 20, 30], cells)
    # pairs {1,2} -> 10, {1,3} -> 10, {2,3} -> 20
    assert t.expected_best_of(2, "v", "t") == pytest.approx(40 / 3)
    assert t.expected_best_of(1, "v", "t") == pytest.approx(20) and t.expected_best_of(9, "v", "t") == 10
    tied = _table([5, 5, 1], [10, 20, 30], cells)       # a tie at the top is broken at random: 15
    assert tied.expected_best_of(3, "v", "t") == pytest.approx(15)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        t.expected_best_of(0, "v", "t")
    with pytest.raises(ValueError, match="holds no cell of"):
        t.expected_best_of(1, "v", "t", NB201Space(("nor_conv_3x3",), num_nodes=3))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 27])
@pytest.mark.parametrize("ops", [("none", "skip_connect", "nor_conv_1x1"), ("skip_connect", "nor_conv_1x1")],
                         ids=["27-cells", "8-cells"])
def test_expected_best_of_against_enumeration(n, ops):
    cells = list(NB201Space(("none", "skip_connect", "nor_conv_1x1"), num_nodes=3).genotypes())
    vals = [(7 * k) % 5 for k in range(len(cells))]            # many ties
    tests = [float((11 * k) % 13) for k in range(len(cells))]
    t = _table(vals, tests, cells)
    space = NB201Space(ops, num_nodes=3)
    assert t.expected_best_of(n, "v", "t", space) == pytest.approx(_brute_best_of(t, n, space), rel=1e-12)
