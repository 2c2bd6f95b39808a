"""Rate limits: a fixed-window counter per user in the real cache answers 429 past the limit."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test.utils import override_settings
from rest_framework.authtoken.models import Token
from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.test import APIClient, APIRequestFactory

from config import fastcache
from config.throttling import AnonRateThrottle, UserRateThrottle
from readmodels import cache as readmodels_cache
from tests.conftest import free_port

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


def anonymous_request(address: str) -> Request:
    """A real DRF request with no credentials, from ``address``."""
    return Request(APIRequestFactory().get("/api/projections/", REMOTE_ADDR=address))


def test_anonymous_calls_are_rate_limited_before_they_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Token guessing is limited too: past the anon rate an anonymous call gets 429, not 401."""
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "anon", "3/day")  # no window ends mid-test
    client = APIClient(REMOTE_ADDR="203.0.113.77")
    answers = [client.get("/api/orders/", HTTP_AUTHORIZATION="Token not-a-real-token") for _ in range(3)]
    answers += [client.get("/api/projections/") for _ in range(2)]
    assert [a.status_code for a in answers] == [401, 401, 401, 429, 429]
    assert answers[-1].json()["message"] == "Request was throttled."


def test_anonymous_calls_are_counted_per_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """The anon throttle on its own: a counter per client address."""
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "anon", "3/minute")
    answers = []
    for _ in range(4):
        throttle = AnonRateThrottle()
        answers.append(throttle.allow_request(anonymous_request("203.0.113.9"), None))
    assert answers == [True, True, True, False]
    assert 0 < throttle.wait() <= 60  # type: ignore[operator]  # a refused request has a wait
    assert AnonRateThrottle().allow_request(anonymous_request("203.0.113.10"), None)  # another address


def test_the_anon_rate_does_not_count_authenticated_calls(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "anon", "1/minute")
    assert [api.get("/api/projections/").status_code for _ in range(3)] == [200, 200, 200]


def test_each_user_has_its_own_counter(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "user", "2/minute")
    other = get_user_model().objects.create_user("other", password="x" * 20)
    other_api = APIClient()
    other_api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=other).key}")
    assert [api.get("/api/projections/").status_code for _ in range(3)] == [200, 200, 429]
    assert [other_api.get("/api/projections/").status_code for _ in range(3)] == [200, 200, 429]


@pytest.mark.parametrize("caches", [None, {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}], ids=["redis", "locmem"])
def test_the_counter_expires_with_its_window(caches: dict[str, Any] | None) -> None:
    with override_settings(**({"CACHES": caches} if caches else {})):
        assert (fastcache._redis() is None) == bool(caches)
        assert fastcache.window_hit("throttle:test:expiry", timeout=1) == 1
        assert fastcache.window_hit("throttle:test:expiry", timeout=1) == 2
        time.sleep(1.2)
        assert fastcache.window_hit("throttle:test:expiry", timeout=1) == 1


def test_an_unreachable_cache_lets_requests_through(api: APIClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(api_settings.DEFAULT_THROTTLE_RATES, "user", "1/minute")
    monkeypatch.setattr(readmodels_cache, "_unavailable_until", 0.0)  # restored afterwards
    with override_settings(CACHES={"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}):
        assert [api.get("/api/projections/").status_code for _ in range(3)] == [200, 200, 200]
