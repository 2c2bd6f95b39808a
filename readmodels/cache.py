"""Caching of read-model queries, kept fresh by generation keys.

Every cached answer depends on a *generation* (of one order, one customer, or the order lists)
and on a global *epoch* (bumped by a replay). An answer is stored together with the generation
and epoch its reader saw *before* loading the row, and it is served only while both are still
current.

The claim: once a projection's transaction has committed, no process is served the answer it
replaced. How: inside the transaction, before it commits, the projection *marks* every key it
changes (the generation becomes a negative number that is its own, for CHANGING_TTL_SECONDS);
a reader that finds a mark neither serves nor stores: it reads the table. After the commit the
projection deletes its mark, and the key's next reader starts a fresh namespace: a random
generation, which no stored stamp matches. So from before the commit on, the old answer is
never served; tests/readmodels/test_cache.py runs the races and the failures:

- the cache cannot take the mark: the projection raises ``CacheUnavailable`` and does not
  commit; it is retried (a wake-up or the sweep), so the read model lags instead of lying;
- the cache fails after the commit (the mark is never deleted): the mark stays until it
  expires, into the same fresh namespace; meanwhile that key is read from its table.
  An evicted generation, or a ``cache.clear()``, also just starts a fresh namespace.

This relies on one writer per key at a time, which holds: a projection changes its keys under
its checkpoint row lock, and a replay's swap takes the same locks. Its one limit: if a mark is
evicted (or outlives CHANGING_TTL_SECONDS) while its transaction is still open *and* the step
after the commit fails too, so that a generation a reader started meanwhile survives, the answer a reader stored meanwhile is served until it expires
(VALUE_TTL_SECONDS). A process that sees the cache fail reads the tables for a few seconds.

A read is one round trip: one ``MGET`` of the generation, the epoch and the stamped answer
(config/fastcache.py). A miss adds one ``SET`` of the freshly loaded answer.
"""

from __future__ import annotations

import logging
import secrets
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
#: How long a mark outlives a transaction that never replaced it (rolled back, or the cache
#: failed after the commit); the key is read from its table meanwhile.
CHANGING_TTL_SECONDS = 60
T = TypeVar("T")


class CacheUnavailable(Exception):
    """The cache could not be told that keys are about to change: the caller must not commit."""


def _fresh_generation() -> int:
    """Random, so that a re-created namespace never matches a stamp of an evicted one."""
    return secrets.randbits(62) + 1


def _is_mark(value: Any) -> bool:
    return isinstance(value, int) and value < 0


def _generation_key(kind: str, key: uuid.UUID | str | None) -> str:
    return f"{PREFIX}gen:{kind}:{key}" if key is not None else f"{PREFIX}gen:{kind}"


EPOCH_KEY = f"{PREFIX}epoch"


def _start_namespaces(keys: list[str]) -> list[int | None]:
    """Create the missing generation/epoch keys (rare: first use, eviction, ``cache.clear()``)."""
    for key in keys:
        fastcache.add(key, _fresh_generation(), timeout=None)
    return fastcache.get_many(keys)


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
    if generation is None or epoch is None or _is_mark(generation) or _is_mark(epoch):
        return load()  # being changed (or lost this instant): the table's answer, stored nowhere
    stamp = (generation, epoch)
    if stored is not None and stored[0] == stamp:
        return stored[1]
    value = load()
    try:
        fastcache.set_value(value_key, (stamp, value), timeout=VALUE_TTL_SECONDS)
    except Exception as exc:
        _cache_down(exc)
    return value


def invalidate_at_commit(kind: str, keys: Iterable[uuid.UUID | str | None]) -> None:
    """Inside the projection's transaction on ``readmodels``: mark each key as changing now
    (``CacheUnavailable`` if the cache cannot take it: do not commit), and clear the mark once
    the transaction commits, so the key's next reader starts a new generation."""
    _change([_generation_key(kind, key) for key in keys])


def invalidate_everything() -> None:
    """A new epoch: every cached read-model answer is stale (a replay swapped tables). Call it
    inside the transaction that swaps them, like :func:`invalidate_at_commit`; outside one it
    takes effect at once."""
    _change([EPOCH_KEY])


def _change(generation_keys: list[str]) -> None:
    if not generation_keys:
        return
    mark = -_fresh_generation()  # this transaction's own
    _with_one_retry(lambda: fastcache.set_many(dict.fromkeys(generation_keys, mark), timeout=CHANGING_TTL_SECONDS), failed=_refuse)
    transaction.on_commit(lambda: _settle(generation_keys, mark), using=ALIAS)


def _refuse(exc: Exception) -> None:
    _cache_down(exc)
    raise CacheUnavailable(f"cannot mark read-model keys as changing: {exc}") from exc


def _settle(generation_keys: list[str], mark: int) -> None:
    """After the commit, delete each key (our mark, or a generation a reader started after our
    mark was lost) unless it holds another transaction's mark, which is left to that one."""

    def failed(exc: Exception) -> None:
        _cache_down(exc)
        logger.error("read-model cache: %d key(s) stay marked as changing, read from their tables for up to %ds: %s",
                     len(generation_keys), CHANGING_TTL_SECONDS, exc)

    _with_one_retry(lambda: fastcache.delete_unless_other_mark(generation_keys, mark=mark), failed=failed)


def _with_one_retry(attempt: Callable[[], None], *, failed: Callable[[Exception], None]) -> None:
    try:
        attempt()
        return
    except Exception:  # noqa: BLE001 - a blip: once more, then ``failed`` decides
        time.sleep(0.05)
    try:
        attempt()
    except Exception as exc:  # the cache is an optimisation: ``failed`` says what that costs
        failed(exc)


def wait_for(probe: Callable[[], Any], *, timeout: float, interval: float = 0.05) -> Any:
    """Poll ``probe`` until it returns something truthy or ``timeout`` passes; last result."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result or time.monotonic() >= deadline:
            return result
        time.sleep(interval)
