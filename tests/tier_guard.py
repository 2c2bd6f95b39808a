"""A pytest plugin: on the PostgreSQL + Redis tier a PostgreSQL-only test may not skip.

Those tests skip, and are reported as skipped, on the embedded default. On the tier that exists
to run them (``scripts/test-pg.sh`` sets ``SAGA_TEST_TIER=postgresql``) a skip would mean the
tier is misconfigured and the test silently did not run, so it is turned into a failure.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

POSTGRES_ONLY = "needs PostgreSQL"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("SAGA_TEST_TIER") != "postgresql" or not report.skipped:
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    if POSTGRES_ONLY in reason:
        report.outcome = "failed"
        report.longrepr = f"a PostgreSQL-only test skipped on the PostgreSQL tier: {reason}"
