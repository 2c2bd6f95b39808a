"""Sending commands and notifications by task name, after the sender's transaction commits.

The broker only wakes things up: a send that fails is logged and left to the periodic sweep,
which finds the same work in the database. Contexts never import each other's tasks; they name
them (``"customers.credit_reserve"``) and the router sends each to its context's queue.

Wake-ups ("there is new work in the database, go and look") are idempotent, so they are
coalesced. ``wake_on_commit`` hands them to a per-process notifier thread, off the request's
thread, which sends each distinct wake-up at most once per ``WAKE_COALESCE_SECONDS`` window
across *all* processes: a flag in the shared cache marks the window (``WindowFlags``: Django's
default cache unless the wiring plugs in something sharper, as config does with ``SET NX PX``).
A wake-up that finds the window taken is not dropped but tried again when the window has
passed (a trailing edge): if the flag is then free it is sent; if not, someone claimed it
*after* our commit, and the message that claim sends makes the task look at the database
after our commit too. So every commit is followed by a run of the task no later than about
one window later, and a burst of hundreds of commits costs a few relay runs instead of one
each. Without a shared Redis cache each process coalesces on its own. Commands that carry
data use ``send_task_on_commit`` and are sent one by one.

The kernel imports no wiring: tasks go out through Celery's default app (the one the process
runs, ``celery -A config.celery_app``, which makes itself the default for every thread), and the
window flags through the small ``WindowFlags`` interface below.

When the broker is unreachable, sends stop trying for ``BROKER_BACKOFF_SECONDS`` after a
failure, so that a broker outage costs a business transaction nothing but a log line.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import current_app
from django.core.cache import caches
from django.db import transaction

logger = logging.getLogger(__name__)

BROKER_BACKOFF_SECONDS = 5.0
_state = threading.local()


def _broker_backing_off() -> bool:
    return time.monotonic() < getattr(_state, "down_until", 0.0)


def send_task(name: str, *, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None, queue: str | None = None, expires: Any = None) -> bool:
    """Send a task by name now; ``False`` (and one warning) if the broker could not take it."""
    if _broker_backing_off():
        return False
    options: dict[str, Any] = {"retry": True, "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.1}}
    if queue is not None:
        options["queue"] = queue
    if expires is not None:
        options["expires"] = expires
    try:
        current_app.send_task(name, args=args, kwargs=kwargs or {}, **options)
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


def _window() -> float:
    from django.conf import settings

    return float(getattr(settings, "WAKE_COALESCE_SECONDS", 0.25))


#: Sets a flag unless it is set: ``(key, value, timeout_seconds) -> True if it was free``. The
#: timeout is a fraction of a second, so a backend must keep it to the millisecond to coalesce
#: well; one that cannot still gives correct wake-ups, only more of them.
WindowFlags = Callable[[str, Any, float], bool]


def _django_cache_add(key: str, value: Any, timeout: float) -> bool:
    return bool(caches["default"].add(key, value, timeout))


_window_flags: WindowFlags = _django_cache_add


def window_flags_use(flags: WindowFlags) -> None:
    """Where the wake-up windows are marked (the wiring plugs in its fast Redis ``SET NX PX``)."""
    global _window_flags
    _window_flags = flags


def _claim(wake_up: WakeUp, window: float) -> bool:
    """``True`` if this process owns the current window of ``wake_up`` and should send.

    The window is a flag in the shared cache (``WindowFlags``): shared by every process when
    the cache is Redis, per process otherwise.
    """
    if window <= 0:
        return True
    name, args, _ = wake_up
    try:
        return _window_flags("wake-window:" + ":".join([name, *map(str, args)]), os.getpid(), window)
    except Exception:  # the cache unreachable: no coalescing, sending is always safe
        return True


class _Notifier:
    """Sends coalesced wake-ups from a daemon thread; one per process.

    A forked child (a prefork pool process, a gunicorn worker) starts afresh (``reset``, run
    by ``os.register_at_fork``): nothing of its parent's pending wake-ups, thread, or a lock
    that thread held at the fork.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._pending: dict[WakeUp, None] = {}
        #: Wake-ups that found their window taken: when to try again, and whether a commit
        #: came after the last attempt (then a taken window on retry is not yet proof of cover).
        self._deferred: dict[WakeUp, tuple[float, bool]] = {}
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None

    def request(self, wake_up: WakeUp) -> None:
        """Ask for ``wake_up`` soon. Costs the caller a lock and a dict look-up when the same
        wake-up is already pending or waiting for its window: then nothing new has to happen
        before that retry, which now stands for this commit too, so the thread is not woken
        (waking it costs the committing thread a GIL hand-over, measured at about 0.4 ms)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                deferred = self._deferred.get(wake_up)
                if deferred is not None:
                    self._deferred[wake_up] = (deferred[0], True)  # its retry covers this commit
                    return
                if wake_up in self._pending:  # not picked up yet: it will see this commit
                    return
            self._pending[wake_up] = None
            self._idle.clear()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="wake-up-notifier", daemon=True)
                self._thread.start()
        self._wanted.set()

    def _run(self) -> None:
        while True:
            with self._lock:
                next_retry = min((at for at, _ in self._deferred.values()), default=None)
            self._wanted.wait(None if next_retry is None else max(next_retry - time.monotonic(), 0))
            self._wanted.clear()
            now = time.monotonic()
            window = _window()
            with self._lock:
                fresh, self._pending = list(self._pending), {}
                due = {w: newer for w, (at, newer) in self._deferred.items() if at <= now}
                for wake_up in due:
                    del self._deferred[wake_up]
                for wake_up in fresh:
                    if wake_up in self._deferred:  # already waiting for its window: remember
                        self._deferred[wake_up] = (self._deferred[wake_up][0], True)  # a newer commit
                        continue
                    due.setdefault(wake_up, True)
            for wake_up, newer in due.items():
                if _claim(wake_up, window):
                    self._send(wake_up)
                elif newer:
                    # Taken: try once more when this window has passed. Then a flag that is set
                    # was claimed after this attempt, so after every commit it stands for, and
                    # the message of that claim covers them.
                    with self._lock:
                        self._deferred[wake_up] = (time.monotonic() + window, False)
            with self._lock:
                if not self._pending and not self._deferred:
                    self._idle.set()

    @staticmethod
    def _send(wake_up: WakeUp) -> None:
        name, args, queue = wake_up
        send_task(name, args=args, queue=queue)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every requested wake-up has been sent or covered (process exit, tests)."""
        return self._idle.wait(timeout)


_notifier = _Notifier()
atexit.register(_notifier.flush, 2.0)
os.register_at_fork(after_in_child=_notifier.reset)


def wake_on_commit(name: str, *, using: str, args: tuple[Any, ...] = (), queue: str | None = None) -> None:
    """After commit, make sure ``name(*args)`` runs soon; bursts collapse into a few messages."""
    transaction.on_commit(lambda: _notifier.request((name, tuple(args), queue)), using=using)


def wake(name: str, *, args: tuple[Any, ...] = (), queue: str | None = None) -> None:
    """The same, now (outside a transaction)."""
    _notifier.request((name, tuple(args), queue))


def flush_wake_ups(timeout: float = 5.0) -> bool:
    return _notifier.flush(timeout)
