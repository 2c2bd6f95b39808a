"""Token authentication with valid tokens remembered per process (config/authentication.py):
a repeated call costs no query, and revocation works at once in-process and within
``API_TOKEN_CACHE_SECONDS`` elsewhere. Real users, real tokens, the real default database."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connections
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config import authentication
from tests.api.helpers import assert_error

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
PATH = "/api/projections/"


def default_queries(client: APIClient) -> int:
    with CaptureQueriesContext(connections["default"]) as queries:
        assert client.get(PATH).status_code == 200
    return len(queries)


def test_a_repeated_call_costs_no_query_on_the_default_database(api: APIClient) -> None:
    assert default_queries(api) == 1  # the token and its user, once
    assert default_queries(api) == 0
    assert default_queries(api) == 0


def test_with_the_cache_off_every_call_looks_the_token_up(api: APIClient, settings: Any) -> None:
    settings.API_TOKEN_CACHE_SECONDS = 0
    assert [default_queries(api) for _ in range(3)] == [1, 1, 1]


def test_each_request_gets_its_own_copy_of_the_user(api: APIClient, token: str) -> None:
    api.get(PATH)
    first, _ = authentication.CachedTokenAuthentication().authenticate_credentials(token)
    first.first_name = "changed by a request"
    second, _ = authentication.CachedTokenAuthentication().authenticate_credentials(token)
    assert second.first_name == "" and second is not first


def test_a_deleted_token_is_refused_at_once(api: APIClient, token: str) -> None:
    assert api.get(PATH).status_code == 200
    Token.objects.get(key=token).delete()
    assert assert_error(api.get(PATH), 401)["extra"] == {"code": "authentication_failed"}


def test_a_regenerated_token_replaces_the_old_one_at_once(api: APIClient, user: Any, token: str) -> None:
    from django.core.management import call_command

    assert api.get(PATH).status_code == 200
    call_command("drf_create_token", user.username, reset=True)  # the stock command, as operators run it
    assert_error(api.get(PATH), 401)
    fresh = APIClient()
    fresh.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user=user).key}")
    assert fresh.get(PATH).status_code == 200


def test_a_deactivated_user_is_refused_at_once(api: APIClient, user: Any) -> None:
    assert api.get(PATH).status_code == 200
    user.is_active = False
    user.save()
    body = assert_error(api.get(PATH), 401)
    assert body["message"] == "User inactive or deleted."


def test_a_deleted_user_is_refused_at_once(api: APIClient, user: Any) -> None:
    assert api.get(PATH).status_code == 200
    user.delete()
    assert_error(api.get(PATH), 401)


def test_a_token_revoked_behind_this_process_is_accepted_for_at_most_the_cache_period(api: APIClient, token: str, settings: Any) -> None:
    """Another process revokes it: no signal reaches this one, the period bounds the delay."""
    settings.API_TOKEN_CACHE_SECONDS = 1.0
    assert api.get(PATH).status_code == 200
    with connections["default"].cursor() as cursor:  # as another process would: no signal here
        cursor.execute("DELETE FROM authtoken_token WHERE key = %s", [token])
    revoked_at = time.monotonic()
    assert api.get(PATH).status_code == 200  # the documented window
    while api.get(PATH).status_code == 200:
        assert time.monotonic() - revoked_at < 1.5, "a revoked token outlived API_TOKEN_CACHE_SECONDS"
        time.sleep(0.05)
    assert_error(api.get(PATH), 401)


def test_a_wrong_token_is_never_remembered(user: Any) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "f" * 40)
    for _ in range(2):
        with CaptureQueriesContext(connections["default"]) as queries:
            assert_error(client.get(PATH), 401)
        assert len(queries) == 1
    Token.objects.create(key="f" * 40, user=user)  # the same key, now issued: accepted at once
    assert client.get(PATH).status_code == 200


def test_the_memory_is_bounded(user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(authentication, "MAX_REMEMBERED", 3)
    keys = [Token.objects.create(user=get_user(f"u{i}")).key for i in range(5)]
    for key in keys:
        authentication.CachedTokenAuthentication().authenticate_credentials(key)
        assert len(authentication._remembered) <= 3


def get_user(name: str) -> Any:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(name, password="x" * 20)
