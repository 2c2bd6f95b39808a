"""The default cache in as few round trips as possible, for the hot read path.

Django's Redis backend builds a new ``redis.Redis`` object for every call (which copies about
a hundred response callbacks), validates every key character by character, and turns ``incr``
into ``EXISTS`` + ``INCR``. On a cached read that made five round trips and five client objects
per request (bench/query.py). This module talks to the same Redis, through the same connection
pool, with the same keys (``KEY_PREFIX``, ``VERSION``) and the same serializer as Django's
cache, so both views of the cache stay interchangeable (``cache.clear()``, ``cache.delete(k)``):

- :func:`get_many`: one ``MGET``;
- :func:`window_hit`: ``SET NX EX`` + ``INCR`` of a rate-limit counter, one pipelined round trip;
- :func:`set_many`: ``SET PX`` of several keys, one pipelined round trip;
- :func:`delete_unless_other_mark`: delete keys unless they hold an integer mark (a negative
  one) other than the caller's, one script call for any number of keys;
- :func:`read_ahead`: a request announces the keys it is going to read, and the first round
  trip of that request (the rate limit's counter, which DRF checks before the view runs) fetches
  them too. The view's :func:`get_many` of exactly those keys is then answered from that fetch,
  once, without a round trip of its own. Those values were read before the view loads
  anything, so whatever freshness argument holds for a fetch made in the view still holds.

If the default cache is not Redis (another ``CACHE_URL``, the local-memory fallback), the same
functions use Django's cache API: slower, same meaning. Errors are the caller's to handle.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from django.core.cache import caches

# Delete each key unless it holds a mark (a negative integer) other than ARGV[1].
_DELETE_UNLESS_OTHER_MARK = """
for _, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value then
    local number = tonumber(value)
    if value == ARGV[1] or not (number and number < 0) then redis.call('DEL', key) end
  end
end
return true
"""


class _Redis:
    """The default cache's pool, key function and serializer, resolved once per backend."""

    def __init__(self, backend: Any) -> None:
        inner = backend._cache  # django.core.cache.backends.redis.RedisCacheClient
        self.client = inner.get_client(write=True)  # one client over the backend's write pool
        self.dumps = inner._serializer.dumps
        self.loads = inner._serializer.loads
        self.make_key = backend.make_key
        self.delete_unless_other_mark = self.client.register_script(_DELETE_UNLESS_OTHER_MARK)


def _redis() -> _Redis | None:
    backend = caches["default"]
    fast: _Redis | Literal[False] | None = backend.__dict__.get("_fastcache")
    if fast is None:
        from django.core.cache.backends.redis import RedisCache

        fast = _Redis(backend) if isinstance(backend, RedisCache) else False
        backend.__dict__["_fastcache"] = fast
    return fast or None


class _ReadAhead:
    def __init__(self, keys: list[str]) -> None:
        self.keys = keys
        self.fetched = False
        self.values: list[Any] | None = None  # fetched and not used yet


_read_ahead: ContextVar[_ReadAhead | None] = ContextVar("fastcache_read_ahead", default=None)


@contextmanager
def read_ahead(keys: Sequence[str]) -> Iterator[None]:
    """Within the block, the next :func:`window_hit` also fetches ``keys``, for the next
    :func:`get_many` of the same keys. Nothing fetched ahead outlives the block."""
    token = _read_ahead.set(_ReadAhead(list(keys)))
    try:
        yield
    finally:
        _read_ahead.reset(token)


def get_many(keys: Sequence[str]) -> list[Any]:
    """The values of ``keys``, in order, ``None`` where a key is missing."""
    ahead = _read_ahead.get()
    if ahead is not None and ahead.values is not None and ahead.keys == list(keys):
        values, ahead.values = ahead.values, None  # used once
        return values
    fast = _redis()
    if fast is None:
        found = caches["default"].get_many(keys)
        return [found.get(key) for key in keys]
    loads = fast.loads
    return [None if raw is None else loads(raw) for raw in fast.client.mget([fast.make_key(key) for key in keys])]


def set_value(key: str, value: Any, timeout: int) -> None:
    fast = _redis()
    if fast is None:
        caches["default"].set(key, value, timeout)
    else:
        fast.client.set(fast.make_key(key), fast.dumps(value), ex=timeout)


def add(key: str, value: Any, timeout: float | None) -> bool:
    """Store ``value`` unless ``key`` exists; ``timeout`` in seconds, to the millisecond
    (``None`` keeps it until evicted)."""
    fast = _redis()
    if fast is None:
        return bool(caches["default"].add(key, value, timeout))
    px = None if timeout is None else max(int(timeout * 1000), 1)
    return bool(fast.client.set(fast.make_key(key), fast.dumps(value), px=px, nx=True))


def window_hit(key: str, timeout: int) -> int:
    """Count one more hit on a counter that lives ``timeout`` seconds from its first hit."""
    fast = _redis()
    if fast is None:
        cache = caches["default"]
        cache.add(key, 0, timeout)
        return int(cache.incr(key))
    full_key = fast.make_key(key)
    pipe = fast.client.pipeline(transaction=False)
    pipe.set(full_key, 0, ex=timeout, nx=True)
    pipe.incr(full_key)
    ahead = _read_ahead.get()
    if ahead is None or ahead.fetched:
        return int(pipe.execute()[1])
    pipe.mget([fast.make_key(k) for k in ahead.keys])
    _, count, raw = pipe.execute()
    loads = fast.loads
    ahead.values = [None if r is None else loads(r) for r in raw]
    ahead.fetched = True
    return int(count)


def set_many(values: dict[str, Any], timeout: float) -> None:
    """Store every key of ``values`` for ``timeout`` seconds (to the millisecond), one round trip."""
    if not values:
        return
    fast = _redis()
    if fast is None:
        caches["default"].set_many(values, timeout)
        return
    pipe = fast.client.pipeline(transaction=False)
    for key, value in values.items():
        pipe.set(fast.make_key(key), fast.dumps(value), px=max(int(timeout * 1000), 1))
    pipe.execute()


def delete_unless_other_mark(keys: Sequence[str], *, mark: int) -> None:
    """Delete each of ``keys`` unless it holds a negative integer other than ``mark`` (someone
    else's mark, theirs to clear). One round trip on Redis (a script, so atomic); a read then a
    delete elsewhere."""
    if not keys:
        return
    fast = _redis()
    if fast is None:
        cache = caches["default"]
        found = cache.get_many(keys)
        cache.delete_many([k for k, v in found.items() if v == mark or not (isinstance(v, int) and v < 0)])
        return
    fast.delete_unless_other_mark(keys=[fast.make_key(key) for key in keys], args=[fast.dumps(mark)])
