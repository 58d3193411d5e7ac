import warnings

import pytest


@pytest.fixture(autouse=True)
def _quiet_fallback_warnings():
    """The fallback warns once per module type; tests that check it do so explicitly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ftdfast: (no Fisher rule|the Fisher rule for)")
        yield


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes over 10 s on a 2-core CPU (torch.compile); -m 'not slow' skips it")
    config.addinivalue_line("markers", "cuda: runs on a CUDA GPU (skipped without one); benchmarks/gpu/gpu_check.sh "
                            "runs `pytest tests -m cuda`")


def pytest_collection_modifyitems(config, items):
    """Every test marked ``cuda`` skips where torch sees no GPU: one place, instead of a skipif per file."""
    import torch
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)
