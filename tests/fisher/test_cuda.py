"""The Fisher on a GPU: rules/auto on CUDA against the float64 loop on CPU. Skips without a GPU."""
import pytest
import torch

import ftdfast

from .problems import BY_ID

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("backend", ["rules", "auto"])
@pytest.mark.parametrize("pid", ["linear-3d", "conv2d-stride-pad-dil-groups", "batchnorm2d-eval",
                                 "embedding-repeats-padding", "mha-self-batchfirst-padmask", "transformer-encoder",
                                 "tied-embedding-output"])
def test_cuda_matches_cpu_loop(pid, backend):
    problem = BY_ID[pid]
    model, x, y = problem.build(torch.float64)
    want = ftdfast.fisher_diagonal(model, (x, y), loss=problem.loss, backend="loop", progress=False)
    got = ftdfast.fisher_diagonal(model.cuda(), (x, y), loss=problem.loss, backend=backend, progress=False)
    for k in want:
        assert got[k].device.type == "cuda"
        torch.testing.assert_close(got[k].cpu(), want[k], rtol=1e-6, atol=1e-14)
