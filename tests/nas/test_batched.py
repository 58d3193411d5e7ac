"""The fused forward of many candidates equals running them one after another (float64)."""
import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ftdfast.nas import BatchedCandidates, FuseMixture, Genotype, Network, SearchSpace, uniform_genotype

# zero and identity on the cell inputs: both run at stride 2 in reduction cells (zeros, factorized reduce)
ZERO_ID = Genotype(4, ((("zero", 0), ("identity", 1)),
                       (("identity", 0), ("zero", 2)),
                       (("identity", 3), ("avg_pool_3x3", 1)),
                       (("zero", 4), ("conv_3x3", 2))))
RTOL = 1e-10


def _pair(genotypes, *, channels=3, layers=3, in_channels=2, num_classes=4, seed=0):
    torch.manual_seed(seed)
    nets = [Network(g, channels, layers, num_classes, in_channels).double() for g in genotypes]
    # non-trivial BatchNorm state and affine parameters, so eval mode is a real check
    with torch.no_grad():
        for net in nets:
            for m in net.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
    fused = BatchedCandidates(nets, batched=True)
    seq = BatchedCandidates(copy.deepcopy(nets), batched=False)
    return fused, seq


def _assert_close(a, b, what):
    scale = b.abs().max().clamp_min(1e-12)
    assert float((a - b).abs().max().detach() / scale.detach()) <= RTOL, what


def _check(fused, seq, x, y):
    w = torch.softmax(torch.linspace(-1, 1, len(fused.nets), dtype=torch.float64), 0)
    for mode in ("train", "eval"):
        fused.train(mode == "train"), seq.train(mode == "train")
        lf, ls = fused(x), seq(x)
        assert lf.shape == (x.shape[0], len(fused.nets), fused.nets[0].num_classes)
        _assert_close(lf, ls, f"{mode} logits")
        fused.zero_grad(), seq.zero_grad()
        F.cross_entropy(FuseMixture.mix(lf, w), y).backward()
        F.cross_entropy(FuseMixture.mix(ls, w), y).backward()
        for (name, p), q in zip(fused.named_parameters(), seq.parameters()):
            assert (p.grad is None) == (q.grad is None), name
            if q.grad is not None:
                _assert_close(p.grad, q.grad, f"{mode} grad of {name}")
        for (name, b), c in zip(fused.named_buffers(), seq.buffers()):
            if b.is_floating_point():
                _assert_close(b, c, f"{mode} buffer {name}")
            else:
                assert torch.equal(b, c), name         # num_batches_tracked


@pytest.mark.parametrize("case", ["restricted", "random", "zero-identity", "identical"])
@pytest.mark.parametrize("size", [7, 9])
def test_fused_equals_sequential(case, size):
    space = SearchSpace()
    if case == "restricted":
        gens = space.restrict_to(ZERO_ID).sample_many(5, 2) + [ZERO_ID]
    elif case == "random":
        gens = space.sample_many(5, size) + [ZERO_ID]       # 3 and 4 nodes, different wiring
    elif case == "zero-identity":
        gens = [ZERO_ID, uniform_genotype("zero", 4), uniform_genotype("identity", 4), ZERO_ID]
    else:
        gens = [space.sample(4)] * 3
    fused, seq = _pair(gens)
    assert fused.fused_groups, "no candidates were fused"
    g = torch.Generator().manual_seed(size)
    x = torch.randn(3, 2, size, size, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (3,), generator=g)
    _check(fused, seq, x, y)


def test_fused_forward_matches_each_network_called_alone():
    gens = SearchSpace(node_counts=(3,)).sample_many(3, 0)
    fused, _ = _pair(gens, layers=2)
    fused.eval()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    out = fused(x)
    for k, net in enumerate(fused.nets):
        _assert_close(out[:, k], net(x), f"candidate {k}")


def test_groups_follow_the_skeleton_and_other_modules_run_alone():
    g3, g4 = uniform_genotype("conv_3x3", 3), uniform_genotype("conv_3x3", 4)
    nets = [Network(g3, 2, 2, 3, 1), Network(g4, 2, 2, 3, 1), Network(g3, 2, 2, 3, 1),
            nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), Network(g3, 4, 2, 3, 1), Network(g4, 2, 2, 3, 1)]
    b = BatchedCandidates(nets).eval()
    assert b.fused_groups == [[0, 2], [1, 5]]
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        out = b(x)
        assert out.shape == (2, 6, 3)
        for k in range(6):
            assert torch.allclose(out[:, k], nets[k](x), rtol=1e-5, atol=1e-6), k


def test_candidates_in_different_modes_fall_back_to_sequential():
    gens = SearchSpace(node_counts=(3,)).sample_many(2, 5)
    fused, seq = _pair(gens, layers=2)
    fused.train(), seq.train()
    fused.nets[1].eval(), seq.nets[1].eval()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    _assert_close(fused(x), seq(x), "mixed modes")
    _assert_close(fused.nets[0].cells[0].preprocess1.bn.running_mean,
                  seq.nets[0].cells[0].preprocess1.bn.running_mean, "running stats of the training-mode net")


def test_empty_candidate_list():
    with pytest.raises(ValueError, match="at least one candidate"):
        BatchedCandidates([])


def test_auto_fuses_small_inputs_only_on_cpu():
    gens = SearchSpace(node_counts=(3,)).sample_many(3, 0)
    nets = [Network(g, 2, 1, 3, 1) for g in gens]
    b = BatchedCandidates(nets, batched="auto", auto_max_bytes=4 * 6 * 8 * 8 * 4)     # 4 samples, 6 stem channels
    small, large = torch.randn(4, 1, 8, 8), torch.randn(5, 1, 8, 8)
    assert b.fuses(small) == [[0, 1, 2]] and b.fuses(large) == []
    assert BatchedCandidates(nets, batched=True).fuses(large) == [[0, 1, 2]]
    assert BatchedCandidates(nets, batched=False).fuses(small) == []
    b.eval()
    with torch.no_grad():
        assert torch.allclose(b(small), torch.stack([n(small) for n in nets], 1), atol=1e-6)
        assert torch.equal(b(large), torch.stack([n(large) for n in nets], 1))
    with pytest.raises(ValueError, match="batched must be True, False or 'auto'"):
        BatchedCandidates(nets, batched="yes")


class Scaled(nn.Module):
    """An operation only this test registers: a learned scale, strided like the others (ceil(h / 2))."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride
        self.scale = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        return self.scale * x[:, :, ::self.stride, ::self.stride]


def test_an_operation_without_a_batched_form_runs_its_candidate_set_unbatched(monkeypatch):
    """A new operation needs no edit of batched.py: the candidates that share a skeleton with it run one after
    another (correct gradients and buffers), the other skeletons stay fused."""
    from ftdfast.nas import OPS
    monkeypatch.setitem(OPS, "conv_5x5", lambda C, stride, affine: Scaled(stride))
    new = Genotype(3, ((("conv_5x5", 0), ("conv_3x3", 1)),
                       (("conv_5x5", 2), ("identity", 1)),
                       (("avg_pool_3x3", 3), ("conv_5x5", 0))))
    old = SearchSpace(node_counts=(3,), ops=("conv_3x3", "identity", "max_pool_3x3")).sample_many(2, 3)
    fused, seq = _pair([new, new, uniform_genotype("conv_5x5", 3)], channels=3)
    assert fused.fused_groups == [] and fused.unbatched_ops == ["Scaled"]
    assert isinstance(fused.nets[0].cells[0].edge_ops[0], Scaled)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 7, 7, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (3,), generator=g)
    _check(fused, seq, x, y)
    torch.manual_seed(0)
    mixed = BatchedCandidates([Network(new, 3, 3, 4, 2), Network(old[0], 2, 3, 4, 2), Network(new, 3, 3, 4, 2),
                               Network(old[1], 2, 3, 4, 2)], batched=True)
    assert mixed.fused_groups == [[1, 3]] and mixed.unbatched_ops == ["Scaled"]
    mixed.eval()
    with torch.no_grad():
        x = torch.randn(2, 2, 8, 8)
        assert torch.allclose(mixed(x), torch.stack([n(x) for n in mixed.nets], 1), atol=1e-6)
