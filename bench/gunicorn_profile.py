"""gunicorn hooks for ``bench/sagas.py --profile --profile-mode 2pc``: a 2PC order is placed in
the web process (sagas/coordinator.py), not in a Celery worker, so that pass profiles gunicorn's
workers instead of Celery's.

``gunicorn -c bench/gunicorn_profile.py`` with ``BENCH_PROFILE_DIR`` set: each worker, once it has
loaded the application, cProfiles its (only) thread until it exits and then writes
``<dir>/web-<pid>.prof``, and ``<dir>/websql-<pid>.json`` with the requests it served, the
database connections it opened per alias (Django's ``connection_created``: the branch
connections of ``eventlog.twophase`` included) and the statements run through Django's cursors
per alias. The branch's ``tpc_begin``/``tpc_prepare``/``tpc_commit`` go to psycopg directly and
are not in those counts (pg_stat_statements has them).
"""

from __future__ import annotations

import cProfile
import json
import os
from typing import Any

_profiler: cProfile.Profile | None = None
_counts: dict[str, Any] = {"requests": 0, "connections": {}, "statements": {}}


def post_worker_init(worker: Any) -> None:
    global _profiler
    from django.core.signals import request_started
    from django.db.backends.signals import connection_created

    def on_request(**_: Any) -> None:
        _counts["requests"] += 1

    def on_connection(sender: Any = None, connection: Any = None, **_: Any) -> None:
        alias = connection.alias
        _counts["connections"][alias] = _counts["connections"].get(alias, 0) + 1
        if getattr(connection, "_bench_counted", False):
            return

        def counting(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            _counts["statements"][alias] = _counts["statements"].get(alias, 0) + 1
            return execute(sql, params, many, context)

        connection.execute_wrappers.append(counting)
        connection._bench_counted = True

    request_started.connect(on_request, weak=False)
    connection_created.connect(on_connection, weak=False)
    _profiler = cProfile.Profile()
    _profiler.enable()


def worker_exit(server: Any, worker: Any) -> None:
    directory = os.environ.get("BENCH_PROFILE_DIR")
    if _profiler is None or not directory:
        return
    _profiler.disable()
    os.makedirs(directory, exist_ok=True)
    _profiler.dump_stats(os.path.join(directory, f"web-{os.getpid()}.prof"))
    with open(os.path.join(directory, f"websql-{os.getpid()}.json"), "w") as handle:
        json.dump(_counts, handle)
