"""Append throughput of our event store, on SQLite and on PostgreSQL, against two references.

Run from the repository root::

    .venv/bin/python bench/append.py            # full run: 3 repeats, N=2,000 and 20,000
    .venv/bin/python bench/append.py --quick    # a smoke run in well under a minute
    .venv/bin/python bench/append.py -n 5       # more repeats
    .venv/bin/python bench/append.py --profile  # also cProfile our 1/txn path (results/profile-*.txt)

Figures (events per second; the median of the repeats is reported):

* ours, 1/txn     ``customers.services.customer_create`` N times: one CustomerCreated event and the
                  state row per transaction of the ``customers`` database, plus the relay wake-up
                  after commit (``eventlog.messaging``: handed to the notifier thread, which sends
                  at most one broker message per coalescing window; that thread runs meanwhile).
* ours, 100/txn   100 new ``Customer`` aggregates saved with ``customer_repository.save`` inside one
                  ``transaction.atomic(using="customers")`` (100 streams, 1 event each).
* relay           ``eventlog.relay.outbox_relay("customers", batch_size=1000)`` over everything the
                  two figures above appended.
* floor raw       the raw driver (sqlite3 with WAL + synchronous=NORMAL, or psycopg 3) inserting into
                  a table of the same shape as ``customers_customerevent`` (its DDL is copied from
                  the migrated database), 1 row per transaction and 100 rows per transaction.
* eventsourcing   the ``eventsourcing`` library's Application saving a new aggregate, 1 event per save,
                  with its SQLite persistence module (fresh file; WAL is its own default, and
                  synchronous=NORMAL is set by this script because the library has no setting) or its
                  PostgreSQL one (own database on the same server).

Every measurement runs in its own child process (this same file with ``--_worker``), after a short
warm-up, on empty tables: fresh files for SQLite, TRUNCATE / re-created tables for PostgreSQL. No
Celery worker runs: relay notifications pile up in the broker and are purged after each repeat
(``broker_purged``; far fewer than ``wake_ups_requested``, as the wake-ups are coalesced).

After the timed passes, each ``ours`` worker counts statements and round trips per event over one
more pass of each kind (``count_calls``; ``counts`` in the JSON, printed under each table); the
floor workers count theirs the same way.

Results: ``bench/results/append.json`` (machine, configuration, every repeat, medians) and a table
per database on stdout. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from _common import count_pg_round_trips  # bench/ is the script's directory, first on sys.path

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
# Another worktree's bench may use the default at the same time: BENCH_SERVICES_DIR picks another.
PG_SERVICES_DIR = Path(os.environ.get("BENCH_SERVICES_DIR", "/tmp/bench-services"))
SERVICES_SCRIPT = BASE_DIR / "scripts" / "services.sh"
FLOOR_TABLE = "bench_floor_event"
ES_PG_DATABASE = "bench_eventsourcing"
CELERY_QUEUES = ("orders", "customers", "sagas", "eventlog", "readmodels")
WARMUP = 20
WORKER_TIMEOUT = 900

RELAY_GOAL = 10_000.0
FLOOR_SHARE_GOAL = 0.5

FIGURES = (
    # key, label, floor key used for the ratio column
    ("ours_1", "ours, 1 event/txn", "floor_1"),
    ("ours_100", "ours, 100 events/txn", "floor_100"),
    ("relay", "relay (batch 1000)", "floor_100"),
    ("floor_1", "floor: raw 1 row/txn", "floor_1"),
    ("floor_100", "floor: raw 100 rows/txn", "floor_100"),
    ("floor_2", "floor: raw event+state/txn", "floor_1"),
    ("es_1", "eventsourcing lib, 1/save", "floor_1"),
)

# The eventsourcing reference: defined at module level so that its topics resolve.
try:
    from eventsourcing.application import Application as _ESApplication
    from eventsourcing.domain import Aggregate as _ESAggregate
    from eventsourcing.domain import event as _es_event
except Exception:  # pragma: no cover - reported as "unavailable" by the worker
    _ESApplication = None

if _ESApplication is not None:

    class BenchCustomer(_ESAggregate):
        @_es_event("Created")
        def __init__(self, name: str, credit_limit: str) -> None:
            self.name = name
            self.credit_limit = credit_limit

    class BenchApplication(_ESApplication):
        name = "BenchApplication"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rate(events: int, seconds: float) -> float:
    return events / seconds if seconds > 0 else float("inf")


def measured(events: int, seconds: float, **extra: Any) -> dict[str, Any]:
    return {"events": events, "seconds": round(seconds, 6), "events_per_s": round(rate(events, seconds), 1), **extra}


# =========================================================================================
# Workers (child processes)
# =========================================================================================


def _worker_ours(params: dict[str, Any]) -> dict[str, Any]:
    """Our repository: 1/txn through the service, 100/txn through the repository, then relay."""
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.db import connections, transaction

    from customers import models as customer_models
    from customers.domain import Customer
    from customers.repository import customer_repository
    from customers.services import customer_create
    from eventlog.domain import MessageContext
    from eventlog.models import LogEvent
    from eventlog.relay import outbox_backlog, outbox_relay

    customers_db = connections["customers"]
    eventlog_db = connections["eventlog"]
    customer_tables = [m._meta.db_table for m in (customer_models.CustomerEvent, customer_models.Customer, customer_models.CreditReservation)]

    def wipe() -> None:
        for connection, tables in ((customers_db, customer_tables), (eventlog_db, [LogEvent._meta.db_table])):
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
                else:
                    for table in tables:
                        cursor.execute(f'DELETE FROM "{table}"')
                    cursor.execute(f"DELETE FROM sqlite_sequence WHERE name IN ({', '.join('?' * len(tables))})", tables)

    def save_batch(size: int, prefix: str) -> None:
        with transaction.atomic(using="customers"):
            for j in range(size):
                customer = Customer.create(customer_id=uuid.uuid4(), name=f"{prefix} {j}", credit_limit="100.00")
                customer_repository.save(customer, context=MessageContext())

    info: dict[str, Any] = {"vendor": customers_db.vendor}
    with customers_db.cursor() as cursor:
        if customers_db.vendor == "postgresql":
            cursor.execute("SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit')")
            version, fsync, sync_commit = cursor.fetchone()
            info.update(server_version=version, fsync=fsync, synchronous_commit=sync_commit)
        else:
            cursor.execute("PRAGMA journal_mode")
            journal = cursor.fetchone()[0]
            cursor.execute("PRAGMA synchronous")
            sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(cursor.fetchone()[0], "?")
            info.update(server_version=sqlite3.sqlite_version, journal_mode=journal, synchronous=sync)

    # Warm-up (connections, broker connection, imports), then back to empty tables.
    wipe()
    for i in range(WARMUP):
        customer_create(name=f"warmup {i}", credit_limit="100.00")
    save_batch(10, "warmup batch")
    outbox_relay("customers", batch_size=1000)
    wipe()

    n1, n100 = params["n1"], params["n100"]
    start = time.perf_counter()
    for i in range(n1):
        customer_create(name=f"bench {i}", credit_limit="100.00")
    ours_1 = measured(n1, time.perf_counter() - start)

    batches = n100 // 100
    start = time.perf_counter()
    for b in range(batches):
        save_batch(100, f"batch {b}")
    ours_100 = measured(batches * 100, time.perf_counter() - start)

    pending = outbox_backlog()["customers"]
    start = time.perf_counter()
    relayed = outbox_relay("customers", batch_size=1000)
    relay = measured(relayed, time.perf_counter() - start, pending_before=pending)
    in_log = LogEvent.objects.using("eventlog").count()
    if relayed != pending or in_log != pending or outbox_backlog()["customers"] != 0:
        raise RuntimeError(f"relay check failed: pending {pending}, relayed {relayed}, in log {in_log}")

    # Statements and round trips, counted in this same process after the timed passes (item 5
    # of issue 12): a regression shows as a number, not only as a rate.
    counted = COUNTED_N
    counts = {
        "ours_1": count_calls(lambda: [customer_create(name=f"counted {i}", credit_limit="100.00") for i in range(counted)], counted,
                              ["customers"]),
        "ours_100": count_calls(lambda: save_batch(100, "counted batch"), 100, ["customers"]),
    }
    counts["relay"] = count_calls(lambda: outbox_relay("customers", batch_size=1000), counted + 100, ["customers", "eventlog"])
    result: dict[str, Any] = {"ours_1": ours_1, "ours_100": ours_100, "relay": relay, "info": info, "counts": counts,
                              "wake_ups_requested": WARMUP + 10 + n1 + batches * 100 + counted + 100}

    if params.get("profile_to"):
        # Unmeasured extra passes under cProfile: the 1/txn path, the 100/txn path, the relay.
        import cProfile
        import io
        import pstats

        count = params.get("profile_n", 500)
        out = io.StringIO()
        passes = (
            (f"{count} x customers.services.customer_create (1 event per transaction)",
             lambda: [customer_create(name=f"profile {i}", credit_limit="100.00") for i in range(count)]),
            (f"{count // 100} transactions x 100 customer_repository.save (100 events per transaction)",
             lambda: [save_batch(100, f"profile batch {b}") for b in range(count // 100)]),
            (f"outbox_relay over the {count + count // 100 * 100} events the two passes above appended",
             lambda: outbox_relay("customers", batch_size=1000)),
        )
        for title, work in passes:
            profiler = cProfile.Profile()
            profiler.enable()
            work()
            profiler.disable()
            out.write(f"{'=' * 100}\ncProfile on {info['vendor']}: {title}\n\n")
            stats = pstats.Stats(profiler, stream=out)
            stats.sort_stats("cumulative").print_stats(40)
            stats.sort_stats("tottime").print_stats(25)
        result["wake_ups_requested"] += count + count // 100 * 100
        Path(params["profile_to"]).write_text(out.getvalue())
    return result


COUNTED_N = 100


def count_calls(work: Any, events: int, aliases: list[str]) -> dict[str, Any]:
    """Run ``work`` (``events`` events) once and count, per event, over ``aliases``:

    * ``statements``: the SQL statements Django's ``connection.execute_wrapper`` sees (what goes
      through a cursor; not BEGIN/COMMIT, which a backend sends on its own);
    * ``round_trips``: on PostgreSQL the exchanges with the server (``count_pg_round_trips``);
      on SQLite every statement the engine runs, BEGIN and COMMIT included
      (``sqlite3.Connection.set_trace_callback``): there is no network, this is the number of
      calls into the engine.
    """
    import contextlib

    from django.db import connections

    statements = 0
    round_trips = 0

    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal statements
        statements += 1
        return execute(sql, params, many, context)

    def trace(_sql: str) -> None:
        nonlocal round_trips
        round_trips += 1

    undo = []
    with contextlib.ExitStack() as stack:
        for alias in aliases:
            connection = connections[alias]
            connection.ensure_connection()
            stack.enter_context(connection.execute_wrapper(watch))
            raw = connection.connection
            if connection.vendor == "postgresql":
                def counted(n: int) -> None:
                    nonlocal round_trips
                    round_trips += n

                undo.append(count_pg_round_trips(raw, counted))
            else:
                raw.set_trace_callback(trace)
                undo.append(lambda raw=raw: raw.set_trace_callback(None))
        try:
            work()
        finally:
            for step in undo:
                step()
    return {"events": events, "statements": statements, "round_trips": round_trips,
            "statements_per_event": round(statements / events, 3), "round_trips_per_event": round(round_trips / events, 3)}


def _floor_rows(count: int, *, vendor: str) -> list[tuple[Any, ...]]:
    """Rows shaped like a CustomerCreated event as Django would store it."""
    now = dt.datetime.now(dt.UTC)
    rows = []
    for i in range(count):
        stream_id = uuid.uuid4()
        data = {"name": f"floor {i}", "credit_limit": "100.00"}
        if vendor == "sqlite":
            rows.append((uuid.uuid4().hex, stream_id.hex, "Customer", 1, "CustomerCreated", json.dumps(data),
                         now.replace(tzinfo=None).isoformat(" "), uuid.uuid4().hex, None, None, None))
        else:
            from psycopg.types.json import Jsonb

            rows.append((uuid.uuid4(), stream_id, "Customer", 1, "CustomerCreated", Jsonb(data), now, uuid.uuid4(), None, None, None))
    return rows


FLOOR_COLUMNS = "event_id, stream_id, stream_type, version, type, data, occurred_at, correlation_id, causation_id, saga_id, relayed_at"
#: The second floor writes what ours writes per customer: the event and a row shaped like
#: ``customers_customer`` (its DDL copied the same way), in one transaction.
FLOOR_STATE_TABLE = "bench_floor_state"
FLOOR_STATE_COLUMNS = "id, name, credit_limit, credit_reserved, version, created_at, updated_at"


def _floor_state_row(event: tuple[Any, ...], *, vendor: str) -> tuple[Any, ...]:
    at = event[6]
    if vendor == "sqlite":
        return (event[1], "floor", "100.00", "0", 1, at, at)
    import decimal

    return (event[1], "floor", decimal.Decimal("100.00"), decimal.Decimal("0"), 1, at, at)


def _worker_floor_sqlite(params: dict[str, Any]) -> dict[str, Any]:
    path = params["path"]
    connection = sqlite3.connect(path, isolation_level=None)  # autocommit; transactions are explicit
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=NORMAL")
    for statement in params["ddl"]:
        connection.execute(statement)
    insert = f'INSERT INTO "{FLOOR_TABLE}" ({FLOOR_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)'
    insert_state = f'INSERT INTO "{FLOOR_STATE_TABLE}" ({FLOOR_STATE_COLUMNS}) VALUES (?,?,?,?,?,?,?)'

    def with_state_per_txn(count: int) -> None:
        for _ in range(count):
            row = _floor_rows(1, vendor="sqlite")[0]
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(insert, row)
            connection.execute(insert_state, _floor_state_row(row, vendor="sqlite"))
            connection.execute("COMMIT")

    def one_per_txn(count: int) -> None:
        for _ in range(count):
            row = _floor_rows(1, vendor="sqlite")[0]
            connection.execute("BEGIN IMMEDIATE")
            connection.execute(insert, row)
            connection.execute("COMMIT")

    def hundred_per_txn(count: int) -> None:
        for _ in range(count // 100):
            rows = _floor_rows(100, vendor="sqlite")
            connection.execute("BEGIN IMMEDIATE")
            connection.executemany(insert, rows)
            connection.execute("COMMIT")

    one_per_txn(WARMUP)
    hundred_per_txn(100)
    connection.execute(f'DELETE FROM "{FLOOR_TABLE}"')
    connection.execute("DELETE FROM sqlite_sequence")

    start = time.perf_counter()
    one_per_txn(params["n1"])
    floor_1 = measured(params["n1"], time.perf_counter() - start)
    start = time.perf_counter()
    hundred_per_txn(params["n100"])
    floor_100 = measured(params["n100"] // 100 * 100, time.perf_counter() - start)
    count = connection.execute(f'SELECT count(*) FROM "{FLOOR_TABLE}"').fetchone()[0]
    connection.execute(f'DELETE FROM "{FLOOR_TABLE}"')
    with_state_per_txn(WARMUP)
    connection.execute(f'DELETE FROM "{FLOOR_TABLE}"')
    connection.execute(f'DELETE FROM "{FLOOR_STATE_TABLE}"')
    start = time.perf_counter()
    with_state_per_txn(params["n1"])
    floor_2 = measured(params["n1"], time.perf_counter() - start)
    traced: list[str] = []
    connection.set_trace_callback(traced.append)  # every statement the engine runs
    one_per_txn(COUNTED_N)
    connection.set_trace_callback(None)
    calls = len(traced)
    connection.close()
    if count != floor_1["events"] + floor_100["events"]:
        raise RuntimeError(f"floor check failed: {count} rows")
    counts = {"floor_1": {"events": COUNTED_N, "statements": None, "round_trips": calls, "statements_per_event": None,
                          "round_trips_per_event": round(calls / COUNTED_N, 3)}}
    return {"floor_1": floor_1, "floor_100": floor_100, "floor_2": floor_2, "counts": counts}


def _worker_floor_pg(params: dict[str, Any]) -> dict[str, Any]:
    import psycopg

    conninfo = params["conninfo"]
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
        admin.execute(f"DROP TABLE IF EXISTS {FLOOR_STATE_TABLE}")
        # Same columns, defaults, identity, checks, unique (stream_id, version) and partial index.
        admin.execute(f"CREATE TABLE {FLOOR_TABLE} (LIKE {params['like']} INCLUDING ALL)")
        admin.execute(f"CREATE TABLE {FLOOR_STATE_TABLE} (LIKE customers_customer INCLUDING ALL)")
    insert = f"INSERT INTO {FLOOR_TABLE} ({FLOOR_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
    insert_state = f"INSERT INTO {FLOOR_STATE_TABLE} ({FLOOR_STATE_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s)"
    connection = psycopg.connect(conninfo)

    def with_state_per_txn(count: int) -> None:
        for _ in range(count):
            row = _floor_rows(1, vendor="postgresql")[0]
            connection.execute(insert, row)
            connection.execute(insert_state, _floor_state_row(row, vendor="postgresql"))
            connection.commit()

    def one_per_txn(count: int) -> None:
        for _ in range(count):
            row = _floor_rows(1, vendor="postgresql")[0]
            connection.execute(insert, row)
            connection.commit()

    def hundred_per_txn(count: int) -> None:
        for _ in range(count // 100):
            rows = _floor_rows(100, vendor="postgresql")
            with connection.cursor() as cursor:
                cursor.executemany(insert, rows)  # psycopg 3 pipelines this: one round trip
            connection.commit()

    one_per_txn(WARMUP)
    hundred_per_txn(100)
    connection.execute(f"TRUNCATE {FLOOR_TABLE} RESTART IDENTITY")
    connection.commit()

    start = time.perf_counter()
    one_per_txn(params["n1"])
    floor_1 = measured(params["n1"], time.perf_counter() - start)
    start = time.perf_counter()
    hundred_per_txn(params["n100"])
    floor_100 = measured(params["n100"] // 100 * 100, time.perf_counter() - start)
    count = connection.execute(f"SELECT count(*) FROM {FLOOR_TABLE}").fetchone()[0]
    with_state_per_txn(WARMUP)
    connection.execute(f"TRUNCATE {FLOOR_TABLE}, {FLOOR_STATE_TABLE} RESTART IDENTITY")
    connection.commit()
    start = time.perf_counter()
    with_state_per_txn(params["n1"])
    floor_2 = measured(params["n1"], time.perf_counter() - start)
    waits = 0

    def counted(n: int) -> None:
        nonlocal waits
        waits += n

    undo = count_pg_round_trips(connection, counted)
    one_per_txn(COUNTED_N)
    undo()
    connection.close()
    if count != floor_1["events"] + floor_100["events"]:
        raise RuntimeError(f"floor check failed: {count} rows")
    counts = {"floor_1": {"events": COUNTED_N, "statements": COUNTED_N, "round_trips": waits, "statements_per_event": 1.0,
                          "round_trips_per_event": round(waits / COUNTED_N, 3)}}
    return {"floor_1": floor_1, "floor_100": floor_100, "floor_2": floor_2, "counts": counts}


def _worker_es(params: dict[str, Any]) -> dict[str, Any]:
    import warnings

    if _ESApplication is None:
        raise RuntimeError("the eventsourcing package cannot be imported")
    import eventsourcing

    if params["kind"] == "sqlite":
        import eventsourcing.sqlite as es_sqlite

        # The library sets WAL itself but has no setting for synchronous; match our settings.
        original = es_sqlite.SQLiteConnectionPool._create_connection

        def _create_connection(self: Any) -> Any:
            connection = original(self)
            connection._sqlite_conn.execute("PRAGMA synchronous=NORMAL")
            return connection

        es_sqlite.SQLiteConnectionPool._create_connection = _create_connection
        env = {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": params["path"]}
    else:
        import eventsourcing.postgres  # noqa: F401  (needs psycopg_pool)
        import psycopg

        with psycopg.connect(params["conninfo"], autocommit=True) as admin:
            tables = [r[0] for r in admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
            for table in tables:
                admin.execute(f'DROP TABLE IF EXISTS "{table}" CASCADE')
        env = {"PERSISTENCE_MODULE": "eventsourcing.postgres", **params["pg_env"]}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = BenchApplication(env=env)
        if params["kind"] == "sqlite":
            with app.factory.datastore.transaction(commit=False) as cursor:
                cursor.execute("PRAGMA synchronous")
                sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(cursor.fetchone()[0], "?")
        for i in range(WARMUP):
            app.save(BenchCustomer(f"warmup {i}", "100.00"))
        # The library names its table after the application on PostgreSQL ("benchapplication_events")
        # and "stored_events" on SQLite: ask the recorder.
        events_table = app.recorder.events_table_name  # type: ignore[attr-defined]
        with app.factory.datastore.transaction(commit=True) as cursor:
            cursor.execute(f"DELETE FROM {events_table}")
        n1 = params["n1"]
        start = time.perf_counter()
        for i in range(n1):
            app.save(BenchCustomer(f"es {i}", "100.00"))
        es_1 = measured(n1, time.perf_counter() - start)
        with app.factory.datastore.transaction(commit=False) as cursor:
            cursor.execute(f"SELECT count(*) FROM {events_table}")
            row = cursor.fetchone()
            count = row[0] if not isinstance(row, dict) else next(iter(row.values()))
        app.close()
    if count != n1:
        raise RuntimeError(f"eventsourcing check failed: {count} rows")
    info = {"eventsourcing_version": __import__("importlib.metadata").metadata.version("eventsourcing"), "eventsourcing_persistence": env["PERSISTENCE_MODULE"]}
    if params["kind"] == "sqlite":
        info["eventsourcing_sqlite_synchronous"] = sync
    return {"es_1": es_1, "info": info}


WORKERS = {
    "ours": _worker_ours,
    "floor-sqlite": _worker_floor_sqlite,
    "floor-pg": _worker_floor_pg,
    "es": _worker_es,
}


def worker_main(kind: str, params_json: str, out: str) -> int:
    params = json.loads(params_json)
    try:
        result = WORKERS[kind](params)
    except BaseException as exc:  # reported to the parent, which records it and goes on
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    Path(out).write_text(json.dumps(result, default=str))
    return 0


# =========================================================================================
# Orchestration (parent process)
# =========================================================================================


class Runner:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.counter = 0

    def worker(self, kind: str, params: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
        self.counter += 1
        out = self.tmp / f"worker-{self.counter}.json"
        argv = [sys.executable, str(Path(__file__).resolve()), "--_worker", kind, "--_params", json.dumps(params), "--_out", str(out)]
        try:
            subprocess.run(argv, cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, timeout=WORKER_TIMEOUT, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {WORKER_TIMEOUT}s"}
        if not out.exists():
            return {"error": "the worker died without a result (see stderr above)"}
        return json.loads(out.read_text())


def manage(args: list[str], env: dict[str, str]) -> None:
    completed = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}")


def purge_broker(url: str) -> int | str:
    """Drop the relay notifications that piled up (no worker consumes them during the bench)."""
    try:
        from kombu import Connection

        total = 0
        with Connection(url, connect_timeout=5) as connection:
            channel = connection.default_channel
            for queue in CELERY_QUEUES:
                total += channel.queue_purge(queue) or 0
        return total
    except Exception as exc:
        return f"purge failed: {type(exc).__name__}: {exc}"


def base_env() -> dict[str, str]:
    """The caller's environment without any database URL (SQLite unless we add them back)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL") and not k.startswith("POSTGRES_")}
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("LOG_LEVEL", "WARNING")
    env["DJANGO_DEBUG"] = "false"  # DEBUG would keep every query in memory
    return env


def new_db_result() -> dict[str, Any]:
    return {"status": "ok", "figures": {key: {"label": label, "repeats": [], "median": None} for key, label, _ in FIGURES},
            "errors": [], "notes": [], "info": {}, "broker_purged": []}


def record(db: dict[str, Any], result: dict[str, Any], what: str, repeat: int) -> None:
    if "error" in result:
        db["errors"].append(f"repeat {repeat + 1}, {what}: {result['error']}")
        log(f"  {what} FAILED: {result['error']}")
        if result.get("traceback"):
            print(result["traceback"], file=sys.stderr)
        return
    db["info"].update(result.get("info", {}))
    parts = []
    for key, _, _ in FIGURES:
        if key in result:
            db["figures"][key]["repeats"].append(result[key])
            parts.append(f"{key} {result[key]['events_per_s']:,.0f}/s")
    log(f"  {what}: " + ", ".join(parts))
    for key, count in result.get("counts", {}).items():
        db.setdefault("counts", {}).setdefault(key, []).append(count)
    if "wake_ups_requested" in result:
        db.setdefault("wake_ups_requested", []).append(result["wake_ups_requested"])


def finish(db: dict[str, Any]) -> None:
    for figure in db["figures"].values():
        values = [r["events_per_s"] for r in figure["repeats"]]
        figure["median"] = round(statistics.median(values), 1) if values else None


def run_sqlite(args: argparse.Namespace, runner: Runner, sizes: dict[str, int]) -> dict[str, Any]:
    db = new_db_result()
    root = runner.tmp / "sqlite"
    root.mkdir()
    env = base_env()
    stack = None
    try:
        broker_url = os.environ.get("CELERY_BROKER_URL")
        if broker_url:
            db["notes"].append(f"broker: CELERY_BROKER_URL from the environment ({broker_url.split('@')[-1]})")
        else:
            sys.path.insert(0, str(BASE_DIR))
            from config.launcher import Stack

            stack = Stack(run_dir=root / "run", echo=False)
            broker_url = stack.start_embedded_broker()
            stack.wait_ready(["broker"], timeout=30)
            db["notes"].append("broker: the embedded redis-server on a unix socket (config.launcher.Stack)")
            log(f"sqlite: embedded broker ready at {broker_url}")
        env["CELERY_BROKER_URL"] = broker_url

        template = root / "template"
        log("sqlite: manage.py migrate_all into a template VAR_DIR (each repeat starts from a copy)")
        manage(["migrate_all"], {**env, "VAR_DIR": str(template)})
        with sqlite3.connect(template / "db" / "customers.sqlite3") as source:
            ddl = [sql.replace('"customers_customerevent"', f'"{FLOOR_TABLE}"') for (sql,) in source.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'customers_customerevent' AND sql IS NOT NULL ORDER BY type DESC")]
            ddl += [sql.replace('"customers_customer"', f'"{FLOOR_STATE_TABLE}"') for (sql,) in source.execute(
                "SELECT sql FROM sqlite_master WHERE tbl_name = 'customers_customer' AND sql IS NOT NULL ORDER BY type DESC")]
        db["info"]["floor_ddl"] = ddl

        for repeat in range(args.repeats):
            log(f"sqlite: repeat {repeat + 1}/{args.repeats}")
            var_dir = root / f"repeat-{repeat}"
            shutil.copytree(template / "db", var_dir / "db")
            params: dict[str, Any] = dict(sizes)
            if args.profile and repeat == 0:
                params["profile_to"] = str(RESULTS_DIR / "profile-ours-sqlite.txt")
            record(db, runner.worker("ours", params, {**env, "VAR_DIR": str(var_dir)}), "ours", repeat)
            db["broker_purged"].append(purge_broker(broker_url))
            record(db, runner.worker("floor-sqlite", {**sizes, "path": str(var_dir / "floor.sqlite3"), "ddl": ddl}, env), "floor", repeat)
            record(db, runner.worker("es", {**sizes, "kind": "sqlite", "path": str(var_dir / "es.sqlite3")}, env), "eventsourcing", repeat)
            shutil.rmtree(var_dir, ignore_errors=True)
    except Exception as exc:
        db["errors"].append(f"{type(exc).__name__}: {exc}")
        log(f"sqlite: FAILED: {exc}")
    finally:
        if stack is not None:
            stack.stop()
            log("sqlite: embedded broker stopped")
    finish(db)
    return db


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            for token in shlex.split(line[len("export "):]):
                key, _, value = token.partition("=")
                values[key] = value
    return values


def run_postgres(args: argparse.Namespace, runner: Runner, sizes: dict[str, int]) -> dict[str, Any]:
    db = new_db_result()
    log(f"postgresql: bash scripts/services.sh start {PG_SERVICES_DIR}")
    try:
        started = subprocess.run(["bash", str(SERVICES_SCRIPT), "start", str(PG_SERVICES_DIR)], cwd=BASE_DIR,
                                 capture_output=True, text=True, timeout=600, check=False)
    except Exception as exc:
        started = None
        error = f"{type(exc).__name__}: {exc}"
    else:
        error = None if started.returncode == 0 else f"services.sh start exited {started.returncode}: {started.stderr.strip()[-1500:]}"
    if error is not None or started is None:
        log(f"postgresql: UNAVAILABLE: {error}")
        return {"status": "unavailable", "error": error, "figures": {}, "errors": [error], "notes": [], "info": {}}
    try:
        services = read_env_file(Path(started.stdout.strip().splitlines()[-1]))
        env = {**base_env(), **services}
        db["notes"].append(f"broker: the services' redis-server on TCP ({services['CELERY_BROKER_URL']})")
        log("postgresql: manage.py migrate_all")
        manage(["migrate_all"], env)
        url = urllib.parse.urlsplit(services["CUSTOMERS_DATABASE_URL"])
        pg_env = {"POSTGRES_DBNAME": ES_PG_DATABASE, "POSTGRES_HOST": url.hostname or "127.0.0.1", "POSTGRES_PORT": str(url.port or 5432),
                  "POSTGRES_USER": urllib.parse.unquote(url.username or ""), "POSTGRES_PASSWORD": urllib.parse.unquote(url.password or "")}
        es_conninfo = urllib.parse.urlunsplit(url._replace(path=f"/{ES_PG_DATABASE}"))
        es_available = _pg_es_available()
        if es_available is True:
            _pg_create_database(services["CUSTOMERS_DATABASE_URL"], ES_PG_DATABASE)
        else:
            db["notes"].append(f"eventsourcing on PostgreSQL not measured: {es_available}")
            log(f"postgresql: eventsourcing's PostgreSQL module is unavailable: {es_available}")

        for repeat in range(args.repeats):
            log(f"postgresql: repeat {repeat + 1}/{args.repeats}")
            params: dict[str, Any] = dict(sizes)
            if args.profile and repeat == 0:
                params["profile_to"] = str(RESULTS_DIR / "profile-ours-postgresql.txt")
            record(db, runner.worker("ours", params, env), "ours", repeat)
            db["broker_purged"].append(purge_broker(services["CELERY_BROKER_URL"]))
            floor_params = {**sizes, "conninfo": services["CUSTOMERS_DATABASE_URL"], "like": "customers_customerevent"}
            record(db, runner.worker("floor-pg", floor_params, env), "floor", repeat)
            if es_available is True:
                es_params = {**sizes, "kind": "postgresql", "conninfo": es_conninfo, "pg_env": pg_env}
                record(db, runner.worker("es", es_params, env), "eventsourcing", repeat)
        try:
            import psycopg

            with psycopg.connect(services["CUSTOMERS_DATABASE_URL"], autocommit=True) as admin:
                admin.execute(f"DROP TABLE IF EXISTS {FLOOR_TABLE}")
                admin.execute(f"DROP TABLE IF EXISTS {FLOOR_STATE_TABLE}")
        except Exception as exc:
            db["notes"].append(f"could not drop {FLOOR_TABLE}: {exc}")
    except Exception as exc:
        db["errors"].append(f"{type(exc).__name__}: {exc}")
        log(f"postgresql: FAILED: {exc}")
    finally:
        stopped = subprocess.run(["bash", str(SERVICES_SCRIPT), "stop", str(PG_SERVICES_DIR)], cwd=BASE_DIR,
                                 capture_output=True, text=True, timeout=300, check=False)
        log(f"postgresql: services stopped (exit {stopped.returncode})")
    finish(db)
    return db


def _pg_es_available() -> bool | str:
    try:
        import eventsourcing.postgres  # noqa: F401
    except Exception as exc:
        return f"import eventsourcing.postgres failed ({type(exc).__name__}: {exc}); requirements.txt pins the psycopg-pool it needs"
    return True


def _pg_create_database(conninfo: str, name: str) -> None:
    import psycopg

    with psycopg.connect(conninfo, autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            admin.execute(f'CREATE DATABASE "{name}"')


# --- report ---------------------------------------------------------------------------------


def goals_for(db: dict[str, Any]) -> dict[str, list[tuple[str, bool | None]]]:
    """Goal text and outcome per figure key (None: cannot be judged)."""
    m = {key: fig["median"] for key, fig in db["figures"].items()}
    goals: dict[str, list[tuple[str, bool | None]]] = {key: [] for key in m}

    def judge(value: float | None, threshold: float | None) -> bool | None:
        return None if value is None or threshold is None else value >= threshold

    es, floor_1 = m.get("es_1"), m.get("floor_1")
    goals["ours_1"].append((f">= eventsourcing lib 1/save ({_fmt(es)}{'/s' if es is not None else ''})", judge(m.get("ours_1"), es)))
    half = floor_1 * FLOOR_SHARE_GOAL if floor_1 is not None else None
    goals["ours_1"].append((f">= {FLOOR_SHARE_GOAL} x raw 1/txn ({_fmt(half)}/s)", judge(m.get("ours_1"), half)))
    goals["relay"].append((f">= {RELAY_GOAL:,.0f}/s", judge(m.get("relay"), RELAY_GOAL)))
    return goals


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def render(name: str, db: dict[str, Any], repeats: int) -> str:
    lines = []
    info = db.get("info", {})
    if db.get("status") != "ok" and not db.get("figures"):
        return f"{name}: UNAVAILABLE - {db.get('error')}\n"
    if name == "SQLite":
        detail = f"SQLite {info.get('server_version', '?')}, journal_mode={info.get('journal_mode', '?')}, synchronous={info.get('synchronous', '?')}"
    else:
        detail = f"PostgreSQL {info.get('server_version', '?')}, fsync={info.get('fsync', '?')}, synchronous_commit={info.get('synchronous_commit', '?')}"
    lines.append(f"{name}  ({detail}; median of {repeats} repeat{'s' if repeats != 1 else ''})")
    header = f"  {'figure':<28} {'events/s':>10} {'x floor':>8}  {'goal':<40} {'result':<6}"
    lines.append(header)
    lines.append("  " + "-" * (len(header) - 2))
    goals = goals_for(db)
    for key, label, floor_key in FIGURES:
        median = db["figures"][key]["median"]
        floor = db["figures"][floor_key]["median"]
        ratio = f"{median / floor:.2f}" if median is not None and floor else "n/a"
        row_goals = goals.get(key) or [("", None)]
        for index, (text, outcome) in enumerate(row_goals):
            result = "" if not text else ("PASS" if outcome else "MISS" if outcome is False else "n/a")
            if index == 0:
                lines.append(f"  {label:<28} {_fmt(median):>10} {ratio:>8}  {text:<40} {result:<6}".rstrip())
            else:
                lines.append(f"  {'':<28} {'':>10} {'':>8}  {text:<40} {result:<6}".rstrip())
    counts = db.get("counts", {})
    if counts:
        unit = "round trips" if name == "PostgreSQL" else "engine calls (BEGIN/COMMIT included)"
        lines.append(f"  per event, counted once per repeat after the timed passes (statements via execute_wrapper / {unit}):")
        for key, label, _ in FIGURES:
            if counts.get(key):
                last = counts[key][-1]
                stmt = "n/a" if last["statements_per_event"] is None else f"{last['statements_per_event']:g}"
                lines.append(f"    {label:<28} statements {stmt:>6}   {unit.split(' (')[0]} {last['round_trips_per_event']:g}")
    m = {key: fig["median"] for key, fig in db["figures"].items()}
    if m.get("ours_1") and m.get("floor_2"):
        lines.append(f"  ours 1/txn against the raw driver writing the same two rows per transaction: {m['ours_1'] / m['floor_2']:.2f}x")
    lines.append("  x floor: ours 1/txn, the library and raw event+state against raw 1/txn; ours 100/txn and the relay against")
    lines.append("  raw 100/txn.")
    lines.append("  ours 1/txn = customers.services.customer_create: the event and the state row in one transaction (one")
    lines.append("  statement on PostgreSQL), then the relay wake-up handed to the notifier thread (coalesced: a broker send")
    lines.append("  per window, not per call).")
    lines.append("  ours 100/txn = 100 new Customer aggregates saved in one transaction (100 streams x 1 event); every save")
    lines.append("  registers its own on_commit wake-up (coalesced the same way).")
    for note in db.get("notes", []):
        lines.append(f"  note: {note}")
    for error in db.get("errors", []):
        lines.append(f"  ERROR: {error}")
    return "\n".join(lines) + "\n"


def machine_info() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    versions = {}
    for package in ("django", "celery", "kombu", "psycopg", "eventsourcing", "redis"):
        try:
            from importlib.metadata import version

            versions[package] = version(package)
        except Exception:
            versions[package] = None
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "memory": memory,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "packages": versions}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small N (200 and 2,000 events) and 1 repeat unless -n is given")
    parser.add_argument("-n", "--repeats", type=int, default=None, help="repeats per figure (default 3; 1 with --quick)")
    parser.add_argument("--n1", type=int, default=None, help="events for the 1/txn figures (default 2000)")
    parser.add_argument("--n100", type=int, default=None, help="events for the 100/txn figures (default 20000)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"), help="measure one database kind only")
    parser.add_argument("--profile", action="store_true", help="also cProfile our 1/txn, 100/txn and relay paths (unmeasured extra pass in repeat 1) into bench/results/profile-ours-*.txt")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "append.json")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_params", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        return worker_main(args._worker, args._params, args._out)

    args.repeats = args.repeats or (1 if args.quick else 3)
    n1 = args.n1 or (200 if args.quick else 2000)
    n100 = args.n100 or (2000 if args.quick else 20000)
    sizes = {"n1": n1, "n100": max(100, n100 // 100 * 100)}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    log(f"append bench: repeats={args.repeats} n1={sizes['n1']} n100={sizes['n100']}")
    results: dict[str, Any] = {
        "benchmark": "append", "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(), "config": {"repeats": args.repeats, "quick": args.quick, **sizes, "warmup": WARMUP,
                                              "relay_batch_size": 1000, "ours_100_shape": "100 new Customer aggregates per transaction"},
        "goals": ["ours 1/txn >= eventsourcing lib 1/save", "ours 1/txn >= 0.5 x floor raw 1/txn", "relay >= 10,000 events/s"],
        "databases": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-append-") as tmp:
        runner = Runner(Path(tmp))
        if args.only in (None, "sqlite"):
            results["databases"]["sqlite"] = run_sqlite(args, runner, sizes)
        if args.only in (None, "postgresql"):
            results["databases"]["postgresql"] = run_postgres(args, runner, sizes)
    results["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    for db in results["databases"].values():
        if db.get("figures"):
            db["goals"] = [{"figure": key, "goal": text, "pass": outcome} for key, items in goals_for(db).items() for text, outcome in items]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    for key, name in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        if key in results["databases"]:
            print(render(name, results["databases"][key], args.repeats))
    log(f"done in {results['elapsed_seconds']:.0f}s; results in {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
