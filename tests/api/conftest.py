"""Fixtures of the HTTP API tests: real users and tokens, real clients, histories built by the
real services, relayed into the real log and projected by the real subscribers. No mocks."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def forget_tokens() -> None:
    """The databases are flushed between tests without signals: forget the remembered tokens."""
    from config import authentication

    authentication._remembered.clear()


@pytest.fixture
def user() -> Any:
    return get_user_model().objects.create_user("operator", password=PASSWORD)


@pytest.fixture
def token(user: Any) -> str:
    return str(Token.objects.create(user=user).key)


@pytest.fixture
def api(token: str) -> APIClient:
    """A client that authenticates as DRF clients do: ``Authorization: Token <key>``."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


@pytest.fixture
def anon() -> APIClient:
    return APIClient()
