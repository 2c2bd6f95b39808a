"""Create-order sagas end to end (HTTP -> gunicorn -> Celery -> PostgreSQL), orchestrated,
choreographed and two-phase-committed side by side on the same workload, next to the bare Celery
floor, on PostgreSQL + Redis.

Run from the repository root::

    .venv/bin/python bench/sagas.py               # all three modes, N=500 each (+ 500 floor chains), about 6 minutes
    .venv/bin/python bench/sagas.py --quick       # N=100, unsaturated 15
    .venv/bin/python bench/sagas.py --modes 2pc   # one mode only (still with the floor)
    .venv/bin/python bench/sagas.py --pool prefork --concurrency 2     # another worker pool
    .venv/bin/python bench/sagas.py --wake-coalesce 0.05       # diagnostic: another WAKE_COALESCE_SECONDS for every process
    .venv/bin/python bench/sagas.py --wake-by-type             # diagnostic: the relay wakes only subscribers wanting a relayed type
    .venv/bin/python bench/sagas.py --profile     # also a cProfiled pass (bench/results/profile-sagas.txt; --profile-mode)
    .venv/bin/python bench/sagas.py --profile --profile-mode 2pc   # the pass profiles gunicorn (profile-sagas-2pc.txt)

Set-up: a private PostgreSQL 15 + Redis (``scripts/services.sh start /tmp/bench-services-sagas``,
wiped first so the databases are fresh, stopped at the end), ``manage.py migrate_all``, a
superuser and its DRF token (``createsuperuser --noinput``, ``drf_create_token``). Then, through
``config.launcher.Stack``: two Celery workers (``--workers``), each consuming all five queues
(``-Q orders,customers,sagas,eventlog,readmodels``), beat, and gunicorn with 2 workers. Every one
of them runs with ``DJANGO_SETTINGS_MODULE=bench.saga_settings``: the project's settings plus the
floor's no-op tasks (bench/noop_tasks.py), so the saga runs and the floor run use the very same
processes and differ only in the work. ``BENCH_TASK_LOG=1`` makes the workers record every
``eventlog.*`` task run (relay or subscriber, its argument, the events it consumed, its time) in
Redis (bench/noop_tasks.py), one RPUSH per such run. The server preloads ``pg_stat_statements``
(scripts/services.sh); the bench reads it, and ``pg_stat_database``, as the superuser from the
``postgres`` database, which is none of the six.

Phases (after a warm-up of 20 orders per mode and 20 chains), each mode with a customer of its
own per phase, whose credit limit approves every order of ``{"total": "10.00"}``:

1. unsaturated: ``--unsat`` orders (30) per mode, POSTed one at a time, then as many floor
   chains. Each waits until the previous one is final and the system is idle: nothing queued or
   unacknowledged in the broker and no wake-up window open (``wake-window:*`` flags in the cache)
   for one ``WAKE_COALESCE_SECONDS`` window and 50 ms, so every unsaturated order starts from a
   system at rest, in both modes alike.
2. saturated: N orders per mode POSTed by ``--threads`` (8) client threads as fast as they go,
   one mode after the other; then N chains published by as many threads. Before the first, the
   system idles ``--pg-settle`` (11) seconds, twice, for PostgreSQL's counters: the second
   window measures the idle background (beat's sweeps); after each run it idles that long
   again before the counters are read (PostgreSQL 15 may hold a backend's counters 10 s).

What each latency measures (all timestamps from the same machine's clock; polling adds nothing):

- **orchestration**: ``POST /api/orders/`` (mode ``orchestration``: the view writes the saga and
  sends the first command after commit), then 6 Celery hops: ``orders.order_create``, the reply,
  ``customers.credit_reserve``, the reply, ``orders.order_approve``, the reply, which sets the
  saga's ``ended_at``. Latency = ``SagaInstance.ended_at`` minus the client's clock just before
  the POST. Throughput = N / (last ``ended_at`` - first POST).
- **choreography**: ``POST /api/orders/`` (mode ``choreography``: the view records the PENDING
  order and ``OrderCreated`` in the orders database; the flow id is the events' ``saga_id``), then
  4 wake-up hops to the business outcome: ``eventlog.relay(orders)`` copies ``OrderCreated`` into
  the log and wakes every subscriber; ``eventlog.subscriber_advance(customers.choreography)``
  reserves the credit (``CreditReserved``); ``eventlog.relay(customers)``;
  ``eventlog.subscriber_advance(orders.choreography)`` approves the order. Latency = the APPROVED
  order's ``orders_order.updated_at`` (orders database) minus the client's clock before the POST.
  Throughput = N / (last approval - first POST). The trace (``sagas.choreography_trace``) needs 2
  more hops (relay(orders) of ``OrderApproved``, the trace subscriber) to set its record's
  ``ended_at``: reported separately as **trace lag** (trace ``ended_at`` - approval) and as
  flows/s by trace ``ended_at``. Every hop of a choreography is a *coalesced wake-up*
  (eventlog/messaging.py): the first in a window is sent at once, a later one in the same window
  waits for the window's trailing edge.
- **2pc**: ``POST /api/orders/`` with mode ``2pc`` runs the whole protocol in the gunicorn worker
  (sagas/coordinator.py: the record, both branches' work in prepared transactions, PREPARE,
  the decision, COMMIT PREPARED, the end) and answers 201 with the final state; no Celery hop on
  the way (the relay and the projections run afterwards). Latency = the client's POST round
  trip; also the record's ``ended_at - created_at``. Throughput = N / (last ``ended_at`` - first
  POST). Per phase of the coordinator log (``sagas_coordinatorlogentry``: begin, work customers,
  work orders, prepare orders, prepare customers, decision, commit orders, commit customers, end):
  the median of ``at - started_at``, and of the gap before it (from the previous phase's ``at``),
  where the record's and the decision's commits fall (a phase's row is stamped before its
  transaction commits).
- **floor**: a chain of 6 no-op hops over the orchestration's queue sequence (orders, sagas,
  customers, sagas, orders, sagas); latency = the last hop's start minus the client's publish,
  throughput N / (last hop - first publish).

Ratios: each mode / the floor, choreography / orchestration, 2pc / orchestration and 2pc /
choreography (sagas/s, p50, p99, CPU and commits per order).

What each costs per order, in every mode, over each saturated run: commits
(``pg_stat_database.xact_commit`` deltas for each of the six databases and their sum; an
autocommit statement is a commit, a PREPARE TRANSACTION counts none, its COMMIT PREPARED two),
new sessions (``sessions``: connections opened), statements (``pg_stat_statements`` calls, by
kind: BEGIN, COMMIT, SAVEPOINT, PREPARE TRANSACTION, ...), all less the bench client's own
statements (counted) and the idle background rate times the window; and Celery task runs: the
saga's commands and replies (or the floor's hops) from the "succeeded in" lines, relay and
subscriber runs from the BENCH_TASK_LOG records, beat's sweeps counted apart.

Afterwards: every saga and every flow's trace must be COMPLETED and every order APPROVED;
``manage.py verify`` runs against the bench databases. The breakdown comes from the databases'
own timestamps (orchestration: saga created/ended, each step's started/ended, each
participant's ``processed_at``; choreography: each event's ``occurred_at`` and the log's
``recorded_at``, the order's ``updated_at``, the trace's ``ended_at``), from the workers'
"succeeded in" log lines (execution time per task name), from the kernel-task records (runs per
relay source and per subscriber, events per run, empty runs) and from /proc (CPU time per
component during each run).

Goals: >= 50 sagas/s and unsaturated p50 < 100 ms (each mode); choreography at least as fast as
orchestration in sagas/s and unsaturated p50; 2pc unsaturated p50 < 30 ms. Results: ``bench/results/sagas.json`` and a table
on stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from _common import BASE_DIR, RESULTS_DIR  # noqa: E402

sys.path.insert(0, str(BASE_DIR))
from config.launcher import QUEUES, Stack  # noqa: E402

SERVICES_DIR = common.services_dir("-sagas")
SETTINGS = "bench.saga_settings"
USERNAME = "bench-sagas"
TERMINAL = ("COMPLETED", "COMPENSATED", "FAILED")
HOP_QUEUES = ["orders", "sagas", "customers", "sagas", "orders", "sagas"]  # the create-order saga's hops
STEPS = ("create_order", "reserve_credit", "approve_order")
PARTICIPANT_TABLES = {"orders": "orders_ordersprocessedcommand", "customers": "customers_customersprocessedcommand"}
THROUGHPUT_GOAL = 50.0
UNSAT_P50_GOAL_MS = 100.0
ORDER_TOTAL = "10.00"
CREDIT_LIMIT = "100000000.00"
NOOP_DONE_KEY = "bench:noop:done"
TASKS_KEY = "bench:tasks"
MODES = ("orchestration", "choreography", "2pc")
SHORT = {"orchestration": "orch", "choreography": "chor", "2pc": "2pc"}
UNSAT_P50_GOAL_2PC_MS = 30.0
#: The coordinator log's phases of a placed order, in protocol order (sagas/coordinator.py).
TWO_PC_PHASES = ("begin", "work customers", "work orders", "prepare orders", "prepare customers", "decision", "commit orders", "commit customers", "end")
#: The six databases of the bench, by alias (scripts/services.sh).
DB_ALIASES = ("default", "orders", "customers", "sagas", "eventlog", "readmodels")
PERIODIC_TASKS = ("eventlog.sweep", "sagas.sweep")
#: Seconds to wait, with the system idle, before reading pg_stat_database: PostgreSQL 15's
#: backends flush their pending counters when idle, at most every second, or after an idle
#: wait of PGSTAT_IDLE_INTERVAL (10 s).
PG_SETTLE_SECONDS = 11.0
DEFAULT_WAKE_COALESCE_SECONDS = 0.25  # config/settings.py WAKE_COALESCE_SECONDS
ORDER_TERMINAL = ("APPROVED", "REJECTED", "CANCELLED")
SUCCEEDED = re.compile(r"Task (\S+)\[[0-9a-f-]+\] succeeded in ([0-9.e-]+)s")
SWEEP_RESULT = re.compile(r"Task sagas\.sweep\[[0-9a-f-]+\] succeeded in [0-9.e-]+s: (\{[^\n]*\})")


def progress(message: str) -> None:
    common.log(message, prefix="sagas")


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def dist(values: list[float]) -> dict[str, Any]:
    """ms figures of a list of seconds."""
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": _r(percentile(ms, 50)), "p90_ms": _r(percentile(ms, 90)), "p99_ms": _r(percentile(ms, 99)),
            "mean_ms": _r(statistics.fmean(ms) if ms else None), "max_ms": _r(max(ms) if ms else None), "min_ms": _r(min(ms) if ms else None)}


def _r(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# =========================================================================================
# /proc: CPU time per component
# =========================================================================================

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()


def _children_map() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields:
                tree[int(fields[1])].append(int(entry.name))
    return tree


def group_cpu(root: int, tree: dict[int, list[int]]) -> float:
    """CPU seconds of a process, its live descendants, and the children it has reaped."""
    fields = _stat(root)
    if fields is None:
        return 0.0
    total = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    stack = list(tree.get(root, []))
    while stack:
        pid = stack.pop()
        child = _stat(pid)
        if child is not None:
            total += int(child[11]) + int(child[12])
        stack.extend(tree.get(pid, []))
    return total / TICK


class CpuSampler:
    """CPU seconds per component (process group) between two samples."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups

    def sample(self) -> dict[str, float]:
        tree = _children_map()
        out = {name: sum(group_cpu(pid, tree) for pid in pids) for name, pids in self.groups.items()}
        times = os.times()
        out["bench client"] = times.user + times.system
        return out

    @staticmethod
    def diff(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {name: round(after[name] - before.get(name, 0.0), 3) for name in after}


# =========================================================================================
# PostgreSQL's own counters: commits, sessions, statements per database
# =========================================================================================


def statement_kind(query: str) -> str:
    """What a ``pg_stat_statements`` entry is: BEGIN, COMMIT, SAVEPOINT, PREPARE TRANSACTION,
    COMMIT PREPARED, ..., or the first keyword of anything else (SELECT, INSERT, UPDATE, WITH)."""
    text = query.lstrip().upper()
    for kind in ("COMMIT PREPARED", "ROLLBACK PREPARED", "PREPARE TRANSACTION", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT", "SAVEPOINT",
                 "START TRANSACTION", "BEGIN", "COMMIT", "ROLLBACK"):
        if text.startswith(kind):
            return kind
    return text.split(None, 1)[0] if text else "?"


class Counted:
    """The bench client's own connection, counting its statements: each is one autocommit
    transaction (and one statement) that PostgreSQL counts with the system's."""

    def __init__(self, conn: Any, database: str, counter: dict[str, int]) -> None:
        self._conn, self._database, self._counter = conn, database, counter

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        self._counter[self._database] += 1
        return self._conn.execute(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class PgCounters:
    """``pg_stat_database`` (``xact_commit``, ``xact_rollback``, ``sessions``) and, when the server
    preloads it, ``pg_stat_statements`` (calls per database and statement kind), read as the
    superuser from the ``postgres`` database, which is none of the six: reading them counts in
    none of the figures."""

    def __init__(self, services: dict[str, str], databases: dict[str, str]) -> None:
        import psycopg

        self.databases = databases  # alias -> database name
        self.conn = psycopg.connect(host="127.0.0.1", port=int(services["SERVICES_PG_PORT"]), user="postgres", dbname="postgres", autocommit=True)
        self.statements_error: str | None = None
        try:
            preload = self.conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            if "pg_stat_statements" not in preload:
                raise RuntimeError(f"the server does not preload pg_stat_statements (shared_preload_libraries = {preload!r})")
            # One extension in the postgres database reads the whole cluster's entries (dbid).
            self.conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            self.conn.execute("SELECT pg_stat_statements_reset()")
        except Exception as exc:  # noqa: BLE001  (then commits only, and the reason in the results)
            self.statements_error = f"{type(exc).__name__}: {exc}"

    @property
    def statements(self) -> bool:
        return self.statements_error is None

    def snapshot(self, client: dict[str, int]) -> dict[str, Any]:
        """The counters now; ``pg_stat_statements`` is read and then reset, so each snapshot's
        statements are those since the previous one."""
        names = list(self.databases.values())
        out: dict[str, Any] = {"at": time.time(), "client": dict(client), "db": {}, "statements": {}, "dealloc": None}
        for name, commits, rollbacks, sessions in self.conn.execute(
                "SELECT datname, xact_commit, xact_rollback, sessions FROM pg_stat_database WHERE datname = ANY(%s)", (names,)).fetchall():
            out["db"][name] = {"xact_commit": int(commits), "xact_rollback": int(rollbacks), "sessions": int(sessions)}
        if self.statements:
            kinds: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            for name, query, calls in self.conn.execute(
                    "SELECT d.datname, s.query, s.calls FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = ANY(%s)",
                    (names,)).fetchall():
                kinds[name][statement_kind(query)] += int(calls)
            out["statements"] = {name: dict(k) for name, k in kinds.items()}
            out["dealloc"] = int(self.conn.execute("SELECT dealloc FROM pg_stat_statements_info").fetchone()[0])
            self.conn.execute("SELECT pg_stat_statements_reset()")
        return out

    def close(self) -> None:
        self.conn.close()


def pg_delta(before: dict[str, Any], after: dict[str, Any], background: dict[str, Any] | None, count: int) -> dict[str, Any]:
    """Commits, sessions and statements between two snapshots, per database and in all, less
    the bench client's own statements and the background (periodic sweeps) at its idle rate,
    per order. ``after``'s statements are those since ``before`` (reset in between)."""
    seconds = after["at"] - before["at"]
    per_db: dict[str, dict[str, Any]] = {}
    totals: dict[str, float] = defaultdict(float)
    for name, now in after["db"].items():
        was = before["db"].get(name, {})
        client = after["client"].get(name, 0) - before["client"].get(name, 0)
        statements = after["statements"].get(name, {})
        raw = {"xact_commit": now["xact_commit"] - was.get("xact_commit", 0), "xact_rollback": now["xact_rollback"] - was.get("xact_rollback", 0),
               "sessions": now["sessions"] - was.get("sessions", 0), "statements": sum(statements.values())}
        rates = (background or {}).get("rates", {}).get(name, {})
        bg = {k: rates.get(k, 0.0) * seconds for k in raw}
        net = {"xact_commit": raw["xact_commit"] - client - bg["xact_commit"], "xact_rollback": raw["xact_rollback"] - bg["xact_rollback"],
               "sessions": raw["sessions"] - bg["sessions"], "statements": raw["statements"] - client - bg["statements"]}
        kind_rates = (background or {}).get("kind_rates", {}).get(name, {})
        kinds = {k: _r((v - kind_rates.get(k, 0.0) * seconds - (client if k == "SELECT" else 0)) / count, 2) for k, v in sorted(statements.items(), key=lambda kv: -kv[1])}
        per_db[name] = {"raw": raw, "bench_client": client, "background": {k: _r(v, 1) for k, v in bg.items()},
                        "per_order": {k: _r(v / count, 3) for k, v in net.items()}, "statements_per_order_by_kind": kinds}
        for k, v in net.items():
            totals[k] += v
    return {"seconds": _r(seconds, 2), "orders": count, "per_db": per_db, "per_order": {k: _r(v / count, 3) for k, v in totals.items()},
            "statements_dealloc": after.get("dealloc")}


def pg_background(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The idle system's rates per second (beat's two sweeps every 2 s, the workers' own checks)."""
    seconds = after["at"] - before["at"]
    rates: dict[str, dict[str, float]] = {}
    kind_rates: dict[str, dict[str, float]] = {}
    for name, now in after["db"].items():
        was = before["db"].get(name, {})
        client = after["client"].get(name, 0) - before["client"].get(name, 0)
        statements = after["statements"].get(name, {})
        rates[name] = {"xact_commit": (now["xact_commit"] - was.get("xact_commit", 0) - client) / seconds,
                       "xact_rollback": (now["xact_rollback"] - was.get("xact_rollback", 0)) / seconds,
                       "sessions": (now["sessions"] - was.get("sessions", 0)) / seconds,
                       "statements": (sum(statements.values()) - client) / seconds}
        kind_rates[name] = {k: v / seconds for k, v in statements.items()}
    return {"seconds": _r(seconds, 2), "rates": rates, "kind_rates": kind_rates,
            "per_second": {k: _r(sum(r[k] for r in rates.values()), 2) for k in ("xact_commit", "sessions", "statements")}}


# =========================================================================================
# The stack
# =========================================================================================


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.services: dict[str, str] = {}
        self.env: dict[str, str] = {}
        self.stack: Stack | None = None
        self.port = 0
        self.token = ""
        self.pg: Any = None
        self.orders_pg: Any = None
        self.eventlog_pg: Any = None
        self.cache_redis: Any = None
        self.redis: Any = None
        self.done_redis: Any = None
        self.celery: Any = None
        self.worker_names: list[str] = []
        self.sampler: CpuSampler | None = None
        self.client_statements: dict[str, int] = defaultdict(int)
        self.databases: dict[str, str] = {}
        self.pgc: PgCounters | None = None

    # --- set-up ------------------------------------------------------------------------------

    def services_up(self) -> None:
        if SERVICES_DIR.exists():
            progress(f"wiping a previous {SERVICES_DIR} (fresh databases)")
            common.services_stop(SERVICES_DIR)
            state = SERVICES_DIR / "services.state"
            if state.exists():
                for line in state.read_text().splitlines():
                    if line.startswith("PG_DATA=") and "/tmp/saga-pg." in line:
                        shutil.rmtree(Path(line.split("=", 1)[1].strip("'\"")).parent, ignore_errors=True)
            shutil.rmtree(SERVICES_DIR, ignore_errors=True)
        progress(f"bash scripts/services.sh start {SERVICES_DIR}")
        services, error = common.services_start(SERVICES_DIR)
        if services is None:
            raise RuntimeError(f"PostgreSQL/Redis unavailable: {error}")
        self.services = services
        var_dir = self.tmp / "var"
        self.env = {**common.base_env(), **services, "DJANGO_SETTINGS_MODULE": SETTINGS, "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                    "VAR_DIR": str(var_dir), "CELERY_LOG_LEVEL": "INFO",
                    "BENCH_NOOP_REDIS_URL": services["CELERY_BROKER_URL"].rsplit("/", 1)[0] + "/2", "BENCH_TASK_LOG": "1"}
        if self.args.wake_coalesce is not None:
            self.env["WAKE_COALESCE_SECONDS"] = str(self.args.wake_coalesce)
        if self.args.wake_by_type:
            self.env["BENCH_WAKE_BY_TYPE"] = "1"

    def migrate_and_token(self) -> None:
        progress("manage.py migrate_all")
        common.manage(["migrate_all"], self.env)
        progress("manage.py createsuperuser --noinput, drf_create_token")
        env = {**self.env, "DJANGO_SUPERUSER_USERNAME": USERNAME, "DJANGO_SUPERUSER_EMAIL": "bench@localhost",
               "DJANGO_SUPERUSER_PASSWORD": uuid.uuid4().hex}
        common.manage(["createsuperuser", "--noinput"], env)
        out = common.manage(["drf_create_token", USERNAME], self.env)
        match = re.search(r"token ([0-9a-f]{40})", out)
        if not match:
            raise RuntimeError(f"drf_create_token printed no token: {out!r}")
        self.token = match.group(1)

    def connect(self) -> None:
        import psycopg
        import redis
        from celery import Celery

        self.databases = {alias: self.services["DATABASE_URL" if alias == "default" else f"{alias.upper()}_DATABASE_URL"].rsplit("/", 1)[1]
                          for alias in DB_ALIASES}
        self.pg = Counted(psycopg.connect(self.services["SAGAS_DATABASE_URL"], autocommit=True), self.databases["sagas"], self.client_statements)
        self.orders_pg = Counted(psycopg.connect(self.services["ORDERS_DATABASE_URL"], autocommit=True), self.databases["orders"], self.client_statements)
        self.eventlog_pg = Counted(psycopg.connect(self.services["EVENTLOG_DATABASE_URL"], autocommit=True), self.databases["eventlog"], self.client_statements)
        self.pgc = PgCounters(self.services, self.databases)
        self.cache_redis = redis.Redis.from_url(self.services.get("CACHE_URL") or self.services["CELERY_BROKER_URL"].rsplit("/", 1)[0] + "/1")
        self.redis = redis.Redis.from_url(self.services["CELERY_BROKER_URL"])
        self.done_redis = redis.Redis.from_url(self.env["BENCH_NOOP_REDIS_URL"])
        self.celery = Celery("bench-sagas-client", broker=self.services["CELERY_BROKER_URL"])
        self.celery.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)

    def start_workers(self, extra_env: dict[str, str] | None = None) -> None:
        assert self.stack is not None
        pool, concurrency = self.args.pool, self.args.concurrency
        self.worker_names = []
        for index in range(1, self.args.workers + 1):
            name = f"worker{index}"
            argv = [sys.executable, "-m", "celery", "-A", "config.celery_app", "worker", "-Q", ",".join(QUEUES), "-n", f"bench{index}@%h",
                    "--pool", pool, "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
            saved = dict(self.stack.env)
            self.stack.env.update(extra_env or {})
            try:
                # Stack.start_worker names the node after its queue; two workers on the same
                # queues need two node names, so the same argv goes through Stack._start.
                self.stack._start(name, argv, ready_marker=" ready.")
            finally:
                self.stack.env = saved
            self.worker_names.append(name)
        self.stack.wait_ready(self.worker_names, timeout=90)

    def stop_workers(self) -> None:
        assert self.stack is not None
        for name in self.worker_names:
            self.stack.processes.pop(name).stop(timeout=30)

    def stack_up(self) -> None:
        self.stack = Stack(env=self.env, run_dir=self.tmp / "run", log_dir=self.tmp / "log", echo=False)
        self.port = free_port()
        progress(f"starting {self.args.workers} workers (-Q {','.join(QUEUES)}, --pool {self.args.pool} --concurrency {self.args.concurrency}), beat, "
                 f"gunicorn --workers 2 on 127.0.0.1:{self.port}")
        self.start_workers()
        self.stack.start_beat()
        self.stack.start_web(host="127.0.0.1", port=self.port, workers=2)
        self.stack.wait_ready(timeout=90)
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = self.http("GET", "/healthz")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("gunicorn did not answer /healthz")
            time.sleep(0.2)
        groups: dict[str, list[int]] = {}
        for name in self.worker_names:
            groups.setdefault("celery workers", []).append(self.stack.processes[name].pid or 0)
        groups["gunicorn"] = [self.stack.processes["web"].pid or 0]
        groups["beat"] = [self.stack.processes["beat"].pid or 0]
        pg_pid = Path(self.services["SERVICES_PG_DATA"], "postmaster.pid").read_text().split()[0]
        groups["postgres"] = [int(pg_pid)]
        groups["redis"] = [int(Path(self.services["SERVICES_DIR"], "redis.pid").read_text().strip())]
        self.sampler = CpuSampler(groups)

    # --- HTTP --------------------------------------------------------------------------------

    def http(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Authorization": f"Token {self.token}", "Content-Type": "application/json", "Host": "127.0.0.1"}
            connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
            response = connection.getresponse()
            raw = response.read()
            try:
                return response.status, json.loads(raw or b"null")
            except ValueError:
                return response.status, raw[:500]
        finally:
            connection.close()

    def customer(self, name: str) -> str:
        status, body = self.http("POST", "/api/customers/", {"name": name, "credit_limit": CREDIT_LIMIT})
        if status != 201:
            raise RuntimeError(f"POST /api/customers/ answered {status}: {body}")
        return str(body["id"])

    def post_order(self, customer_id: str, mode: str) -> dict[str, Any]:
        """POST one order as a well-behaved client: a 503 from admission control is retried
        after its Retry-After (``posted`` is the attempt that was taken; ``refused`` counts
        the ones turned away, ``first_tried`` when the first was sent)."""
        first = time.time()
        refused = 0
        while True:
            started = time.time()
            status, body = self.http("POST", "/api/orders/", {"customer_id": customer_id, "total": ORDER_TOTAL, "mode": mode})
            answered = time.time()
            retry_after = body.get("extra", {}).get("retry_after_seconds") if status == 503 and isinstance(body, dict) else None
            if retry_after is None or refused >= 100:
                break
            refused += 1
            time.sleep(float(retry_after))
        expected = 201 if mode == "2pc" else 202
        if status != expected:
            return {"error": f"{status} {body}", "posted": started, "answered": answered, "refused": refused}
        out = {"saga_id": body["saga_id"], "order_id": body["id"], "posted": started, "answered": answered, "refused": refused, "first_tried": first}
        if mode == "2pc":
            out["state"] = body.get("state")  # the final state: APPROVED or REJECTED
        return out

    def publish_chain(self) -> dict[str, Any]:
        chain_id = uuid.uuid4().hex
        started = time.time()
        self.celery.send_task("bench.noop_hop", args=(chain_id, HOP_QUEUES, [started]), queue=HOP_QUEUES[0],
                              expires=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=10))
        return {"chain": chain_id, "posted": started, "answered": time.time()}

    # --- waiting -----------------------------------------------------------------------------

    def broker_busy(self) -> int:
        """Messages queued or delivered-but-unacknowledged in the five queues."""
        pipe = self.redis.pipeline()
        for queue in QUEUES:
            pipe.llen(queue)
            for priority in (3, 6, 9):
                pipe.llen(f"{queue}\x06\x16{priority}")
        pipe.hlen("unacked")
        return int(sum(pipe.execute()))

    def idle_quiet(self) -> float:
        """How long the system must look idle before an unsaturated order: one wake-up window and a bit."""
        window = self.args.wake_coalesce if self.args.wake_coalesce is not None else DEFAULT_WAKE_COALESCE_SECONDS
        return max(window, 0.0) + 0.05

    def wake_windows(self) -> int:
        """Wake-up coalescing windows still open (``wake-window:*`` flags in the shared cache)."""
        return sum(1 for _ in self.cache_redis.scan_iter(match="*wake-window:*", count=1000))

    def wait_idle(self, *, quiet: float = 0.3, timeout: float = 60.0) -> float:
        """Until the broker has had nothing queued or unacknowledged, and no wake-up window has
        been open, for ``quiet`` seconds. A wake-up deferred to a window's trailing edge lives in
        its process's notifier thread, not in Redis; it is sent at most one window after the flag
        that deferred it was seen, so a ``quiet`` of at least one window covers it too."""
        started = time.monotonic()
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            if self.broker_busy() == 0 and self.wake_windows() == 0:
                idle_since = idle_since or now
                if now - idle_since >= quiet:
                    return now - started
            else:
                idle_since = None
            if now - started > timeout:
                progress(f"  broker still busy after {timeout:.0f}s ({self.broker_busy()} messages); going on")
                return now - started
            time.sleep(0.01)

    def sagas_final(self, saga_ids: list[str]) -> int:
        row = self.pg.execute("SELECT count(*) FROM sagas_sagainstance WHERE id = ANY(%s::uuid[]) AND state = ANY(%s)", (saga_ids, list(TERMINAL))).fetchone()
        return int(row[0])

    def wait_sagas(self, saga_ids: list[str], *, timeout: float, interval: float, label: str = "") -> bool:
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        while True:
            done = self.sagas_final(saga_ids)
            if done >= len(saga_ids):
                return True
            if time.monotonic() > deadline:
                progress(f"  {label}: only {done}/{len(saga_ids)} sagas final after {timeout:.0f}s")
                return False
            if label and time.monotonic() - last_report > 3:
                progress(f"  {label}: {done}/{len(saga_ids)} sagas final")
                last_report = time.monotonic()
            time.sleep(interval)

    def flows_final(self, posted: list[dict[str, Any]]) -> tuple[int, int]:
        """Choreographed flows: (orders in a terminal state, trace records in a terminal state)."""
        orders = self.orders_pg.execute("SELECT count(*) FROM orders_order WHERE id = ANY(%s::uuid[]) AND state = ANY(%s)",
                                        ([p["order_id"] for p in posted], list(ORDER_TERMINAL))).fetchone()
        return int(orders[0]), self.sagas_final([p["saga_id"] for p in posted])

    def wait_flows(self, posted: list[dict[str, Any]], *, timeout: float, interval: float, label: str = "") -> bool:
        """Until every order is final in the orders database and every trace record is final."""
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        while True:
            orders, traces = self.flows_final(posted)
            if orders >= len(posted) and traces >= len(posted):
                return True
            if time.monotonic() > deadline:
                progress(f"  {label}: only {orders}/{len(posted)} orders and {traces} traces final after {timeout:.0f}s")
                return False
            if label and time.monotonic() - last_report > 3:
                progress(f"  {label}: {orders}/{len(posted)} orders, {traces} traces final")
                last_report = time.monotonic()
            time.sleep(interval)

    def take_kernel_tasks(self) -> list[dict[str, Any]]:
        """The ``eventlog.*`` task runs the workers recorded (bench/noop_tasks.py), and forget them."""
        pipe = self.done_redis.pipeline()
        pipe.lrange(TASKS_KEY, 0, -1)
        pipe.delete(TASKS_KEY)
        raw, _ = pipe.execute()
        return [json.loads(entry) for entry in raw]

    def chains_done(self) -> int:
        return int(self.done_redis.llen(NOOP_DONE_KEY))

    def wait_chains(self, count: int, *, timeout: float, interval: float, label: str = "") -> bool:
        deadline = time.monotonic() + timeout
        last_report = time.monotonic()
        while True:
            done = self.chains_done()
            if done >= count:
                return True
            if time.monotonic() > deadline:
                progress(f"  {label}: only {done}/{count} chains done after {timeout:.0f}s")
                return False
            if label and time.monotonic() - last_report > 3:
                progress(f"  {label}: {done}/{count} chains done")
                last_report = time.monotonic()
            time.sleep(interval)

    def take_chains(self) -> dict[str, list[float]]:
        raw = self.done_redis.lrange(NOOP_DONE_KEY, 0, -1)
        self.done_redis.delete(NOOP_DONE_KEY)
        return {entry["chain"]: entry["times"] for entry in map(json.loads, raw)}

    # --- logs ----------------------------------------------------------------------------------

    def log_offsets(self) -> dict[str, int]:
        assert self.stack is not None and self.stack.log_dir is not None
        return {name: (self.stack.log_dir / f"{name}.log").stat().st_size if (self.stack.log_dir / f"{name}.log").exists() else 0
                for name in self.worker_names}

    def task_times(self, start: dict[str, int], end: dict[str, int]) -> dict[str, list[float]]:
        """Execution seconds per task name, from the workers' "succeeded in" lines between offsets."""
        assert self.stack is not None and self.stack.log_dir is not None
        times: dict[str, list[float]] = defaultdict(list)
        for name in self.worker_names:
            path = self.stack.log_dir / f"{name}.log"
            with open(path, "rb") as handle:
                handle.seek(start.get(name, 0))
                chunk = handle.read(max(end.get(name, 0) - start.get(name, 0), 0)).decode(errors="replace")
            for match in SUCCEEDED.finditer(chunk):
                times[match.group(1)].append(float(match.group(2)))
        return dict(times)

    def sweep_results(self, start: dict[str, int], end: dict[str, int]) -> dict[str, int]:
        """What ``sagas.sweep`` did between offsets, summed from its results in the workers' logs
        (its ``2pc_*`` counts are ``resolve_in_doubt``'s: branches committed, records ended)."""
        import ast

        assert self.stack is not None and self.stack.log_dir is not None
        totals: dict[str, int] = defaultdict(int)
        for name in self.worker_names:
            path = self.stack.log_dir / f"{name}.log"
            with open(path, "rb") as handle:
                handle.seek(start.get(name, 0))
                chunk = handle.read(max(end.get(name, 0) - start.get(name, 0), 0)).decode(errors="replace")
            for match in SWEEP_RESULT.finditer(chunk):
                try:
                    result = ast.literal_eval(match.group(1))
                except (ValueError, SyntaxError):
                    continue
                for key, value in result.items():
                    if isinstance(value, int):
                        totals[key] += value
        return dict(totals)

    def log_problems(self) -> list[str]:
        assert self.stack is not None and self.stack.log_dir is not None
        found = []
        for path in sorted(self.stack.log_dir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if re.search(r"\b(ERROR|CRITICAL|Traceback)\b|\bWARNING\b.*(failed|timed out|retry)", line):
                    found.append(f"{path.stem}: {line[:300]}")
        return found


# =========================================================================================
# The phases
# =========================================================================================


def run_phase(bench: Bench, kind: str, count: int, *, saturated: bool, customer_id: str | None, label: str) -> dict[str, Any]:
    """Post ``count`` orders in mode ``kind`` ("orchestration", "choreography") or publish
    ``count`` chains (kind "floor")."""
    assert bench.sampler is not None
    quiet = bench.idle_quiet()
    bench.wait_idle(quiet=quiet)
    if kind == "floor":
        bench.take_chains()
    bench.take_kernel_tasks()
    offsets = bench.log_offsets()
    cpu_before = bench.sampler.sample()
    meter = common.CpuMeter()
    submit = (lambda: bench.post_order(customer_id, kind)) if kind != "floor" else bench.publish_chain  # type: ignore[arg-type]
    noun = "chains" if kind == "floor" else f"{kind} orders"
    posted: list[dict[str, Any]] = []
    wall_start = time.time()
    if saturated:
        rate = bench.args.rate if label.startswith("saturated") else None
        progress(f"{label}: {count} {noun} from {bench.args.threads} threads" + (f", paced at {rate:g}/s" if rate else ""))

        def paced(index: int) -> dict[str, Any]:
            if rate:
                delay = wall_start + index / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            return submit()

        with ThreadPoolExecutor(max_workers=bench.args.threads) as pool:
            posted = list(pool.map(paced, range(count)))
        refusals = sum(p.get("refused", 0) for p in posted)
        progress(f"  submitted in {time.time() - wall_start:.1f}s ({refusals} POSTs refused by admission control and retried after Retry-After); waiting for the end")
        errors = [p["error"] for p in posted if "error" in p]
        if errors:
            raise RuntimeError(f"{len(errors)} POSTs failed, e.g. {errors[:3]}")
        if kind in ("orchestration", "2pc"):  # a 2PC answer is already final; this only checks it
            ok = bench.wait_sagas([p["saga_id"] for p in posted], timeout=bench.args.timeout, interval=0.25, label=label)
        elif kind == "choreography":
            ok = bench.wait_flows(posted, timeout=bench.args.timeout, interval=0.25, label=label)
        else:
            ok = bench.wait_chains(count, timeout=bench.args.timeout, interval=0.1, label=label)
    else:
        progress(f"{label}: {count} {noun}, one at a time (each after {quiet:.2f} s of an idle broker and no open wake-up window)")
        ok = True
        for index in range(count):
            if index:
                bench.wait_idle(quiet=quiet)
            one = submit()
            if "error" in one:
                raise RuntimeError(f"POST failed: {one['error']}")
            posted.append(one)
            if kind in ("orchestration", "2pc"):
                ok = bench.wait_sagas([one["saga_id"]], timeout=30, interval=0.01) and ok
            elif kind == "choreography":
                ok = bench.wait_flows([one], timeout=30, interval=0.01) and ok
            else:
                ok = bench.wait_chains(index + 1, timeout=30, interval=0.005) and ok
    wall = time.time() - wall_start
    settle = bench.wait_idle(quiet=max(quiet, 0.5), timeout=120)
    cpu = CpuSampler.diff(cpu_before, bench.sampler.sample())
    system = meter.stop()
    end_offsets = bench.log_offsets()
    tasks = bench.task_times(offsets, end_offsets)
    return {"admission_refused": sum(p.get("refused", 0) for p in posted), "sweep_results": bench.sweep_results(offsets, end_offsets), "kind": kind, "count": count, "saturated": saturated, "all_final": ok, "posted": posted, "wall_seconds": round(wall, 3),
            "drain_seconds_after": round(settle, 2), "cpu_seconds": cpu, "system_cpu": system, "task_times": tasks,
            "kernel_tasks": bench.take_kernel_tasks()}


def collect_saga_rows(bench: Bench, phase: dict[str, Any]) -> None:
    """The databases' timestamps for the phase's sagas: instance, steps, participants."""
    import psycopg

    ids = [p["saga_id"] for p in phase["posted"]]
    sagas = {str(r[0]): r for r in bench.pg.execute(
        "SELECT id, state, created_at, updated_at, ended_at FROM sagas_sagainstance WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()}
    steps: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for r in bench.pg.execute(
            "SELECT saga_id, index, name, kind, status, attempts, started_at, ended_at, command_id FROM sagas_sagastep "
            "WHERE saga_id = ANY(%s::uuid[]) ORDER BY saga_id, id", (ids,)).fetchall():
        steps[str(r[0])].append(r)
    processed: dict[str, float] = {}
    for context, table in PARTICIPANT_TABLES.items():
        with psycopg.connect(bench.services[f"{context.upper()}_DATABASE_URL"], autocommit=True) as conn:
            for command_id, at in conn.execute(f"SELECT command_id, processed_at FROM {table} WHERE saga_id = ANY(%s::uuid[])", (ids,)).fetchall():
                processed[str(command_id)] = at.timestamp()
    rows = []
    for p in phase["posted"]:
        saga = sagas.get(p["saga_id"])
        if saga is None:
            rows.append({"saga_id": p["saga_id"], "state": None, "posted": p["posted"]})
            continue
        rows.append({
            "saga_id": p["saga_id"], "state": saga[1], "posted": p["posted"], "answered": p["answered"],
            "created": saga[2].timestamp(), "ended": saga[4].timestamp() if saga[4] else None,
            "steps": [{"index": s[1], "name": s[2], "kind": s[3], "status": s[4], "attempts": s[5], "started": s[6].timestamp(),
                       "ended": s[7].timestamp() if s[7] else None, "processed": processed.get(str(s[8]))} for s in steps[p["saga_id"]]],
        })
    phase["rows"] = rows
    phase["log_events"] = dict(bench.pg.execute(
        "SELECT event, count(*) FROM sagas_sagalogentry WHERE saga_id = ANY(%s::uuid[]) GROUP BY event ORDER BY event", (ids,)).fetchall())


def summarise_sagas(phase: dict[str, Any]) -> dict[str, Any]:
    rows = phase["rows"]
    states: dict[str, int] = defaultdict(int)
    for r in rows:
        states[str(r["state"])] += 1
    ended = [r for r in rows if r.get("ended") is not None]
    latencies = [r["ended"] - r["posted"] for r in ended]
    first_post = min(r["posted"] for r in rows)
    last_end = max((r["ended"] for r in ended), default=None)
    span = (last_end - first_post) if last_end else None
    post_rtt = [r["answered"] - r["posted"] for r in rows if "answered" in r]
    # The timeline of a saga: POST, row created (view), then per step: processed (participant),
    # reply handled (= step ended; the next step starts in the same transaction).
    segments: dict[str, list[float]] = defaultdict(list)
    hops: dict[int, list[float]] = defaultdict(list)
    retried = 0
    for r in ended:
        forward = [s for s in r["steps"] if s["kind"] == "forward"]
        retried += sum(1 for s in r["steps"] if s["attempts"] > 1)
        if len(forward) != 3 or any(s["processed"] is None or s["ended"] is None for s in forward):
            continue
        segments["POST -> saga row written (HTTP + view)"].append(r["created"] - r["posted"])
        points = [r["created"]]
        for s in forward:
            segments[f"{s['name']}: step started -> participant processed_at"].append(s["processed"] - s["started"])
            segments[f"{s['name']}: processed_at -> reply handled (step ended)"].append(s["ended"] - s["processed"])
            segments[f"{s['name']}: step total"].append(s["ended"] - s["started"])
            points += [s["processed"], s["ended"]]
        for k in range(6):
            hops[k + 1].append(points[k + 1] - points[k])
        segments["last reply handled -> saga ended_at"].append(r["ended"] - forward[-1]["ended"])
    return {
        "n": len(rows), "states": dict(states), "steps_retried": retried, "saga_log_events": phase.get("log_events", {}),
        "throughput_per_s": _r(len(ended) / span if span else None), "span_seconds": _r(span, 3),
        "latency": dist(latencies), "post_rtt": dist(post_rtt),
        "segments": {k: dist(v) for k, v in segments.items()},
        "hops": {str(k): dist(v) for k, v in sorted(hops.items())},
        "hop_sum_p50_ms": _r(sum(percentile([x * 1000 for x in v], 50) or 0 for v in hops.values())),
    }


FLOW_EVENTS = ("OrderCreated", "CreditReserved", "OrderApproved")


def collect_flow_rows(bench: Bench, phase: dict[str, Any]) -> None:
    """The databases' timestamps for the phase's choreographed flows: the order's state row
    (orders), each event of the flow in the log (``occurred_at`` as its context wrote it,
    ``recorded_at`` as the relay copied it; eventlog) and the trace record (sagas)."""
    saga_ids = [p["saga_id"] for p in phase["posted"]]
    order_ids = [p["order_id"] for p in phase["posted"]]
    orders = {str(r[0]): r for r in bench.orders_pg.execute(
        "SELECT id, state, created_at, updated_at FROM orders_order WHERE id = ANY(%s::uuid[])", (order_ids,)).fetchall()}
    traces = {str(r[0]): r for r in bench.pg.execute(
        "SELECT id, state, mode, created_at, ended_at FROM sagas_sagainstance WHERE id = ANY(%s::uuid[])", (saga_ids,)).fetchall()}
    trace_steps = dict(bench.pg.execute(
        "SELECT saga_id, count(*) FROM sagas_traceevent WHERE saga_id = ANY(%s::uuid[]) GROUP BY saga_id", (saga_ids,)).fetchall())
    events: dict[str, dict[str, tuple[float, float]]] = defaultdict(dict)
    for saga_id, type_, occurred, recorded in bench.eventlog_pg.execute(
            "SELECT saga_id, type, occurred_at, recorded_at FROM eventlog_logevent WHERE saga_id = ANY(%s::uuid[])", (saga_ids,)).fetchall():
        events[str(saga_id)][type_] = (occurred.timestamp(), recorded.timestamp())
    rows = []
    for p in phase["posted"]:
        order, trace = orders.get(p["order_id"]), traces.get(p["saga_id"])
        rows.append({
            "saga_id": p["saga_id"], "order_id": p["order_id"], "posted": p["posted"], "answered": p["answered"],
            "order_state": order[1] if order else None,
            "approved": order[3].timestamp() if order and order[1] == "APPROVED" else None,
            "trace_state": trace[1] if trace else None, "trace_mode": trace[2] if trace else None,
            "trace_ended": trace[4].timestamp() if trace and trace[4] else None,
            "trace_steps": int(trace_steps.get(uuid.UUID(p["saga_id"]), 0)),
            "events": events.get(p["saga_id"], {}),
        })
    phase["rows"] = rows


def summarise_flows(phase: dict[str, Any]) -> dict[str, Any]:
    """Choreographed flows: business latency = the order's APPROVED ``updated_at`` (orders
    database) minus the client's clock before the POST; the trace's ``ended_at`` separately."""
    rows = phase["rows"]
    states: dict[str, int] = defaultdict(int)
    trace_states: dict[str, int] = defaultdict(int)
    for r in rows:
        states[str(r["order_state"])] += 1
        trace_states[str(r["trace_state"])] += 1
    approved = [r for r in rows if r["approved"] is not None]
    traced = [r for r in rows if r["trace_ended"] is not None]
    first_post = min(r["posted"] for r in rows)
    last_approved = max((r["approved"] for r in approved), default=None)
    last_traced = max((r["trace_ended"] for r in traced), default=None)
    span = (last_approved - first_post) if last_approved else None
    trace_span = (last_traced - first_post) if last_traced else None
    segments: dict[str, list[float]] = defaultdict(list)
    hops: dict[int, list[float]] = defaultdict(list)
    for r in approved:
        ev = r["events"]
        if not all(name in ev for name in FLOW_EVENTS):
            continue
        created, reserved, approved_ev = ev["OrderCreated"], ev["CreditReserved"], ev["OrderApproved"]
        # POST, then 4 wake-up hops to the approval: relay(orders), customers subscriber,
        # relay(customers), orders subscriber. Then 2 more for the trace: relay(orders), trace.
        points = [created[0], created[1], reserved[0], reserved[1], r["approved"]]
        segments["POST -> OrderCreated written (HTTP + view)"].append(created[0] - r["posted"])
        segments["OrderCreated: written -> in the log (relay wake-up + relay(orders))"].append(created[1] - created[0])
        segments["OrderCreated in the log -> CreditReserved written (customers subscriber)"].append(reserved[0] - created[1])
        segments["CreditReserved: written -> in the log (relay(customers))"].append(reserved[1] - reserved[0])
        segments["CreditReserved in the log -> order APPROVED (orders subscriber)"].append(r["approved"] - reserved[1])
        segments["OrderApproved occurred_at -> orders_order.updated_at"].append(r["approved"] - approved_ev[0])
        if r["trace_ended"] is not None:
            segments["order APPROVED -> OrderApproved in the log (relay(orders))"].append(approved_ev[1] - r["approved"])
            segments["OrderApproved in the log -> trace ended_at (trace subscriber)"].append(r["trace_ended"] - approved_ev[1])
        for k in range(4):
            hops[k + 1].append(points[k + 1] - points[k])
    return {
        "n": len(rows), "states": dict(states), "trace_states": dict(trace_states),
        "trace_modes": dict(sorted({str(r["trace_mode"]): sum(1 for x in rows if x["trace_mode"] == r["trace_mode"]) for r in rows}.items())),
        "trace_steps": dict(sorted({str(r["trace_steps"]): sum(1 for x in rows if x["trace_steps"] == r["trace_steps"]) for r in rows}.items())),
        "throughput_per_s": _r(len(approved) / span if span else None), "span_seconds": _r(span, 3),
        "latency": dist([r["approved"] - r["posted"] for r in approved]),
        "trace_throughput_per_s": _r(len(traced) / trace_span if trace_span else None),
        "trace_latency": dist([r["trace_ended"] - r["posted"] for r in traced]),
        "trace_lag": dist([r["trace_ended"] - r["approved"] for r in traced if r["approved"] is not None]),
        "post_rtt": dist([r["answered"] - r["posted"] for r in rows if "answered" in r]),
        "segments": {k: dist(v) for k, v in segments.items()},
        "hops": {str(k): dist(v) for k, v in sorted(hops.items())},
        "hop_sum_p50_ms": _r(sum(percentile([x * 1000 for x in v], 50) or 0 for v in hops.values())),
    }


def collect_2pc_rows(bench: Bench, phase: dict[str, Any]) -> None:
    """The 2PC records (``sagas_sagainstance``, mode ``2pc``: ``created_at`` when the record is
    written, ``ended_at`` when it ends) and their coordinator log (``sagas_coordinatorlogentry``,
    one row per phase with ``started_at`` and ``at``), with the client's clocks."""
    ids = [p["saga_id"] for p in phase["posted"]]
    sagas = {str(r[0]): r for r in bench.pg.execute(
        "SELECT id, state, mode, created_at, ended_at, data->'outcome'->>'state' FROM sagas_sagainstance WHERE id = ANY(%s::uuid[])", (ids,)).fetchall()}
    log: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for saga_id, phase_name, branch, outcome, actor, started_at, at in bench.pg.execute(
            "SELECT saga_id, phase, branch, outcome, actor, started_at, at FROM sagas_coordinatorlogentry WHERE saga_id = ANY(%s::uuid[]) ORDER BY saga_id, id",
            (ids,)).fetchall():
        log[str(saga_id)].append({"phase": f"{phase_name} {branch}".strip(), "outcome": outcome, "actor": actor,
                                  "started": started_at.timestamp(), "at": at.timestamp()})
    rows = []
    for p in phase["posted"]:
        saga = sagas.get(p["saga_id"])
        rows.append({"saga_id": p["saga_id"], "order_id": p["order_id"], "posted": p["posted"], "answered": p["answered"], "answer_state": p.get("state"),
                     "state": saga[1] if saga else None, "mode": saga[2] if saga else None,
                     "created": saga[3].timestamp() if saga else None, "ended": saga[4].timestamp() if saga and saga[4] else None,
                     "order_state": saga[5] if saga else None, "log": log.get(p["saga_id"], [])})
    phase["rows"] = rows


def summarise_2pc(phase: dict[str, Any]) -> dict[str, Any]:
    """2PC: latency = the client's POST round trip (the 201 carries the final state); also the
    record's ``ended_at - created_at``. Throughput = N / (last ``ended_at`` - first POST). Per
    phase of the coordinator log: its duration (``at - started_at``) and the gap before it (from
    the previous phase's ``at``: the commits of the record and of the decision fall there)."""
    rows = phase["rows"]
    states: dict[str, int] = defaultdict(int)
    answers: dict[str, int] = defaultdict(int)
    for r in rows:
        states[str(r["state"])] += 1
        answers[str(r["answer_state"])] += 1
    ended = [r for r in rows if r.get("ended") is not None]
    first_post = min(r["posted"] for r in rows)
    last_end = max((r["ended"] for r in ended), default=None)
    span = (last_end - first_post) if last_end else None
    durations: dict[str, list[float]] = defaultdict(list)
    gaps: dict[str, list[float]] = defaultdict(list)
    segments: dict[str, list[float]] = defaultdict(list)
    sequences: dict[str, int] = defaultdict(int)
    actors: dict[str, int] = defaultdict(int)
    odd: list[list[str]] = []
    for r in rows:
        for e in r["log"]:
            actors[f"{e['phase']} by {e['actor']}"] += 1
    for r in ended:
        entries = r["log"]
        sequences[" > ".join(e["phase"] for e in entries)] += 1
        if [e["phase"] for e in entries] != list(TWO_PC_PHASES):
            if len(odd) < 5:
                odd.append([f"{e['phase']} {e['outcome']} by {e['actor']} at +{(e['at'] - r['created']) * 1000:.1f} ms" for e in entries])
            continue
        segments["POST -> record created_at (HTTP, token, idempotency, 2PC check)"].append(r["created"] - r["posted"])
        previous = None
        for e in entries:
            durations[e["phase"]].append(e["at"] - e["started"])
            if previous is not None:
                gaps[e["phase"]].append(e["started"] - previous)
            previous = e["at"]
        segments["log: begin started_at -> end at (the protocol)"].append(entries[-1]["at"] - entries[0]["started"])
        segments["end at -> record ended_at"].append(r["ended"] - entries[-1]["at"])
        segments["record ended_at -> 201 received (end's UPDATE + COMMIT, response)"].append(r["answered"] - r["ended"])
    return {
        "n": len(rows), "states": dict(states), "answer_states": dict(answers), "outcome_states": dict(sorted({str(r["order_state"]): sum(1 for x in rows if x["order_state"] == r["order_state"]) for r in rows}.items())),
        "phase_sequences": dict(sequences), "log_rows_by_actor": dict(sorted(actors.items())), "odd_examples": odd,
        "throughput_per_s": _r(len(ended) / span if span else None), "span_seconds": _r(span, 3),
        "latency": dist([r["answered"] - r["posted"] for r in rows]),
        "record_latency": dist([r["ended"] - r["created"] for r in ended]),
        "post_rtt": dist([r["answered"] - r["posted"] for r in rows]),
        "phases": {name: {"duration": dist(durations.get(name, [])), "gap_before": dist(gaps.get(name, []))} for name in TWO_PC_PHASES},
        "phase_sum_p50_ms": _r(sum(percentile([x * 1000 for x in durations.get(name, [])], 50) or 0 for name in TWO_PC_PHASES)),
        "gap_sum_p50_ms": _r(sum(percentile([x * 1000 for x in gaps.get(name, [])], 50) or 0 for name in TWO_PC_PHASES)),
        "segments": {k: dist(v) for k, v in segments.items()},
        # the hop sum of the other modes: here, the phases and the gaps between them
        "hop_sum_p50_ms": None,
    }


def summarise_kernel_tasks(entries: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """Relay and subscriber runs by their argument (outbox or subscriber): runs, runs per
    saga/flow, events each consumed, runs that found nothing, execution time."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        short = str(e["name"]).removeprefix("eventlog.")
        groups[f"{short}({e['arg']})" if e.get("arg") is not None else short].append(e)
    out = {}
    for key, runs in sorted(groups.items(), key=lambda kv: -sum(e["seconds"] for e in kv[1])):
        results = [e["result"] for e in runs if e.get("result") is not None]
        ms = [e["seconds"] * 1000 for e in runs]
        out[key] = {"runs": len(runs), "runs_per_item": _r(len(runs) / count if count else None, 3),
                    "events": sum(results), "events_per_run": _r(statistics.fmean(results) if results else None),
                    "empty_runs": sum(1 for x in results if x == 0), "p50_ms": _r(percentile(ms, 50)), "p99_ms": _r(percentile(ms, 99)),
                    "total_s": _r(sum(ms) / 1000, 3)}
    return out


def summarise_floor(phase: dict[str, Any], chains: dict[str, list[float]]) -> dict[str, Any]:
    mine = [chains[p["chain"]] for p in phase["posted"] if p["chain"] in chains]
    latencies = [t[-1] - t[0] for t in mine]
    span = (max(t[-1] for t in mine) - min(t[0] for t in mine)) if mine else None
    hops: dict[int, list[float]] = defaultdict(list)
    for t in mine:
        for k in range(1, len(t)):
            hops[k].append(t[k] - t[k - 1])
    return {"n": len(phase["posted"]), "done": len(mine), "throughput_per_s": _r(len(mine) / span if span else None), "span_seconds": _r(span, 3),
            "latency": dist(latencies), "hops": {str(k): dist(v) for k, v in sorted(hops.items())},
            "hop_sum_p50_ms": _r(sum(percentile([x * 1000 for x in v], 50) or 0 for v in hops.values())),
            "publish_rtt": dist([p["answered"] - p["posted"] for p in phase["posted"]])}


def summarise_tasks(tasks: dict[str, list[float]]) -> dict[str, Any]:
    busy = sum(sum(v) for v in tasks.values())
    out = {}
    for name, values in sorted(tasks.items(), key=lambda kv: -sum(kv[1])):
        out[name] = {"count": len(values), "p50_ms": _r(percentile([v * 1000 for v in values], 50)), "p99_ms": _r(percentile([v * 1000 for v in values], 99)),
                     "total_s": _r(sum(values), 3), "share_of_busy": _r(sum(values) / busy if busy else None, 3)}
    return {"busy_seconds": _r(busy, 3), "tasks": out}


def stream_effect(phase: dict[str, Any]) -> dict[str, Any]:
    """reserve_credit's participant time for the first and the last tenth of the saturated run
    (one customer: its stream grows by one event per order and is folded in full on each load)."""
    rows = sorted((r for r in phase["rows"] if r.get("ended")), key=lambda r: r["created"])
    tenth = max(len(rows) // 10, 1)

    def part(chunk: list[dict[str, Any]]) -> float | None:
        values = []
        for r in chunk:
            for s in r["steps"]:
                if s["name"] == "reserve_credit" and s["kind"] == "forward" and s["processed"]:
                    values.append((s["processed"] - s["started"]) * 1000)
        return _r(percentile(values, 50))

    return {"first_tenth_p50_ms": part(rows[:tenth]), "last_tenth_p50_ms": part(rows[-tenth:])}


# =========================================================================================
# Driver
# =========================================================================================


def celery_per_order(phase: dict[str, Any]) -> dict[str, Any]:
    """Celery task runs per order (or chain) of a run: the saga's commands and replies (or the
    floor's hops) from the workers' "succeeded in" lines; relay and subscriber runs from the
    BENCH_TASK_LOG records; beat's periodic sweeps apart (a count, not per order)."""
    count = phase["count"]
    tasks = phase["task_times"]
    hops = sum(len(v) for name, v in tasks.items() if not name.startswith("eventlog.") and name not in PERIODIC_TASKS)
    kernel = phase["kernel_tasks"]
    relay = sum(1 for e in kernel if e["name"] == "eventlog.relay")
    subscriber = sum(1 for e in kernel if e["name"] == "eventlog.subscriber_advance")
    other = sum(1 for e in kernel if e["name"] not in ("eventlog.relay", "eventlog.subscriber_advance") and e["name"] not in PERIODIC_TASKS)
    sweeps = sum(len(tasks.get(name, [])) for name in PERIODIC_TASKS)
    return {"saga_hops": _r(hops / count, 3), "relay": _r(relay / count, 3), "subscriber_advance": _r(subscriber / count, 3),
            "eventlog_other": _r(other / count, 3), "eventlog": _r((relay + subscriber + other) / count, 3),
            "total": _r((hops + relay + subscriber + other) / count, 3), "periodic_sweeps_in_run": sweeps}


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 3)


def compare(summary: dict[str, Any], modes: list[str]) -> dict[str, Any]:
    """Each mode against the floor, and choreography against orchestration."""
    floor = summary["floor"]
    out: dict[str, Any] = {}
    for mode in modes:
        m = summary[mode]
        out[f"{mode}_x_floor"] = {
            "throughput": ratio(m["sat"]["throughput_per_s"], floor["sat"]["throughput_per_s"]),
            "sat_p50": ratio(m["sat"]["latency"]["p50_ms"], floor["sat"]["latency"]["p50_ms"]),
            "unsat_p50": ratio(m["unsat"]["latency"]["p50_ms"], floor["unsat"]["latency"]["p50_ms"]),
            "unsat_p99": ratio(m["unsat"]["latency"]["p99_ms"], floor["unsat"]["latency"]["p99_ms"]),
        }
    for a, b in pairs(modes):
        x, y = summary[a], summary[b]
        out[f"{a}_x_{b}"] = {
            "throughput": ratio(x["sat"]["throughput_per_s"], y["sat"]["throughput_per_s"]),
            "sat_p50": ratio(x["sat"]["latency"]["p50_ms"], y["sat"]["latency"]["p50_ms"]),
            "sat_p99": ratio(x["sat"]["latency"]["p99_ms"], y["sat"]["latency"]["p99_ms"]),
            "unsat_p50": ratio(x["unsat"]["latency"]["p50_ms"], y["unsat"]["latency"]["p50_ms"]),
            "unsat_p99": ratio(x["unsat"]["latency"]["p99_ms"], y["unsat"]["latency"]["p99_ms"]),
            "cpu_ms_per_item": ratio(sum(v for k, v in x["sat"]["cpu_ms_per_item"].items() if k != "bench client"),
                                     sum(v for k, v in y["sat"]["cpu_ms_per_item"].items() if k != "bench client")),
            "commits_per_order": ratio(x["sat"].get("postgres", {}).get("per_order", {}).get("xact_commit"),
                                       y["sat"].get("postgres", {}).get("per_order", {}).get("xact_commit")),
        }
    return out


def pairs(modes: list[str]) -> list[tuple[str, str]]:
    """The mode-to-mode ratios of the table: choreography / orchestration, 2pc / each."""
    wanted = [("choreography", "orchestration"), ("2pc", "orchestration"), ("2pc", "choreography")]
    return [(a, b) for a, b in wanted if a in modes and b in modes]


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    modes: list[str] = args.modes
    with tempfile.TemporaryDirectory(prefix="bench-sagas-") as tmp_name:
        bench = Bench(args, Path(tmp_name))
        try:
            bench.services_up()
            bench.migrate_and_token()
            bench.connect()
            info = bench.pg.execute("SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit'), "
                                    "current_setting('max_connections')").fetchone()
            results["databases"] = bench.databases
            results["info"] = {"postgres": info[0], "fsync": info[1], "synchronous_commit": info[2], "max_connections": info[3],
                               "redis": bench.redis.info("server").get("redis_version")}
            bench.stack_up()
            customers = {(mode, phase): bench.customer(f"Bench {mode} {phase}") for mode in modes for phase in ("warmup", "unsaturated", "saturated")}
            progress(f"warm-up: 20 orders per mode ({', '.join(modes)}) and 20 chains")
            for mode in modes:
                run_phase(bench, mode, 20, saturated=True, customer_id=customers[(mode, "warmup")], label=f"warm-up {mode}")
            run_phase(bench, "floor", 20, saturated=True, customer_id=None, label="warm-up floor")
            phases: dict[str, dict[str, Any]] = {}
            for mode in modes:
                phases[f"{mode}_unsat"] = run_phase(bench, mode, args.unsat, saturated=False, customer_id=customers[(mode, "unsaturated")], label=f"unsaturated {mode}")
            phases["floor_unsat"] = run_phase(bench, "floor", args.unsat, saturated=False, customer_id=None, label="unsaturated floor")
            floor_unsat_chains = bench.take_chains()
            # PostgreSQL's own counters over each saturated run: settled snapshots (idle, then
            # PG_SETTLE_SECONDS) before and after, and the idle background rate between two
            # such snapshots before the first run.
            assert bench.pgc is not None
            settle = args.pg_settle
            progress(f"PostgreSQL counters: {settle:g} s to settle, then {settle:g} s of idle background"
                     + ("" if bench.pgc.statements else f" (no pg_stat_statements: {bench.pgc.statements_error})"))
            bench.wait_idle(quiet=bench.idle_quiet())
            time.sleep(settle)
            first = bench.pgc.snapshot(bench.client_statements)
            time.sleep(settle)
            previous = bench.pgc.snapshot(bench.client_statements)
            background = pg_background(first, previous)
            pg_costs: dict[str, Any] = {}
            for kind in [*modes, "floor"]:
                if kind == "floor":
                    phases["floor_sat"] = run_phase(bench, "floor", args.n, saturated=True, customer_id=None, label="saturated floor")
                    floor_sat_chains = bench.take_chains()
                else:
                    phases[f"{kind}_sat"] = run_phase(bench, kind, args.n, saturated=True, customer_id=customers[(kind, "saturated")], label=f"saturated {kind}")
                time.sleep(settle)
                snap = bench.pgc.snapshot(bench.client_statements)
                pg_costs[kind] = pg_delta(previous, snap, background, args.n)
                progress(f"  {kind}: per order {pg_costs[kind]['per_order']} (PostgreSQL's counters, less the bench's own and the background)")
                previous = snap

            progress("reading the databases' timestamps")
            summary: dict[str, Any] = {"floor": {"sat": summarise_floor(phases["floor_sat"], floor_sat_chains),
                                                 "unsat": summarise_floor(phases["floor_unsat"], floor_unsat_chains)}}
            for mode in modes:
                summary[mode] = {}
                for level in ("unsat", "sat"):
                    phase = phases[f"{mode}_{level}"]
                    if mode == "orchestration":
                        collect_saga_rows(bench, phase)
                        summary[mode][level] = summarise_sagas(phase)
                    elif mode == "2pc":
                        collect_2pc_rows(bench, phase)
                        summary[mode][level] = summarise_2pc(phase)
                    else:
                        collect_flow_rows(bench, phase)
                        summary[mode][level] = summarise_flows(phase)
            if "orchestration" in modes:
                summary["orchestration"]["sat"]["reserve_credit_stream_effect"] = stream_effect(phases["orchestration_sat"])
            for key, phase in phases.items():
                mode, level = key.rsplit("_", 1)
                target = summary[mode][level]
                count = phase["count"]
                target["tasks"] = summarise_tasks(phase["task_times"])
                target["kernel_tasks"] = summarise_kernel_tasks(phase["kernel_tasks"], count)
                target["cpu_seconds"] = phase["cpu_seconds"]
                target["cpu_ms_per_item"] = {name: _r(seconds * 1000 / count) for name, seconds in phase["cpu_seconds"].items()}
                target["system_cpu"] = phase["system_cpu"]
                target["wall_seconds"] = phase["wall_seconds"]
                target["drain_seconds_after"] = phase["drain_seconds_after"]
                target["all_final_in_time"] = phase["all_final"]
                target["celery_per_order"] = celery_per_order(phase)
                target["sweep_results"] = phase["sweep_results"]
                if level == "sat":
                    target["postgres"] = pg_costs[mode]
            summary["postgres_background"] = {k: background[k] for k in ("seconds", "per_second", "rates")}
            summary["postgres_statements"] = "pg_stat_statements" if bench.pgc.statements else f"unavailable: {bench.pgc.statements_error}"
            summary["comparison"] = compare(summary, modes)
            results["summary"] = summary
            expected = 20 + args.unsat + args.n
            sagas = bench.pg.execute("SELECT mode, state, count(*) FROM sagas_sagainstance GROUP BY mode, state ORDER BY 1, 2").fetchall()
            orders = bench.orders_pg.execute("SELECT mode, state, count(*) FROM orders_order GROUP BY mode, state ORDER BY 1, 2").fetchall()
            results["final_states"] = {"sagas": {f"{m}/{st}": n for m, st, n in sagas}, "orders": {f"{m}/{st}": n for m, st, n in orders}}
            results["all_completed"] = (
                all(sum(n for m, st, n in sagas if m == mode and st == "COMPLETED") == expected for mode in modes)
                and sum(n for *_, n in sagas) == expected * len(modes)
                and all(sum(n for m, st, n in orders if m == mode and st == "APPROVED") == expected for mode in modes)
                and sum(n for *_, n in orders) == expected * len(modes))
            progress(f"final states: {results['final_states']} (expected {expected} COMPLETED sagas/flows and APPROVED orders per mode): "
                     f"all completed: {results['all_completed']}")
            if not results["all_completed"]:
                results["errors"].append(f"not every saga/flow COMPLETED and every order APPROVED: {results['final_states']}")
            results["log_problems"] = bench.log_problems()[:50]

            if args.profile:
                profile_pass(bench, customers[(args.profile_mode, "saturated")], results)
        except Exception as exc:
            results["errors"].append(f"{type(exc).__name__}: {exc}")
            progress(f"FAILED: {exc}")
            traceback.print_exc()
        finally:
            if bench.stack is not None:
                progress("stopping workers, beat, gunicorn")
                bench.stack.stop()
                if args.keep_logs:
                    target = Path(args.keep_logs)
                    shutil.rmtree(target, ignore_errors=True)
                    shutil.copytree(bench.tmp / "log", target)
                    progress(f"process logs copied to {target}")
            if bench.services:
                try:
                    progress("manage.py verify against the bench databases")
                    completed = subprocess.run([sys.executable, "manage.py", "verify"], cwd=BASE_DIR, env=bench.env, capture_output=True,
                                               text=True, timeout=300, check=False)
                    lines = [line for line in completed.stdout.splitlines() if line.strip()]
                    results["verify"] = {"exit": completed.returncode, "summary": lines[-1] if lines else completed.stderr.strip()[-300:],
                                         "output": completed.stdout[-4000:], "stderr": completed.stderr[-2000:]}
                    progress(f"verify: exit {completed.returncode}: {results['verify']['summary']}")
                except Exception as exc:
                    results["verify"] = {"exit": None, "summary": f"{type(exc).__name__}: {exc}"}
                for conn in (bench.pg, bench.orders_pg, bench.eventlog_pg, bench.pgc):
                    if conn is not None:
                        conn.close()
                code = common.services_stop(SERVICES_DIR)
                progress(f"services stopped (exit {code})")


def profile_pass(bench: Bench, customer_id: str, results: dict[str, Any]) -> None:
    """Restart both workers under cProfile (BENCH_PROFILE_DIR), run sagas, write the top functions."""
    if bench.args.profile_mode == "2pc":
        profile_pass_web(bench, customer_id, results)
        return
    import pstats

    count = bench.args.profile_n
    profile_dir = bench.tmp / "profiles"
    progress(f"profile pass: restarting both workers with cProfile, {count} saturated {bench.args.profile_mode} orders")
    bench.wait_idle()
    bench.stop_workers()
    bench.start_workers({"BENCH_PROFILE_DIR": str(profile_dir)})
    phase = run_phase(bench, bench.args.profile_mode, count, saturated=True, customer_id=customer_id, label=f"profiled {bench.args.profile_mode}")
    bench.stop_workers()
    files = sorted(profile_dir.glob("worker-*.prof"))
    if not files:
        results["errors"].append("profile pass: no profile written")
        return
    tasks: dict[str, int] = defaultdict(int)
    statements: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for path in profile_dir.glob("sql-*.json"):
        data = json.loads(path.read_text())
        for name, n in data["tasks"].items():
            tasks[name] += n
        for name, per_alias in data["statements"].items():
            for alias, n in per_alias.items():
                statements[name][alias] += n
    sql = {name: {"calls": n, "statements_per_call": {a: round(v / n, 2) for a, v in sorted(statements[name].items())},
                  "statements_per_saga": round(sum(statements[name].values()) / count, 2)}
           for name, n in sorted(tasks.items(), key=lambda kv: -sum(statements[kv[0]].values()))}
    out = RESULTS_DIR / ("profile-sagas.txt" if bench.args.profile_mode == "orchestration" else f"profile-sagas-{bench.args.profile_mode}.txt")
    with open(out, "w") as handle:
        handle.write(f"# bench/sagas.py --profile: {count} saturated {bench.args.profile_mode} orders, both workers (--pool {bench.args.pool}) under cProfile, "
                     f"{len(files)} profile(s) merged. cProfile slows Python code down, so use the shares, not the times.\n")
        handle.write("\n## SQL statements through Django's cursor, per task (health-check SELECT 1, BEGIN and COMMIT not counted)\n")
        handle.write(f"{'task':<34} {'calls':>6} {'stmts/saga':>11}  statements per call by alias\n")
        for name, row in sql.items():
            handle.write(f"{name:<34} {row['calls']:>6} {row['statements_per_saga']:>11}  {row['statements_per_call']}\n")
        handle.write(f"{'total':<34} {sum(tasks.values()):>6} {sum(r['statements_per_saga'] for r in sql.values()):>11.1f}\n")
        stats = pstats.Stats(*[str(f) for f in files], stream=handle)
        stats.strip_dirs()
        handle.write("\n## selected calls: connection health checks, savepoints, commits, uuid4, Redis client objects, logging\n")
        stats.sort_stats("cumulative").print_stats(r"is_usable|savepoint|\(commit\)|_commit|uuid4|client.py:\d+\(__init__\)|send_task|emit|wait_c|\(wait\)")
        handle.write("\n## by cumulative time\n")
        stats.sort_stats("cumulative").print_stats(60)
        handle.write("\n## by own time\n")
        stats.sort_stats("tottime").print_stats(40)
    results["profile"] = {"file": str(out.relative_to(BASE_DIR)), "sagas": count, "wall_seconds": phase["wall_seconds"], "sql_per_task": sql}
    progress(f"profile written to {out}")
    bench.start_workers()


def start_web(bench: Bench, extra_env: dict[str, str] | None = None, *, profiled: bool = False) -> None:
    """gunicorn as Stack.start_web starts it, optionally with bench/gunicorn_profile.py's hooks."""
    assert bench.stack is not None
    argv = [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{bench.port}", "--workers", "2", "--access-logfile", "-", "--graceful-timeout", "10"]
    if profiled:
        argv += ["-c", str(BASE_DIR / "bench" / "gunicorn_profile.py")]
    saved = dict(bench.stack.env)
    bench.stack.env.update(extra_env or {})
    try:
        bench.stack._start("web", argv, ready_marker="Booting worker")
    finally:
        bench.stack.env = saved
    bench.stack.wait_ready(["web"], timeout=90)
    deadline = time.monotonic() + 60
    while True:
        try:
            if bench.http("GET", "/healthz")[0] == 200:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("gunicorn did not answer /healthz")
        time.sleep(0.2)


def profile_pass_web(bench: Bench, customer_id: str, results: dict[str, Any]) -> None:
    """2PC: the coordinator runs in gunicorn. Restart it with cProfile in each worker
    (bench/gunicorn_profile.py), post --profile-n orders from the client threads, write the top
    functions, the connections each worker opened and the statements per order."""
    import pstats

    assert bench.stack is not None
    count = bench.args.profile_n
    profile_dir = bench.tmp / "profiles-web"
    progress(f"profile pass: restarting gunicorn with cProfile in its workers, {count} saturated 2pc orders")
    bench.wait_idle()
    bench.stack.processes.pop("web").stop(timeout=30)
    start_web(bench, {"BENCH_PROFILE_DIR": str(profile_dir)}, profiled=True)
    phase = run_phase(bench, "2pc", count, saturated=True, customer_id=customer_id, label="profiled 2pc")
    bench.stack.processes.pop("web").stop(timeout=30)
    files = sorted(profile_dir.glob("web-*.prof"))
    start_web(bench)
    if not files:
        results["errors"].append("profile pass: no gunicorn profile written")
        return
    requests = 0
    connections: dict[str, int] = defaultdict(int)
    statements: dict[str, int] = defaultdict(int)
    for path in profile_dir.glob("websql-*.json"):
        data = json.loads(path.read_text())
        requests += data["requests"]
        for alias, n in data["connections"].items():
            connections[alias] += n
        for alias, n in data["statements"].items():
            statements[alias] += n
    rtt = dist([p["answered"] - p["posted"] for p in phase["posted"]])
    out = RESULTS_DIR / "profile-sagas-2pc.txt"
    with open(out, "w") as handle:
        handle.write(f"# bench/sagas.py --profile --profile-mode 2pc: {count} saturated 2pc orders from {bench.args.threads} client threads, both gunicorn workers "
                     f"under cProfile, {len(files)} profile(s) merged. cProfile slows Python code down, so use the shares, not the times.\n")
        handle.write(f"# POST round trip under the profiler: p50 {rtt['p50_ms']} ms, p99 {rtt['p99_ms']} ms\n")
        handle.write(f"\n## per order ({requests} requests served, the health checks included)\n")
        handle.write(f"database connections opened (Django connection_created, all aliases, both workers, since start-up): {dict(connections)}\n")
        handle.write(f"statements through Django's cursors per order, by alias: {({a: round(n / count, 2) for a, n in sorted(statements.items())})}"
                     f"  total {sum(statements.values()) / count:.1f} (plus the branches' BEGIN/PREPARE/COMMIT PREPARED on psycopg directly)\n")
        stats = pstats.Stats(*[str(f) for f in files], stream=handle)
        stats.strip_dirs()
        handle.write("\n## selected calls: connections, two-phase calls, commits, savepoints, broker sends, the coordinator's phases\n")
        stats.sort_stats("cumulative").print_stats(r"connect|tpc_|_new_wrapper|_spare_wrapper|savepoint|\(commit\)|_commit|send_task|notify|_begin|_decide|_end|run_branch|prepare_all|commit_all|idempotent_start|two_phase")
        handle.write("\n## by cumulative time\n")
        stats.sort_stats("cumulative").print_stats(60)
        handle.write("\n## by own time\n")
        stats.sort_stats("tottime").print_stats(40)
    results["profile"] = {"file": str(out.relative_to(BASE_DIR)), "sagas": count, "wall_seconds": phase["wall_seconds"], "post_rtt": rtt,
                          "connections_opened": dict(connections), "django_statements_per_order": {a: round(n / count, 2) for a, n in statements.items()}}
    progress(f"profile written to {out}")


# =========================================================================================
# Report
# =========================================================================================


def render(results: dict[str, Any]) -> str:
    s = results.get("summary")
    cfg = results["config"]
    modes = cfg["modes"]
    lines = [f"Create-order sagas, {' vs '.join(modes)}, vs the bare Celery floor  (PostgreSQL {results.get('info', {}).get('postgres', '?')}, "
             f"Redis {results.get('info', {}).get('redis', '?')}; {cfg.get('workers', 2)} workers x --pool {cfg['pool']} --concurrency {cfg['concurrency']}, "
             f"all 5 queues each; beat; gunicorn 2 workers; WAKE_COALESCE_SECONDS {cfg['wake_coalesce_seconds']}"
             + ("; DIAGNOSTIC --wake-by-type: the relay wakes only subscribers that take a relayed type" if cfg.get("wake_by_type") else "") + ")"]
    if not s:
        lines += [f"  ERROR: {e}" for e in results["errors"]]
        return "\n".join(lines) + "\n"
    floor = s["floor"]
    paced = f", paced at {cfg['rate']:g}/s" if cfg.get("rate") else ""
    lines.append(f"  saturated: N={cfg['n']} from {cfg['threads']} threads{paced}; unsaturated: {cfg['unsat']} one at a time")
    mode_pairs = pairs(modes)
    header = f"  {'figure':<26}" + "".join(f"{m:>14}" for m in modes) + f"{'floor':>10}" + "".join(f"{SHORT[m] + ' x floor':>14}" for m in modes)
    header += "".join(f"{SHORT[a] + ' / ' + SHORT[b]:>13}" for a, b in mode_pairs)
    lines += [header, "  " + "-" * (len(header) - 2)]

    def row(label: str, pick: Any, spec: str = ",.1f", *, floor_too: bool = True) -> None:
        values = {m: pick(s[m]) for m in modes}
        f = pick(floor) if floor_too else None
        line = f"  {label:<26}" + "".join(f"{common.fmt(values[m], spec):>14}" for m in modes) + f"{common.fmt(f, spec):>10}"
        line += "".join(f"{common.fmt(ratio(values[m], f), '.2f'):>14}" for m in modes)
        line += "".join(f"{common.fmt(ratio(values[a], values[b]), '.2f'):>13}" for a, b in mode_pairs)
        lines.append(line)

    def per_order(x: dict[str, Any], key: str) -> float | None:
        return x["sat"].get("postgres", {}).get("per_order", {}).get(key)

    row("throughput (/s)", lambda x: x["sat"]["throughput_per_s"])
    row("saturated p50 (ms)", lambda x: x["sat"]["latency"]["p50_ms"])
    row("saturated p99 (ms)", lambda x: x["sat"]["latency"]["p99_ms"])
    row("unsaturated p50 (ms)", lambda x: x["unsat"]["latency"]["p50_ms"])
    row("unsaturated p99 (ms)", lambda x: x["unsat"]["latency"]["p99_ms"])
    row("unsat sum of hop p50s (ms)", lambda x: x["unsat"]["hop_sum_p50_ms"])
    row("CPU ms per item (sat)", lambda x: sum(v for k, v in x["sat"]["cpu_ms_per_item"].items() if k != "bench client"))
    row("commits per order (sat)", lambda x: per_order(x, "xact_commit"), ",.2f")
    if s.get("postgres_statements") == "pg_stat_statements":
        row("statements per order (sat)", lambda x: per_order(x, "statements"), ",.1f")
    row("new sessions per order", lambda x: per_order(x, "sessions"), ",.3f")
    row("Celery runs per order (sat)", lambda x: x["sat"]["celery_per_order"]["total"], ",.2f")
    row("  of which saga hops", lambda x: x["sat"]["celery_per_order"]["saga_hops"], ",.2f")
    row("  of which relay+subscribers", lambda x: x["sat"]["celery_per_order"]["eventlog"], ",.2f")
    if "orchestration" in modes:
        lines.append("  orchestration: latency = SagaInstance.ended_at - client clock before the POST (6 Celery hops after the POST).")
    if "choreography" in modes:
        lines.append("  choreography: latency = orders_order.updated_at of the APPROVED order - client clock before the POST (4 wake-up hops:")
        lines.append("    relay(orders), customers subscriber, relay(customers), orders subscriber); throughput = N / (last approval - first POST).")
    if "2pc" in modes:
        t = s["2pc"]
        lines.append("  2pc: latency = the POST's round trip (the 201 carries the final state; no Celery hop on the way); throughput = N / (last")
        lines.append(f"    record ended_at - first POST). Record ended_at - created_at p50/p99: unsat {common.fmt(t['unsat']['record_latency']['p50_ms'], ',.1f')}/"
                     f"{common.fmt(t['unsat']['record_latency']['p99_ms'], ',.1f')} ms, sat {common.fmt(t['sat']['record_latency']['p50_ms'], ',.1f')}/"
                     f"{common.fmt(t['sat']['record_latency']['p99_ms'], ',.1f')} ms; answers {t['sat']['answer_states']}.")
    lines.append("  floor: 6 chained no-op hops on the same workers/queues; latency = last hop start - publish.")
    lines.append("  per order (saturated runs): commits = pg_stat_database.xact_commit, statements = pg_stat_statements calls, sessions = new")
    lines.append("    backends, over the six databases, less the bench client's own statements and the idle background rate; Celery runs =")
    lines.append("    the saga's commands and replies (or the floor's hops) plus relay and subscriber runs (BENCH_TASK_LOG), beat's sweeps apart.")
    if "choreography" in modes:
        c = s["choreography"]
        lines.append(f"  choreography trace (sagas.choreography_trace; ended_at): trace lag after the approval p50/p99 unsat "
                     f"{common.fmt(c['unsat']['trace_lag']['p50_ms'], ',.0f')}/{common.fmt(c['unsat']['trace_lag']['p99_ms'], ',.0f')} ms, "
                     f"sat {common.fmt(c['sat']['trace_lag']['p50_ms'], ',.0f')}/{common.fmt(c['sat']['trace_lag']['p99_ms'], ',.0f')} ms; "
                     f"flows/s by trace ended_at {common.fmt(c['sat']['trace_throughput_per_s'], ',.1f')}; "
                     f"trace steps per flow {c['sat']['trace_steps']}")
    if "choreography_x_orchestration" in s["comparison"]:
        cmp_ = s["comparison"]["choreography_x_orchestration"]
        lines.append(f"  goal: choreography >= orchestration in sagas/s ({common.fmt(cmp_['throughput'], '.2f')}x: {common.verdict(None if cmp_['throughput'] is None else cmp_['throughput'] >= 1)}) "
                     f"and unsaturated p50 <= orchestration's ({common.fmt(cmp_['unsat_p50'], '.2f')}x: {common.verdict(None if cmp_['unsat_p50'] is None else cmp_['unsat_p50'] <= 1)})")
    if "2pc" in modes:
        p50 = s["2pc"]["unsat"]["latency"]["p50_ms"]
        lines.append(f"  goal: 2pc unsaturated p50 < {UNSAT_P50_GOAL_2PC_MS:.0f} ms: {common.fmt(p50, ',.1f')} ms: "
                     f"{common.verdict(None if p50 is None else p50 < UNSAT_P50_GOAL_2PC_MS)}")
    lines.append(f"  final states: {results.get('final_states')}  all COMPLETED/APPROVED: {results.get('all_completed')}")
    if "orchestration" in modes:
        o = s["orchestration"]
        lines.append(f"  orchestration: steps retried (sat/unsat) {o['sat']['steps_retried']}/{o['unsat']['steps_retried']}; saga log events {o['sat'].get('saga_log_events')}")
    verify = results.get("verify") or {}
    lines.append(f"  manage.py verify: exit {verify.get('exit')}: {verify.get('summary')}")

    for mode in modes:
        m = s[mode]
        lines.append("")
        lines.append(f"  {mode}: where the time goes, ms (database timestamps)")
        lines.append(f"  {'segment':<78} {'unsat p50':>10} {'sat p50':>10} {'sat p99':>10}")
        for key in m["unsat"]["segments"]:
            u, t = m["unsat"]["segments"].get(key, {}), m["sat"]["segments"].get(key, {})
            lines.append(f"  {key:<78} {common.fmt(u.get('p50_ms'), ',.1f'):>10} {common.fmt(t.get('p50_ms'), ',.1f'):>10} {common.fmt(t.get('p99_ms'), ',.1f'):>10}")
        if mode == "2pc":
            lines.append("  coordinator log, per phase: duration (at - started_at) and the gap before it (from the previous phase's at), median ms")
            lines.append(f"  {'phase':<20} {'unsat dur':>10} {'unsat gap':>10} {'sat dur':>10} {'sat gap':>10}   the gap before it holds")
            holds = {"work customers": "begin's COMMIT, re-reading the record", "decision": "(its row is written at the decision's commit, after 'at')",
                     "commit orders": "the decision's INSERT + UPDATE + COMMIT", "end": "", "work orders": "", "prepare orders": "",
                     "prepare customers": "", "commit customers": ""}
            for name in TWO_PC_PHASES:
                u, t = m["unsat"]["phases"][name], m["sat"]["phases"][name]
                lines.append(f"  {name:<20} {common.fmt(u['duration']['p50_ms'], ',.2f'):>10} {common.fmt(u['gap_before']['p50_ms'], ',.2f'):>10} "
                             f"{common.fmt(t['duration']['p50_ms'], ',.2f'):>10} {common.fmt(t['gap_before']['p50_ms'], ',.2f'):>10}   {holds.get(name, '')}")
            lines.append(f"  {'sum of medians':<20} {common.fmt(m['unsat']['phase_sum_p50_ms'], ',.2f'):>10} {common.fmt(m['unsat']['gap_sum_p50_ms'], ',.2f'):>10} "
                         f"{common.fmt(m['sat']['phase_sum_p50_ms'], ',.2f'):>10} {common.fmt(m['sat']['gap_sum_p50_ms'], ',.2f'):>10}")
            for level in ("unsat", "sat"):
                odd = {k: v for k, v in m[level]["phase_sequences"].items() if k != " > ".join(TWO_PC_PHASES)}
                if odd:
                    lines.append(f"  other phase sequences ({level}, left out above): {odd}")
                    for example in m[level]["odd_examples"][:2]:
                        lines.append(f"    e.g. {'; '.join(example)}")
                others = {k: v for k, v in m[level]["log_rows_by_actor"].items() if not k.endswith(" by coordinator")}
                lines.append(f"  {level}: log rows not by the coordinator {others or 'none'}; sagas.sweep results in the run {m[level].get('sweep_results') or 'none'}")
        lines.append("  worker execution time per task (\"succeeded in\"), saturated run")
        lines.append(f"  {'task':<34} {'count':>7} {'per item':>9} {'p50 ms':>8} {'p99 ms':>8} {'total s':>8} {'share':>6}")
        for name, t in m["sat"]["tasks"]["tasks"].items():
            lines.append(f"  {name:<34} {t['count']:>7} {t['count'] / cfg['n']:>9.2f} {common.fmt(t['p50_ms'], ',.2f'):>8} {common.fmt(t['p99_ms'], ',.1f'):>8} "
                         f"{t['total_s']:>8.2f} {t['share_of_busy'] * 100 if t['share_of_busy'] is not None else 0:>5.0f}%")
        lines.append("  relay and subscriber runs by argument (unsat: per item / events per run / empty runs;  sat: the same)")
        for key in sorted(set(m["unsat"]["kernel_tasks"]) | set(m["sat"]["kernel_tasks"])):
            u, t = m["unsat"]["kernel_tasks"].get(key, {}), m["sat"]["kernel_tasks"].get(key, {})
            lines.append(f"  {key:<52} {common.fmt(u.get('runs_per_item'), '.2f'):>6} {common.fmt(u.get('events_per_run'), '.1f'):>7} {u.get('empty_runs', 0):>5}   "
                         f"{common.fmt(t.get('runs_per_item'), '.2f'):>6} {common.fmt(t.get('events_per_run'), '.1f'):>7} {t.get('empty_runs', 0):>5}  "
                         f"p50 {common.fmt(t.get('p50_ms'), ',.1f')} ms")
    if "orchestration" in modes:
        o = s["orchestration"]
        lines.append(f"  {'orchestration hop':<58} {'unsat p50':>10} {'floor u':>10} {'sat p50':>10} {'floor s':>10}")
        names = ["order_create", "reply", "credit_reserve", "reply", "order_approve", "reply"]
        for k in range(1, 7):
            lines.append(f"  {f'hop {k} ({HOP_QUEUES[k - 1]}: {names[k - 1]})':<58} {common.fmt(o['unsat']['hops'].get(str(k), {}).get('p50_ms'), ',.1f'):>10} "
                         f"{common.fmt(floor['unsat']['hops'].get(str(k), {}).get('p50_ms'), ',.1f'):>10} {common.fmt(o['sat']['hops'].get(str(k), {}).get('p50_ms'), ',.1f'):>10} "
                         f"{common.fmt(floor['sat']['hops'].get(str(k), {}).get('p50_ms'), ',.1f'):>10}")
        effect = o["sat"].get("reserve_credit_stream_effect", {})
        lines.append(f"  reserve_credit started->processed, first vs last tenth of the saturated run: "
                     f"{common.fmt(effect.get('first_tenth_p50_ms'), ',.1f')} -> {common.fmt(effect.get('last_tenth_p50_ms'), ',.1f')} ms")
    fl = floor["sat"]["tasks"]
    lines.append(f"  floor run: {sum(t['count'] for t in fl['tasks'].values())} tasks, busy {fl['busy_seconds']} s "
                 f"(p50 {next(iter(fl['tasks'].values()), {}).get('p50_ms')} ms per no-op hop)")
    lines.append("")
    lines.append("  CPU ms per order / per chain (saturated runs, /proc), and busy cores over the run")
    first = s[modes[0]]["sat"]["cpu_ms_per_item"]
    comps = list(first)
    lines.append("  " + f"{'':<14}" + "".join(f"{c:>16}" for c in comps) + f"{'busy cores':>12}")
    for label, part in [*((m, s[m]["sat"]) for m in modes), ("floor", floor["sat"])]:
        per = part["cpu_ms_per_item"]
        lines.append("  " + f"{label:<14}" + "".join(f"{common.fmt(per.get(c), ',.2f'):>16}" for c in comps) + f"{common.fmt(part['system_cpu'].get('busy_cores'), '.2f'):>12}")
    lines.append("")
    lines.append("  What each costs per order in PostgreSQL (saturated runs; less the bench client's own statements and the idle background:")
    bg = s.get("postgres_background", {})
    lines.append(f"  {bg.get('per_second', {})} per second over {bg.get('seconds')} s idle); statements: {s.get('postgres_statements')}")
    kinds = [*modes, "floor"]
    parts = {k: (s[k] if k != "floor" else floor)["sat"].get("postgres", {}) for k in kinds}
    lines.append(f"  {'commits (xact_commit) per order':<34}" + "".join(f"{k:>14}" for k in kinds))
    for name in (results.get("databases") or {}).values():
        lines.append(f"  {'  ' + name:<34}" + "".join(f"{common.fmt(parts[k].get('per_db', {}).get(name, {}).get('per_order', {}).get('xact_commit'), ',.2f'):>14}" for k in kinds))
    for key, label in (("xact_commit", "all six"), ("xact_rollback", "rollbacks"), ("sessions", "new sessions"), ("statements", "statements")):
        lines.append(f"  {label:<34}" + "".join(f"{common.fmt(parts[k].get('per_order', {}).get(key), ',.2f'):>14}" for k in kinds))
    if s.get("postgres_statements") == "pg_stat_statements":
        lines.append("  statements per order by kind (all six databases)")
        by_kind: dict[str, dict[str, float]] = {k: defaultdict(float) for k in kinds}
        for k in kinds:
            for db in parts[k].get("per_db", {}).values():
                for kind, v in db.get("statements_per_order_by_kind", {}).items():
                    by_kind[k][kind] += v or 0
        order = sorted({kind for k in kinds for kind in by_kind[k]}, key=lambda kind: -max(by_kind[k].get(kind, 0) for k in kinds))
        for kind in order:
            if max(abs(by_kind[k].get(kind, 0)) for k in kinds) >= 0.05:
                lines.append(f"  {'  ' + kind:<34}" + "".join(f"{by_kind[k].get(kind, 0):>14.2f}" for k in kinds))
        dealloc = [parts[k].get("statements_dealloc") for k in kinds]
        if any(dealloc):
            lines.append(f"  WARNING: pg_stat_statements evicted entries (dealloc {dealloc}): statement counts are low")
    lines.append(f"  {'Celery task runs per order':<34}" + "".join(f"{k:>14}" for k in kinds))
    for key, label in (("saga_hops", "commands/replies (floor: hops)"), ("relay", "eventlog.relay"), ("subscriber_advance", "subscriber_advance"),
                       ("total", "total"), ("periodic_sweeps_in_run", "beat sweeps in the run (count)")):
        lines.append(f"  {'  ' + label:<34}" + "".join(f"{common.fmt((s[k] if k != 'floor' else floor)['sat']['celery_per_order'].get(key), ',.2f'):>14}" for k in kinds))
    for note in results.get("notes", []):
        lines.append(f"  note: {note}")
    for error in results.get("errors", []):
        lines.append(f"  ERROR: {error}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N=100 and 15 unsaturated orders per mode")
    parser.add_argument("-n", type=int, default=None, help="sagas (and floor chains) in the saturated runs (default 500)")
    parser.add_argument("--unsat", type=int, default=None, help="sagas (and chains) in the unsaturated runs (default 30)")
    parser.add_argument("--threads", type=int, default=8, help="client threads in the saturated runs")
    parser.add_argument("--pool", default="solo", choices=("solo", "prefork", "threads"), help="Celery pool of both workers (default solo; see bench/README.md)")
    parser.add_argument("--concurrency", type=int, default=1, help="pool size per worker (solo is always 1)")
    parser.add_argument("--workers", type=int, default=2, help="Celery worker processes, each consuming all five queues (default 2; bench/scaling.py runs 1, 2 and 4)")
    parser.add_argument("--rate", type=float, default=None, help="diagnostic: pace the saturated runs' submissions at this many per second "
                        "(open loop) instead of as fast as the threads go")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for a saturated run to finish")
    parser.add_argument("--profile", action="store_true", help="also a cProfiled pass of --profile-n sagas (bench/results/profile-sagas.txt)")
    parser.add_argument("--profile-n", type=int, default=200)
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the processes' logs here at the end")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "sagas.json")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated saga modes to run side by side (default: orchestration,choreography,2pc)")
    parser.add_argument("--profile-mode", default="orchestration", choices=MODES, help="the mode the --profile pass runs")
    parser.add_argument("--pg-settle", type=float, default=PG_SETTLE_SECONDS, metavar="SECONDS",
                        help=f"idle seconds before each read of pg_stat_database (default {PG_SETTLE_SECONDS:g}: PostgreSQL 15 may hold a backend's counters 10 s)")
    parser.add_argument("--wake-coalesce", type=float, default=None, metavar="SECONDS",
                        help=f"diagnostic: WAKE_COALESCE_SECONDS for every process (default: the settings', {DEFAULT_WAKE_COALESCE_SECONDS})")
    parser.add_argument("--wake-by-type", action="store_true",
                        help="diagnostic of a proposed change: the relay task wakes only the subscribers that take a type it relayed (bench/noop_tasks.py)")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in args.modes if m not in MODES]
    if unknown or not args.modes:
        parser.error(f"--modes: unknown {unknown}; choose from {', '.join(MODES)}")
    if args.profile and args.profile_mode not in args.modes:
        parser.error("--profile-mode must be one of --modes")
    args.n = args.n or (100 if args.quick else 500)
    args.unsat = args.unsat or (15 if args.quick else 30)
    if args.pool == "solo":
        args.concurrency = 1
    started = time.perf_counter()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "sagas", "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": common.machine_info(),
        "config": {"n": args.n, "unsat": args.unsat, "threads": args.threads, "pool": args.pool, "concurrency": args.concurrency,
                   "workers": args.workers, "queues": list(QUEUES), "gunicorn_workers": 2, "settings": SETTINGS, "order_total": ORDER_TOTAL,
                   "credit_limit": CREDIT_LIMIT, "floor_hop_queues": HOP_QUEUES, "warmup": 20, "rate": args.rate, "quick": args.quick, "profile": args.profile,
                   "modes": args.modes, "wake_coalesce_seconds": args.wake_coalesce if args.wake_coalesce is not None else DEFAULT_WAKE_COALESCE_SECONDS,
                   "wake_by_type": args.wake_by_type},
        "goals": [f"sagas/s >= {THROUGHPUT_GOAL:.0f} (each mode)", f"unsaturated p50 < {UNSAT_P50_GOAL_MS:.0f} ms (each mode)",
                  "choreography sagas/s >= orchestration's", "choreography unsaturated p50 <= orchestration's",
                  f"2pc unsaturated p50 < {UNSAT_P50_GOAL_2PC_MS:.0f} ms (the POST's round trip)"],
        "errors": [], "notes": [],
    }
    # The load average lags (it still counts a run that just ended): sample the CPU for 2 s instead.
    meter = common.CpuMeter()
    time.sleep(2)
    busy = meter.stop()["busy_cores"]
    results["busy_cores_before"] = busy
    progress(f"saga bench: modes {','.join(args.modes)}, N={args.n}, unsaturated {args.unsat}, {args.threads} threads, {args.workers} workers, --pool {args.pool} --concurrency {args.concurrency}; "
             f"busy cores over the 2 s before: {busy}")
    if busy is not None and busy > 0.2:
        results["notes"].append(f"{busy} cores were busy in the 2 s before the run: something else was using the CPU")
    run(args, results)
    s = results.get("summary")
    if s:
        goals: list[dict[str, Any]] = []
        for mode in args.modes:
            tput, p50 = s[mode]["sat"]["throughput_per_s"], s[mode]["unsat"]["latency"]["p50_ms"]
            goals.append({"goal": f"{mode}: {results['goals'][0]}", "value": tput, "pass": None if tput is None else tput >= THROUGHPUT_GOAL})
            goals.append({"goal": f"{mode}: {results['goals'][1]}", "value": p50, "pass": None if p50 is None else p50 < UNSAT_P50_GOAL_MS})
        if "2pc" in args.modes:
            p50 = s["2pc"]["unsat"]["latency"]["p50_ms"]
            goals.append({"goal": results["goals"][4], "value": p50, "pass": None if p50 is None else p50 < UNSAT_P50_GOAL_2PC_MS})
        if "choreography_x_orchestration" in s["comparison"]:
            cmp_ = s["comparison"]["choreography_x_orchestration"]
            goals.append({"goal": results["goals"][2], "value": cmp_["throughput"], "pass": None if cmp_["throughput"] is None else cmp_["throughput"] >= 1})
            goals.append({"goal": results["goals"][3], "value": cmp_["unsat_p50"], "pass": None if cmp_["unsat_p50"] is None else cmp_["unsat_p50"] <= 1})
        results["goal_results"] = goals
    results["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(render(results))
    progress(f"done in {results['elapsed_seconds']:.0f}s; results in {args.output}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
