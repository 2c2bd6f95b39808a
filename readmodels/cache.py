"""Caching of read-model queries, kept fresh by generation keys.

Every cached answer depends on a *generation* (of one order, one customer, or the order lists)
and on a global *epoch* (bumped by a replay). A projection bumps the generations it touched
right after its transaction commits. An answer is stored together with the generation and
epoch its reader saw *before* loading the row, and it is served only while both are still
current. So a reader that fetched a row just before a projection's commit can only store it
stamped with the old generation, which no longer matches: a stale answer can never be served
once the projection has applied an update (tests/readmodels/test_cache.py runs that race).
A lost generation key (eviction, a restarted cache) simply starts a new namespace, seeded with
the time in nanoseconds so that it never matches an old stamp.

A read is one round trip: one ``MGET`` of the generation, the epoch and the stamped answer
(config/fastcache.py). A miss adds one ``SET`` of the freshly loaded answer.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

from django.db import transaction

from config import fastcache

logger = logging.getLogger(__name__)
ALIAS = "readmodels"
PREFIX = "rm:"
VALUE_TTL_SECONDS = 300
T = TypeVar("T")


def _generation_key(kind: str, key: uuid.UUID | str | None) -> str:
    return f"{PREFIX}gen:{kind}:{key}" if key is not None else f"{PREFIX}gen:{kind}"


EPOCH_KEY = f"{PREFIX}epoch"


def _start_namespaces(keys: list[str]) -> list[int]:
    """Create the missing generation/epoch keys (rare: first use, eviction, ``cache.clear()``)."""
    for key in keys:
        # time_ns makes a re-created namespace distinct from any that was evicted.
        fastcache.add(key, time.time_ns(), timeout=None)
    found = fastcache.get_many(keys)
    return [0 if value is None else value for value in found]


_unavailable_until = 0.0


def _cache_down(exc: Exception) -> None:
    global _unavailable_until
    if time.monotonic() >= _unavailable_until:
        logger.warning("cache unreachable (%s); reading the tables directly for 5s", exc)
    _unavailable_until = time.monotonic() + 5.0


def _keys(kind: str, key: uuid.UUID | str | None, variant: str) -> list[str]:
    """What one cached read fetches: the generation, the epoch and the stamped answer."""
    return [_generation_key(kind, key), EPOCH_KEY, f"{PREFIX}{kind}:{key}:{variant}"]


def read_ahead(kind: str, key: uuid.UUID | str | None, variant: str) -> AbstractContextManager[None]:
    """Let the request's first round trip to the cache (the rate limit's) fetch what
    :func:`cached` of the same ``(kind, key, variant)`` will read (config.fastcache.read_ahead)."""
    if time.monotonic() < _unavailable_until:
        return nullcontext()
    return fastcache.read_ahead(_keys(kind, key, variant))


def cached(kind: str, key: uuid.UUID | str | None, variant: str, load: Callable[[], T]) -> T:
    """``load()`` through the cache, under the current generation of ``(kind, key)``."""
    if time.monotonic() < _unavailable_until:
        return load()
    keys = _keys(kind, key, variant)
    generation_key, _, value_key = keys
    try:
        generation, epoch, stored = fastcache.get_many(keys)
        if generation is None or epoch is None:
            generation, epoch = _start_namespaces([generation_key, EPOCH_KEY])
            stored = None
    except Exception as exc:  # the cache is an optimisation, never a dependency
        _cache_down(exc)
        return load()
    stamp = (generation, epoch)
    if stored is not None and stored[0] == stamp:
        return stored[1]  # type: ignore[no-any-return]
    value = load()
    try:
        fastcache.set_value(value_key, (stamp, value), timeout=VALUE_TTL_SECONDS)
    except Exception as exc:
        _cache_down(exc)
    return value


def invalidate_on_commit(kind: str, keys: Iterable[uuid.UUID | str | None]) -> None:
    """After the projection's transaction commits, move each key to a new generation."""
    generation_keys = [_generation_key(kind, key) for key in keys]
    if generation_keys:
        transaction.on_commit(lambda: _bump(generation_keys), using=ALIAS)


def invalidate_everything() -> None:
    """A new epoch: every cached read-model answer is stale (after a replay swapped tables)."""
    _bump([EPOCH_KEY])


def _bump(generation_keys: list[str]) -> None:
    """``INCR`` each generation that exists, in one round trip; a missing one stays missing,
    and its next reader starts a fresh namespace."""
    try:
        fastcache.incr_existing(generation_keys)
    except Exception as exc:
        _cache_down(exc)


def wait_for(probe: Callable[[], Any], *, timeout: float, interval: float = 0.05) -> Any:
    """Poll ``probe`` until it returns something truthy or ``timeout`` passes; last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)
