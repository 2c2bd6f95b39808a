"""Rate limits: a fixed-window counter per user in the real cache answers 429 past the limit."""

from __future__ import annotations

import pytest
from rest_framework.settings import api_settings
from rest_framework.test import APIClient

from config.throttling import UserRateThrottle

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


def test_calls_past_the_user_limit_get_429_in_the_error_shape(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "user", "3/minute")
    answers = [api.get("/api/projections/") for _ in range(5)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
    body = answers[-1].json()
    assert body["message"] == "Request was throttled." and 0 < body["extra"]["retry_after_seconds"] <= 60
    assert int(answers[-1]["Retry-After"]) <= 60


def test_rates_parse() -> None:
    assert UserRateThrottle.parse("100000/minute") == (100000, 60)
    assert UserRateThrottle.parse("5/s") == (5, 1)
