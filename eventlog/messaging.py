"""Sending commands and notifications by task name, after the sender's transaction commits.

The broker only wakes things up: a send that fails is logged and left to the periodic sweep,
which finds the same work in the database. Contexts never import each other's tasks; they name
them (``"customers.credit_reserve"``) and the router sends each to its context's queue.

Wake-ups ("there is new work in the database, go and look") are idempotent, so they are
coalesced twice. In a process, ``wake_on_commit`` hands them to a notifier thread that sends
each distinct wake-up once per burst, off the request's thread. Across processes, a wake-up is
sent only if none is already waiting in the queue: a "pending" flag in the shared Redis cache
(``SET NX`` with an expiry) is set by the sender and cleared by the task when it starts
(``wake_received``), before it looks at the database, so work committed after that start
sends a new wake-up. Under load, hundreds of commits then cost one relay run instead of one
each. A lost message holds its flag until it expires (``WAKE_PENDING_SECONDS``); the periodic
sweep does not wait for it. Commands that carry data use ``send_task_on_commit`` and are sent
one by one.

When the broker is unreachable, sends stop trying for ``BROKER_BACKOFF_SECONDS`` after a
failure, so that a broker outage costs a business transaction nothing but a log line.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from typing import Any

from django.db import transaction

logger = logging.getLogger(__name__)

BROKER_BACKOFF_SECONDS = 5.0
#: How long a wake-up counts as waiting in the queue when its task never starts (a lost message).
WAKE_PENDING_SECONDS = 30
_state = threading.local()


def _broker_backing_off() -> bool:
    return time.monotonic() < getattr(_state, "down_until", 0.0)


def send_task(name: str, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, queue: str | None = None, expires: Any = None) -> bool:
    """Send a task by name now; ``False`` (and one warning) if the broker could not take it."""
    from config.celery_app import app

    if _broker_backing_off():
        return False
    options: dict[str, Any] = {"retry": True, "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}}
    if queue is not None:
        options["queue"] = queue
    if expires is not None:
        options["expires"] = expires
    try:
        app.send_task(name, args=args, kwargs=kwargs or {}, **options)
    except Exception as exc:  # the broker being down must never fail the business transaction
        _state.down_until = time.monotonic() + BROKER_BACKOFF_SECONDS
        logger.warning("broker unreachable (%s); not sending %s for %.0fs, the periodic sweep will pick the work up", exc, name, BROKER_BACKOFF_SECONDS)
        return False
    _state.down_until = 0.0
    return True


def send_task_on_commit(name: str, *, using: str, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, queue: str | None = None, expires: Any = None) -> None:
    """Send after the transaction on ``using`` commits; never for a rolled-back one.

    Celery's ``delay_on_commit`` binds to the ``default`` alias, which is the wrong database for
    every context here, so the alias is always named.
    """
    transaction.on_commit(lambda: send_task(name, args=args, kwargs=kwargs, queue=queue, expires=expires), using=using)


WakeUp = tuple[str, tuple[Any, ...], str | None]


def _pending_key(name: str, args: tuple[Any, ...]) -> str:
    return "wake-pending:" + ":".join([name, *map(str, args)])


def _shared_cache() -> Any | None:
    """The cache, if every process sees the same one (Redis); a per-process cache cannot
    tell one process that another already sent the wake-up."""
    from django.core.cache import caches
    from django.core.cache.backends.redis import RedisCache

    cache = caches["default"]
    return cache if isinstance(cache, RedisCache) else None


def _claim(name: str, args: tuple[Any, ...]) -> bool:
    """``True`` if this process should send the wake-up (no other one is waiting)."""
    cache = _shared_cache()
    if cache is None:
        return True
    try:
        return bool(cache.add(_pending_key(name, args), 1, timeout=WAKE_PENDING_SECONDS))
    except Exception:  # no cache, no coalescing: sending is always safe
        return True


def _unclaim(name: str, args: tuple[Any, ...]) -> None:
    cache = _shared_cache()
    if cache is None:
        return
    try:
        cache.delete(_pending_key(name, args))
    except Exception:
        logger.debug("could not clear the wake-up flag of %s%r", name, args, exc_info=True)


def wake_received(name: str, *args: Any) -> None:
    """Called by a woken task when it starts: later commits must send a new wake-up."""
    _unclaim(name, tuple(args))


class _Notifier:
    """Sends coalesced wake-ups from a daemon thread; one per process, restarted after fork."""

    def __init__(self) -> None:
        self._pending: dict[WakeUp, None] = {}
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._pid = 0

    def request(self, wake_up: WakeUp) -> None:
        with self._lock:
            self._pending[wake_up] = None
            self._idle.clear()
            if self._thread is None or self._pid != os.getpid() or not self._thread.is_alive():
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, name="wake-up-notifier", daemon=True)
                self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            with self._lock:
                batch, self._pending = list(self._pending), {}
            for name, args, queue in batch:
                if _claim(name, args) and not send_task(name, args=args, queue=queue):
                    _unclaim(name, args)
            with self._lock:
                if not self._pending:
                    self._idle.set()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every requested wake-up has been sent (process exit, tests)."""
        return self._idle.wait(timeout)


_notifier = _Notifier()
atexit.register(_notifier.flush, 2.0)


def wake_on_commit(name: str, *, using: str, args: tuple[Any, ...] = (), queue: str | None = None) -> None:
    """After commit, make sure ``name(*args)`` runs soon; bursts collapse into one message."""
    transaction.on_commit(lambda: _notifier.request((name, tuple(args), queue)), using=using)


def wake(name: str, *, args: tuple[Any, ...] = (), queue: str | None = None) -> None:
    """The same, now (outside a transaction)."""
    _notifier.request((name, tuple(args), queue))


def flush_wake_ups(timeout: float = 5.0) -> bool:
    return _notifier.flush(timeout)
