"""Rate limits as fixed-window counters in the cache: one round trip per request.

DRF's stock throttles keep every request time of the last period in one cache value that is
read, unpickled, extended and written back on each request: at a few hundred requests per
second that list was the largest cost of a cached read (bench/query.py), and its
read-modify-write is not atomic across processes. A counter per identity and window is both
cheaper and exact. The counter is created with its expiry and incremented in one pipelined
round trip (``SET NX EX`` + ``INCR``, config/fastcache.py). If the cache is unreachable,
requests are allowed: a rate limit must not take the API down with it.
"""

from __future__ import annotations

import logging
import time
from typing import Any, cast

from rest_framework import exceptions, permissions
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from config import fastcache

logger = logging.getLogger(__name__)
PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class FixedWindowThrottle(BaseThrottle):
    scope = ""
    limit: int | None
    period: int

    def __init__(self) -> None:
        # drf-stubs types the rates as numbers; DRF (and this class) reads "count/period" strings.
        rate = cast("str | None", api_settings.DEFAULT_THROTTLE_RATES.get(self.scope))
        self.limit, self.period = (None, 60) if rate is None else self.parse(rate)
        self.wait_seconds: float | None = None

    @staticmethod
    def parse(rate: str) -> tuple[int, int]:
        count, _, period = rate.partition("/")
        return int(count), PERIODS[period[0]]

    def identity(self, request: Any) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: Any, view: Any) -> bool:
        ident = self.identity(request)
        if self.limit is None or ident is None:
            return True
        now = time.time()
        window = int(now // self.period)
        key = f"throttle:{self.scope}:{ident}:{window}"
        try:
            count = fastcache.window_hit(key, timeout=self.period + 1)
        except Exception as exc:  # the cache being down must not refuse every request
            logger.warning("throttle cache unreachable (%s); allowing the request", exc)
            return True
        if count > self.limit:
            self.wait_seconds = (window + 1) * self.period - now
            return False
        return True

    def wait(self) -> float | None:
        return self.wait_seconds


class AnonRateThrottle(FixedWindowThrottle):
    scope = "anon"

    def identity(self, request: Any) -> str | None:
        return None if request.user and request.user.is_authenticated else self.get_ident(request)


class RefusedCredentialsThrottle(AnonRateThrottle):
    """The anon counter of an address, for a call whose credentials were refused (no user yet)."""

    def identity(self, request: Any) -> str | None:
        return self.get_ident(request)


def count_refused_credentials(request: Any) -> None:
    """Count a call with bad credentials at the anon rate; 429 instead of 401 past it."""
    throttle = RefusedCredentialsThrottle()
    if not throttle.allow_request(request, None):
        raise exceptions.Throttled(throttle.wait())


class UserRateThrottle(FixedWindowThrottle):
    scope = "user"

    def identity(self, request: Any) -> str | None:
        return str(request.user.pk) if request.user and request.user.is_authenticated else None


class IsAuthenticated(permissions.IsAuthenticated):
    """DRF's ``IsAuthenticated``, with the throttles checked first for anonymous calls.

    DRF checks permissions before throttles, so every anonymous call here would be answered
    401 before the anon rate is counted. An anonymous call is therefore counted (and answered
    429 past the rate) before it is refused; an authenticated one goes through DRF's own
    throttle check, once, after this. A call with a wrong token never gets this far (DRF
    refuses it while authenticating): ``config.authentication`` counts it the same way, so
    guessing tokens is limited too.
    """

    def has_permission(self, request: Any, view: Any) -> bool:
        if not (request.user and request.user.is_authenticated):
            view.check_throttles(request)
        return super().has_permission(request, view)
