"""Caching of read-model queries, kept fresh by generation keys.

Every cached answer is stored under a key that includes a *generation* of what it depends on
(one order, one customer, or the order lists). A projection bumps those generations right after
its transaction commits, so the next read misses and goes to the table. A reader that fetched a
row just before the commit can only store it under the old generation, which nobody reads any
more: a stale answer can never be served once the projection has applied an update. A lost
generation key (eviction, a restarted cache) simply starts a new namespace.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from django.core.cache import cache
from django.db import transaction

logger = logging.getLogger(__name__)
ALIAS = "readmodels"
PREFIX = "rm:"
VALUE_TTL_SECONDS = 300
T = TypeVar("T")


def _generation_key(kind: str, key: uuid.UUID | str | None) -> str:
    return f"{PREFIX}gen:{kind}:{key}" if key is not None else f"{PREFIX}gen:{kind}"


EPOCH_KEY = f"{PREFIX}epoch"


def _generations(kind: str, key: uuid.UUID | str | None) -> str:
    """The key's own generation and the global epoch (bumped by a replay), in one round trip."""
    keys = [_generation_key(kind, key), EPOCH_KEY]
    found = cache.get_many(keys)
    for missing in (k for k in keys if k not in found):
        # time_ns makes a re-created namespace distinct from any that was evicted.
        cache.add(missing, time.time_ns(), timeout=None)
        found[missing] = cache.get(missing, 0)
    return f"{found[keys[0]]}.{found[EPOCH_KEY]}"


_unavailable_until = 0.0


def _cache_down(exc: Exception) -> None:
    global _unavailable_until
    if time.monotonic() >= _unavailable_until:
        logger.warning("cache unreachable (%s); reading the tables directly for 5s", exc)
    _unavailable_until = time.monotonic() + 5.0


def cached(kind: str, key: uuid.UUID | str | None, variant: str, load: Callable[[], T]) -> T:
    """``load()`` through the cache, under the current generation of ``(kind, key)``."""
    if time.monotonic() < _unavailable_until:
        return load()
    try:
        value_key = f"{PREFIX}{kind}:{key}:{_generations(kind, key)}:{variant}"
        hit = cache.get(value_key)
    except Exception as exc:  # the cache is an optimisation, never a dependency
        _cache_down(exc)
        return load()
    if hit is not None:
        return hit[0]  # type: ignore[no-any-return]
    value = load()
    try:
        cache.set(value_key, (value,), timeout=VALUE_TTL_SECONDS)  # wrapped, so a cached None is a hit
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
    for generation_key in generation_keys:
        try:
            cache.incr(generation_key)
        except ValueError:
            pass  # no generation yet: the next reader starts a fresh one
        except Exception as exc:
            _cache_down(exc)
            return


def wait_for(probe: Callable[[], Any], *, timeout: float, interval: float = 0.05) -> Any:
    """Poll ``probe`` until it returns something truthy or ``timeout`` passes; last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)
