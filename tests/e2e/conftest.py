"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import pytest

from config.launcher import Stack
from tests.e2e.helpers import Api


@pytest.fixture
def api(saga_system: Stack) -> Api:
    return Api(saga_system.base_url)
