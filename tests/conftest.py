import warnings

import pytest


@pytest.fixture(autouse=True)
def _quiet_fallback_warnings():
    """The fallback warns once per module type; tests that check it do so explicitly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ftdfast: (no Fisher rule|the Fisher rule for)")
        yield
