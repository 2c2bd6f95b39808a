"""DRF token authentication that remembers each valid token for a few seconds, per process.

DRF's ``TokenAuthentication`` runs ``SELECT ... FROM authtoken_token JOIN auth_user`` on the
``default`` database for every request: on a cached read that query was the largest single
cost (bench/query.py). Here a token that authenticated is remembered in the process for
``API_TOKEN_CACHE_SECONDS`` (default 5 s; 0 turns the cache off), so a busy client costs one
query per token, per process, per period.

Revocation. Deleting a token (``drf_create_token -r``, the admin, ``token.delete()``), or saving
or deleting its user (deactivation, ``is_active=False``), forgets the affected entries at once
in the process that made the change, through model signals. Every *other* process stops
accepting the token when its entry expires: **a revoked token or a deactivated user can still
be accepted for up to ``API_TOKEN_CACHE_SECONDS`` by other web processes.** Set it to 0 where
that window is not acceptable. Unknown or invalid tokens are never remembered, so each of them
still costs a query and gets its 401, exactly as before.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models.signals import post_delete, post_save
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from config.throttling import count_refused_credentials

#: token key -> (expires at, per time.monotonic(), user, token)
_remembered: dict[str, tuple[float, Any, Any]] = {}
MAX_REMEMBERED = 10_000


class CachedTokenAuthentication(TokenAuthentication):
    """``Authorization: Token <key>``, as DRF's, with valid tokens remembered for a few seconds.

    A refused token counts against the caller's anonymous rate limit, so guessing tokens is
    answered 429 past it, like any other anonymous call.
    """

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        try:
            return super().authenticate(request)
        except exceptions.AuthenticationFailed:
            count_refused_credentials(request)
            raise

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        ttl = settings.API_TOKEN_CACHE_SECONDS
        if ttl <= 0:
            return super().authenticate_credentials(key)
        now = time.monotonic()
        entry = _remembered.get(key)
        if entry is None or entry[0] <= now:
            user, token = super().authenticate_credentials(key)  # 401 for an unknown key or an inactive user
            if len(_remembered) >= MAX_REMEMBERED:
                _forget_expired(now)
            entry = _remembered[key] = (now + ttl, user, token)
        # A copy per request: nothing a request does to request.user leaks into the next one.
        return copy.copy(entry[1]), entry[2]


def _forget_expired(now: float) -> None:
    for key in [k for k, (expires, _, _) in list(_remembered.items()) if expires <= now]:
        _remembered.pop(key, None)
    if len(_remembered) >= MAX_REMEMBERED:
        _remembered.clear()


def forget_token(key: str) -> None:
    _remembered.pop(key, None)


def forget_user(user_pk: Any) -> None:
    for key in [k for k, (_, user, _) in list(_remembered.items()) if user.pk == user_pk]:
        _remembered.pop(key, None)


def _token_changed(sender: Any, instance: Token, **kwargs: Any) -> None:
    forget_token(instance.key)


def _user_changed(sender: Any, instance: Any, **kwargs: Any) -> None:
    forget_user(instance.pk)


post_save.connect(_token_changed, sender=Token, dispatch_uid="config.authentication.token_saved")
post_delete.connect(_token_changed, sender=Token, dispatch_uid="config.authentication.token_deleted")
post_save.connect(_user_changed, sender=get_user_model(), dispatch_uid="config.authentication.user_saved")
post_delete.connect(_user_changed, sender=get_user_model(), dispatch_uid="config.authentication.user_deleted")
