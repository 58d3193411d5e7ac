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
