"""Cells and the skeleton network: shapes, reductions, a parameter count by hand, input errors."""
import pytest
import torch

from ftdfast.nas import Cell, Genotype, Network, reduction_indices, uniform_genotype

G3 = Genotype(3, ((("conv_3x3", 0), ("identity", 1)),
                  (("max_pool_3x3", 1), ("conv_7x1_1x7", 2)),
                  (("zero", 0), ("dil_conv_5x5", 3))))


def test_parameter_count_by_hand():
    """channels 4, 3 cells (normal C=4, reduction C=8, reduction C=16), 1 input channel, 10 classes."""
    def conv(cin, cout, area):       # bias-free convolution
        return cin * cout * area

    def bn(c):                        # affine BatchNorm: weight and bias
        return 2 * c

    def fr(cin, cout):                # factorized reduce: 1x1 convs to cout//2 and cout - cout//2, BN
        return cin * (cout // 2) + cin * (cout - cout // 2) + bn(cout)

    def edges(C, stride2):            # G3's six edges; identity reads s1, so it reduces in reduction cells
        return ((conv(C, C, 9) + bn(C))               # conv_3x3
                + (fr(C, C) if stride2 else 0)       # identity
                + 0                                  # max_pool_3x3
                + (conv(C, C, 7) * 2 + bn(C))        # conv_7x1_1x7: 1x7 then 7x1
                + 0                                  # zero
                + (conv(C, C, 25) + bn(C)))          # dil_conv_5x5

    stem = conv(1, 12, 9) + bn(12)                                        # 3 * channels
    cell0 = (conv(12, 4, 1) + bn(4)) * 2 + edges(4, False)                # out 3 * 4 = 12 channels
    cell1 = (conv(12, 8, 1) + bn(8)) * 2 + edges(8, True)                 # out 24 channels
    cell2 = fr(12, 16) + (conv(24, 16, 1) + bn(16)) + edges(16, True)     # s0 from cell0 is reduced; out 48
    head = 48 * 10 + 10
    expected = stem + cell0 + cell1 + cell2 + head
    assert expected == 18262                                              # the same sum, written out
    net = Network(G3, channels=4, layers=3, num_classes=10, in_channels=1)
    assert net.num_parameters() == expected
    assert net.param_millions == pytest.approx(expected / 1e6)


@pytest.mark.parametrize("layers, expect", [(1, (0,)), (2, (0, 1)), (3, (1, 2)), (5, (1, 3)), (8, (2, 5))])
def test_reduction_cells_at_one_and_two_thirds(layers, expect):
    assert reduction_indices(layers) == expect
    net = Network(uniform_genotype("identity", 3), channels=2, layers=layers, num_classes=3, in_channels=1)
    assert tuple(i for i, c in enumerate(net.cells) if c.reduction) == expect
    assert [c.C for c in net.cells][-1] == 2 * 2 ** len(expect)


@pytest.mark.parametrize("size, in_channels, layers", [(8, 1, 3), (28, 1, 2), (32, 3, 3), (9, 3, 4)])
def test_forward_shapes(size, in_channels, layers):
    torch.manual_seed(0)
    net = Network(G3, channels=4, layers=layers, num_classes=7, in_channels=in_channels)
    out = net(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_cell_output_concatenates_the_nodes():
    g4 = uniform_genotype("conv_3x3", 4)
    cell = Cell(g4, C_pp=6, C_p=5, C=3, reduction=True, reduction_prev=False)
    out = cell(torch.randn(2, 6, 9, 9), torch.randn(2, 5, 9, 9))
    assert out.shape == (2, 4 * 3, 5, 5)


def test_genotype_json_is_accepted():
    net = Network(G3.to_json(), channels=2, layers=1, num_classes=2, in_channels=1)
    assert net.genotype == G3


@pytest.mark.parametrize("x, match", [
    (torch.randn(2, 1, 8, 8), r"built for in_channels=3 but the input has 1 channels"),
    (torch.randn(2, 3, 8), r"expects images \(n, 3, h, w\), got \(2, 3, 8\)"),
])
def test_input_shape_errors(x, match):
    net = Network(G3, channels=2, layers=2, num_classes=2, in_channels=3)
    with pytest.raises(ValueError, match=match):
        net(x)


def test_bad_skeleton_arguments():
    with pytest.raises(ValueError, match="channels must be an int >= 1"):
        Network(G3, channels=0)
    with pytest.raises(ValueError, match="unknown operation 'bogus'"):
        Network({"num_nodes": 3, "edges": [[["bogus", 0], ["identity", 1]]] * 3})
