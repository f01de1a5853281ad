"""Shared test fixtures. Keep this file small: fixtures used by one area live in its own files."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))  # so tests can `import reference`


@pytest.fixture
def rng():
    """A seeded random generator: every test run sees the same random inputs."""
    return np.random.default_rng(12345)
