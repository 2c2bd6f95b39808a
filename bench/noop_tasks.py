"""The floor of bench/sagas.py: a chain of bare Celery hops that do no database work.

A chain is started by the bench client with ``(chain_id, queues, [t_published])``. Each hop
appends the wall-clock time at which it started to ``times`` and sends the next hop to
``queues[hop]``, through the same helper the project sends with (``eventlog.messaging.send_task``,
same retry options; the command hops carry an ``expires`` as the saga's commands do). The last
hop pushes the chain's times onto a Redis list (``DONE_KEY``, in the database that
``BENCH_NOOP_REDIS_URL`` names) for the client to collect. Nothing touches PostgreSQL.

With ``BENCH_PROFILE_DIR`` set (bench/saga_settings.py), this module also cProfiles the worker.
"""

from __future__ import annotations

import cProfile
import datetime as dt
import json
import os
import threading
import time
from typing import Any

from celery import shared_task, signals
from django.conf import settings

from eventlog.messaging import send_task

DONE_KEY = "bench:noop:done"
#: Command hops expire like the saga's commands (their step timeout); replies do not.
COMMAND_EXPIRES_SECONDS = 10.0

_redis: Any = None


def _done_client() -> Any:
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(os.environ.get("BENCH_NOOP_REDIS_URL") or settings.CELERY_BROKER_URL)
    return _redis


@shared_task(name="bench.noop_hop")
def noop_hop(chain_id: str, queues: list[str], times: list[float]) -> int:
    times = [*times, time.time()]
    hop = len(times) - 1  # hops done so far, this one included
    if hop < len(queues):
        queue = queues[hop]
        expires = None if queue == "sagas" else dt.datetime.now(dt.UTC) + dt.timedelta(seconds=COMMAND_EXPIRES_SECONDS)
        send_task("bench.noop_hop", args=(chain_id, queues, times), queue=queue, expires=expires)
    else:
        _done_client().rpush(DONE_KEY, json.dumps({"chain": chain_id, "times": times}))
    return hop


# --- optional cProfile of a worker (BENCH_PROFILE_DIR) ---------------------------------------

_profiler: cProfile.Profile | None = None
_profile_lock = threading.Lock()


def _profile_dir() -> str:
    return str(getattr(settings, "BENCH_PROFILE_DIR", "") or "")


def _profile_start(**_: Any) -> None:
    global _profiler
    if not _profile_dir():
        return
    with _profile_lock:
        if _profiler is None:
            _profiler = cProfile.Profile()
            _profiler.enable()  # the calling thread: the solo pool's (and the consumer's) main thread


def _profile_stop(**_: Any) -> None:
    global _profiler
    with _profile_lock:
        if _profiler is None:
            return
        _profiler.disable()
        os.makedirs(_profile_dir(), exist_ok=True)
        _profiler.dump_stats(os.path.join(_profile_dir(), f"worker-{os.getpid()}.prof"))
        _profiler = None


# --- with the profile: SQL statements per task name and database alias ------------------------

_sql_counts: dict[str, dict[str, int]] = {}
_sql_tasks: dict[str, int] = {}
_current: dict[str, Any] = {}


def _sql_counter(alias: str) -> Any:
    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        task = _current.get("task")
        if task is not None:
            counts = _sql_counts.setdefault(task, {})
            counts[alias] = counts.get(alias, 0) + 1
        return execute(sql, params, many, context)

    return wrapper


def _sql_prerun(sender: Any = None, **_: Any) -> None:
    if not _profile_dir():
        return
    from django.db import connections

    name = getattr(sender, "name", "?")
    _current["task"] = name
    _sql_tasks[name] = _sql_tasks.get(name, 0) + 1
    for alias in connections:
        connection = connections[alias]
        if not getattr(connection, "_bench_counted", False):
            connection.execute_wrappers.append(_sql_counter(alias))
            connection._bench_counted = True


def _sql_postrun(**_: Any) -> None:
    _current.pop("task", None)


def _sql_dump(**_: Any) -> None:
    if not _profile_dir() or not _sql_tasks:
        return
    os.makedirs(_profile_dir(), exist_ok=True)
    with open(os.path.join(_profile_dir(), f"sql-{os.getpid()}.json"), "w") as handle:
        json.dump({"tasks": _sql_tasks, "statements": _sql_counts}, handle)


signals.task_prerun.connect(_sql_prerun, weak=False)
signals.task_postrun.connect(_sql_postrun, weak=False)
signals.worker_shutdown.connect(_sql_dump, weak=False)
signals.worker_process_shutdown.connect(_sql_dump, weak=False)

# solo/threads pools run tasks in the worker's main process; prefork in each child.
signals.worker_ready.connect(_profile_start, weak=False)
signals.worker_shutdown.connect(_profile_stop, weak=False)
signals.worker_process_init.connect(_profile_start, weak=False)
signals.worker_process_shutdown.connect(_profile_stop, weak=False)


# --- the kernel's tasks, with their argument and result (BENCH_TASK_LOG) -------------------------
# The workers' "succeeded in" lines name a task but not its argument, and one task name
# (``eventlog.subscriber_advance``) serves every subscriber of the log, so the saga bench cannot
# tell from them which subscriber ran, how often, or how many events a run consumed. With
# ``BENCH_TASK_LOG`` set, each ``eventlog.*`` task pushes ``{name, arg, result, started, seconds}``
# onto ``TASKS_KEY`` (the same Redis database as ``DONE_KEY``): one RPUSH per relay or subscriber
# run, none for the saga's commands and replies or the floor's hops.

TASKS_KEY = "bench:tasks"
_task_started: dict[str, tuple[float, float]] = {}


def _task_prerun(task_id: str | None = None, sender: Any = None, **_: Any) -> None:
    if task_id and os.environ.get("BENCH_TASK_LOG") and getattr(sender, "name", "").startswith("eventlog."):
        _task_started[task_id] = (time.time(), time.perf_counter())


def _task_postrun(task_id: str | None = None, sender: Any = None, args: Any = None, retval: Any = None, **_: Any) -> None:
    started = _task_started.pop(task_id or "", None)
    if started is None:
        return
    seconds = time.perf_counter() - started[1]
    entry = {"name": sender.name, "arg": args[0] if args else None, "result": retval if isinstance(retval, int) else None,
             "started": started[0], "seconds": seconds}
    try:
        _done_client().rpush(TASKS_KEY, json.dumps(entry))
    except Exception:  # a bench instrument must never fail a task
        pass


signals.task_prerun.connect(_task_prerun, weak=False)
signals.task_postrun.connect(_task_postrun, weak=False)


# --- diagnostic: the relay wakes only the subscribers that want what it relayed (BENCH_WAKE_BY_TYPE) ---
# A measurement of a proposed product change, not the product: ``eventlog.relay`` wakes every
# subscriber of the log after each run, whatever it copied, so a subscriber whose wake-up window
# an uninteresting event just took has to wait for the window's trailing edge when the event it
# does want arrives. With ``BENCH_WAKE_BY_TYPE`` set, the relay task (and only it: the sweep still
# wakes every lagging subscriber) wakes a subscriber only if it takes every type (``types`` None)
# or one of the types the run copied into the log.

if os.environ.get("BENCH_WAKE_BY_TYPE"):
    import eventlog.relay as _relay_module
    import eventlog.tasks as _tasks_module

    _in_relay = threading.local()
    _original_log_append = _relay_module.log_append
    _original_subscribers = _tasks_module.subscribers

    def _log_append_noting_types(events: Any) -> None:
        events = list(events)
        if getattr(_in_relay, "types", None) is not None:
            _in_relay.types.update(e["type"] if isinstance(e, dict) else e.type for e in events)
        _original_log_append(events)

    def _subscribers_wanting() -> list[Any]:
        types = getattr(_in_relay, "types", None)
        everyone = _original_subscribers()
        if types is None:
            return everyone
        return [s for s in everyone if s.types is None or s.types & types]

    def _relay_prerun(sender: Any = None, **_: Any) -> None:
        _in_relay.types = set() if getattr(sender, "name", "") == "eventlog.relay" else None

    def _relay_postrun(**_: Any) -> None:
        _in_relay.types = None

    _relay_module.log_append = _log_append_noting_types
    _tasks_module.subscribers = _subscribers_wanting
    signals.task_prerun.connect(_relay_prerun, weak=False)
    signals.task_postrun.connect(_relay_postrun, weak=False)
