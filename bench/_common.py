"""Helpers shared by bench/replay.py and bench/query.py (bench/append.py keeps its own copies,
but for :func:`count_pg_round_trips`).

* process plumbing: progress logging, child workers, ``manage.py``, the private PostgreSQL +
  Redis of ``scripts/services.sh``, the embedded broker of ``config.launcher.Stack``;
* a synthetic event history (:func:`generate_history`) in the payload shapes of
  ``customers/domain.py`` and ``orders/domain.py``, with the read-model rows a replay of it
  must produce, and :func:`log_insert` / :func:`readmodels_compare` to use them inside a
  Django process.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import random
import shlex
import sqlite3
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

BASE_DIR = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SERVICES_SCRIPT = BASE_DIR / "scripts" / "services.sh"


def services_dir(suffix: str = "") -> Path:
    """Where a bench keeps its private PostgreSQL + Redis: ``$BENCH_SERVICES_DIR`` (default
    ``/tmp/bench-services``) plus ``suffix``, so two worktrees' runs never share or stop each
    other's servers (``BENCH_SERVICES_DIR=/tmp/me-bench make bench``)."""
    return Path(os.environ.get("BENCH_SERVICES_DIR", "/tmp/bench-services") + suffix)


# =========================================================================================
# Process plumbing (parent side)
# =========================================================================================


def log(message: str, *, prefix: str = "bench") -> None:
    print(f"[{prefix} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def base_env() -> dict[str, str]:
    """The caller's environment without any database URL (SQLite unless we add them back)."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL") and not k.startswith("POSTGRES_")}
    for key in ("CACHE_URL", "REDIS_URL"):
        env.pop(key, None)
    env["DJANGO_SETTINGS_MODULE"] = "config.settings"
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("LOG_LEVEL", "WARNING")
    env["DJANGO_DEBUG"] = "false"  # DEBUG would keep every query in memory
    env.setdefault("DJANGO_LOCAL_HTTP", "true")  # gunicorn on plain http://127.0.0.1 (config/settings.py)
    return env


def manage(args: list[str], env: dict[str, str], *, timeout: float = 600) -> str:
    completed = subprocess.run([sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}")
    return completed.stdout


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("export "):
            for token in shlex.split(line[len("export "):]):
                key, _, value = token.partition("=")
                values[key] = value
    return values


def services_start(directory: Path) -> tuple[dict[str, str] | None, str | None]:
    """``scripts/services.sh start DIR``: (the exported variables, None) or (None, the error)."""
    try:
        started = subprocess.run(["bash", str(SERVICES_SCRIPT), "start", str(directory)], cwd=BASE_DIR,
                                 capture_output=True, text=True, timeout=600, check=False)
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if started.returncode != 0:
        return None, f"services.sh start exited {started.returncode}: {started.stderr.strip()[-1500:]}"
    try:
        return read_env_file(Path(started.stdout.strip().splitlines()[-1])), None
    except Exception as exc:
        return None, f"cannot read the env file services.sh printed ({started.stdout!r}): {exc}"


def services_stop(directory: Path) -> int:
    stopped = subprocess.run(["bash", str(SERVICES_SCRIPT), "stop", str(directory)], cwd=BASE_DIR,
                             capture_output=True, text=True, timeout=300, check=False)
    return stopped.returncode


def embedded_broker(run_dir: Path) -> tuple[Any, str]:
    """The embedded redis-server of ``config.launcher.Stack`` on a unix socket: (stack, url)."""
    sys.path.insert(0, str(BASE_DIR))
    from config.launcher import Stack

    stack = Stack(run_dir=run_dir, echo=False)
    url = stack.start_embedded_broker()
    stack.wait_ready(["broker"], timeout=30)
    return stack, url


def run_worker(script: Path, kind: str, params: dict[str, Any], env: dict[str, str], out: Path, *, timeout: float) -> dict[str, Any]:
    """Run ``script --_worker KIND`` in a child process; its JSON result (or {"error": ...})."""
    argv = [sys.executable, str(script), "--_worker", kind, "--_params", json.dumps(params), "--_out", str(out)]
    out.unlink(missing_ok=True)
    try:
        subprocess.run(argv, cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f}s"}
    if not out.exists():
        return {"error": "the worker died without a result (see stderr above)"}
    return json.loads(out.read_text())


def machine_info() -> dict[str, Any]:
    cpu, memory = "?", None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    versions = {}
    from importlib.metadata import version

    for package in ("django", "djangorestframework", "psycopg", "redis", "gunicorn"):
        try:
            versions[package] = version(package)
        except Exception:
            versions[package] = None
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "memory": memory,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version, "packages": versions}


class CpuMeter:
    """System-wide CPU use over an interval (/proc/stat), to tell whether something else ran."""

    def __init__(self) -> None:
        self.start = self._read()
        self.load_start = self._loadavg()

    @staticmethod
    def _read() -> tuple[int, int]:
        try:
            fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        except OSError:
            return 0, 0
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields[:8]), idle

    @staticmethod
    def _loadavg() -> float | None:
        try:
            return float(Path("/proc/loadavg").read_text().split()[0])
        except OSError:
            return None

    def stop(self) -> dict[str, Any]:
        total0, idle0 = self.start
        total1, idle1 = self._read()
        span = total1 - total0
        busy = (span - (idle1 - idle0)) / span * (os.cpu_count() or 1) if span > 0 else None
        busy_seconds = (span - (idle1 - idle0)) / os.sysconf("SC_CLK_TCK")
        return {"busy_cores": None if busy is None else round(busy, 2), "busy_cpu_seconds": round(busy_seconds, 2), "cores": os.cpu_count(),
                "loadavg_1m_before": self.load_start, "loadavg_1m_after": self._loadavg()}


def fmt(value: float | None, spec: str = ",.0f") -> str:
    return "n/a" if value is None else format(value, spec)


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "MISS")


# =========================================================================================
# The synthetic history
# =========================================================================================

CENT = Decimal("0.01")
COUNTERS = {"PENDING": "orders_pending", "APPROVED": "orders_approved", "REJECTED": "orders_rejected",
            "CANCEL_PENDING": "orders_cancel_pending", "CANCELLED": "orders_cancelled"}
CREDIT_LIMITS = ("2500.00", "5000.00", "10000.00", "25000.00")
MODES = (("orchestration", 0.6), ("choreography", 0.3), ("2pc", 0.1))
# What happens to an order after its credit decision (when the credit was reserved).
PLANS = (("approve", 0.70), ("stay_pending", 0.03), ("cancel", 0.17), ("cancel_revert", 0.06), ("stay_cancel_pending", 0.04))


def generate_history(n_events: int, *, seed: int = 20250101, window: int = 64, new_customer_share: float = 0.05,
                     start: dt.datetime | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``n_events`` log rows (dicts with eventlog.relay.LOG_COLUMNS) and the read models they fold into.

    The history is what the services would record: customers are created over time, each order
    is created, then its customer reserves credit for it (``CreditReserved``) or refuses
    (``CreditReservationFailed``, then ``OrderRejected``); a reserved order is approved, and some
    are then cancelled (``OrderCancelRequested``, ``CreditReleased``, ``OrderCancelled``) or have
    their cancel reverted (``OrderCancelReverted``); a few stay PENDING or CANCEL_PENDING. About
    ``window`` orders are in flight at once, so the steps of many orders interleave in the log,
    as concurrent sagas would. Versions run 1..n per stream; the list order is the log order.

    The expected rows (``expected["orders"]``, ``["customers"]``, ``["names"]``,
    ``["order_states"]``) are computed with the projections' own rules, independently of them.
    """
    rng = random.Random(seed)
    t0 = start or dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    events: list[dict[str, Any]] = []
    versions: dict[uuid.UUID, int] = {}
    customers: dict[uuid.UUID, dict[str, Any]] = {}
    customer_ids: list[uuid.UUID] = []
    orders: dict[uuid.UUID, dict[str, Any]] = {}
    order_states: dict[uuid.UUID, dict[str, Any]] = {}
    names: dict[uuid.UUID, str] = {}
    inflight: list[uuid.UUID] = []
    steps: dict[uuid.UUID, list[str]] = {}
    meta: dict[uuid.UUID, dict[str, Any]] = {}  # per order: correlation, saga, plan, last event id
    u = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)  # noqa: E731  (reproducible uuid4s)
    mode_names, mode_weights = zip(*MODES, strict=False)
    plan_names, plan_weights = zip(*PLANS, strict=False)

    def emit(stream_id: uuid.UUID, stream_type: str, type_: str, data: dict[str, Any], *, correlation_id: uuid.UUID,
             causation_id: uuid.UUID | None, saga_id: uuid.UUID | None) -> dict[str, Any]:
        version = versions.get(stream_id, 0) + 1
        versions[stream_id] = version
        row = {"event_id": u(), "stream_id": stream_id, "stream_type": stream_type, "version": version, "type": type_, "data": data,
               "occurred_at": t0 + dt.timedelta(milliseconds=len(events)), "correlation_id": correlation_id,
               "causation_id": causation_id, "saga_id": saga_id}
        events.append(row)
        return row

    def count(customer_id: uuid.UUID, state: str, delta: int) -> None:
        customers[customer_id][COUNTERS[state]] += delta

    def order_event(order_id: uuid.UUID, type_: str, data: dict[str, Any], state: str) -> None:
        m = meta[order_id]
        row = emit(order_id, "Order", type_, data, correlation_id=m["correlation_id"], causation_id=m["last"], saga_id=m["saga_id"])
        m["last"] = row["event_id"]
        order = orders[order_id]
        previous = order["state"]
        order.update(state=state, version=row["version"], updated_at=row["occurred_at"])
        if type_ == "OrderRejected":
            order["rejection_reason"] = data["reason"]
        order_states[order_id]["state"] = state
        count(order["customer_id"], previous, -1)
        count(order["customer_id"], state, +1)

    def customer_event(customer_id: uuid.UUID, type_: str, data: dict[str, Any], order_id: uuid.UUID) -> None:
        m = meta[order_id]
        row = emit(customer_id, "Customer", type_, data, correlation_id=m["correlation_id"], causation_id=m["last"], saga_id=m["saga_id"])
        m["last"] = row["event_id"]
        c = customers[customer_id]
        if type_ == "CreditReserved":
            c["credit_reserved"] += Decimal(data["amount"])
        elif type_ == "CreditReleased":
            c["credit_reserved"] -= Decimal(data["amount"])
        c.update(available_credit=c["credit_limit"] - c["credit_reserved"], version=row["version"], updated_at=row["occurred_at"])

    def new_customer() -> uuid.UUID:
        customer_id = u()
        name = f"Customer {len(customer_ids) + 1:06d}"
        limit = rng.choice(CREDIT_LIMITS)
        row = emit(customer_id, "Customer", "CustomerCreated", {"name": name, "credit_limit": limit},
                   correlation_id=u(), causation_id=None, saga_id=None)
        customers[customer_id] = {"id": customer_id, "name": name, "credit_limit": Decimal(limit), "credit_reserved": Decimal("0.00"),
                                  "available_credit": Decimal(limit), "version": 1, "updated_at": row["occurred_at"],
                                  **{counter: 0 for counter in COUNTERS.values()}}
        names[customer_id] = name
        customer_ids.append(customer_id)
        return customer_id

    def new_order() -> None:
        if not customer_ids or rng.random() < new_customer_share:
            new_customer()
            if len(events) >= n_events:
                return
        customer_id = customer_ids[min(int(rng.paretovariate(1.2)) - 1, len(customer_ids) - 1) if rng.random() < 0.2 else rng.randrange(len(customer_ids))]
        order_id = u()
        mode = rng.choices(mode_names, mode_weights)[0]
        total = (Decimal(rng.randint(500, 25000)) * CENT).quantize(CENT)
        meta[order_id] = {"correlation_id": u(), "saga_id": u() if mode == "orchestration" else None, "last": None,
                          "plan": rng.choices(plan_names, plan_weights)[0], "total": total, "customer_id": customer_id}
        m = meta[order_id]
        row = emit(order_id, "Order", "OrderCreated", {"customer_id": str(customer_id), "total": str(total), "mode": mode},
                   correlation_id=m["correlation_id"], causation_id=None, saga_id=m["saga_id"])
        m["last"] = row["event_id"]
        orders[order_id] = {"id": order_id, "customer_id": customer_id, "customer_name": names[customer_id], "total": total,
                            "state": "PENDING", "rejection_reason": None, "mode": mode, "saga_id": m["saga_id"], "version": 1,
                            "created_at": row["occurred_at"], "updated_at": row["occurred_at"]}
        order_states[order_id] = {"order_id": order_id, "customer_id": customer_id, "state": "PENDING"}
        count(customer_id, "PENDING", +1)
        steps[order_id] = ["reserve"]
        inflight.append(order_id)

    def advance(order_id: uuid.UUID) -> None:
        m = meta[order_id]
        step = steps[order_id].pop(0)
        customer_id, total, amount = m["customer_id"], m["total"], str(m["total"])
        if step == "reserve":
            if m["plan"] == "stay_pending":
                return  # the saga never got further (still in flight when the history ends)
            if customers[customer_id]["available_credit"] >= total:
                customer_event(customer_id, "CreditReserved", {"order_id": str(order_id), "amount": amount}, order_id)
                steps[order_id] = ["approve"] + {"cancel": ["cancel_request", "release", "cancelled"], "cancel_revert": ["cancel_request", "revert"],
                                                 "stay_cancel_pending": ["cancel_request"]}.get(m["plan"], [])
            else:
                customer_event(customer_id, "CreditReservationFailed", {"order_id": str(order_id), "amount": amount, "reason": "INSUFFICIENT_CREDIT"}, order_id)
                steps[order_id] = ["reject"]
        elif step == "approve":
            order_event(order_id, "OrderApproved", {}, "APPROVED")
        elif step == "reject":
            order_event(order_id, "OrderRejected", {"reason": "INSUFFICIENT_CREDIT"}, "REJECTED")
        elif step == "cancel_request":
            order_event(order_id, "OrderCancelRequested", {}, "CANCEL_PENDING")
        elif step == "release":
            customer_event(customer_id, "CreditReleased", {"order_id": str(order_id), "amount": amount}, order_id)
        elif step == "cancelled":
            order_event(order_id, "OrderCancelled", {}, "CANCELLED")
        elif step == "revert":
            order_event(order_id, "OrderCancelReverted", {}, "APPROVED")

    while len(events) < n_events:
        if len(inflight) < window and (not inflight or rng.random() < 0.35):
            new_order()
            continue
        index = rng.randrange(len(inflight))
        order_id = inflight[index]
        advance(order_id)
        if not steps[order_id]:
            inflight[index] = inflight[-1]
            inflight.pop()

    expected = {"orders": orders, "customers": customers, "names": names, "order_states": order_states}
    return events, expected


def history_summary(events: list[dict[str, Any]], expected: dict[str, Any]) -> dict[str, Any]:
    by_type: dict[str, int] = {}
    for event in events:
        by_type[event["type"]] = by_type.get(event["type"], 0) + 1
    by_state: dict[str, int] = {}
    for order in expected["orders"].values():
        by_state[order["state"]] = by_state.get(order["state"], 0) + 1
    return {"events": len(events), "events_by_type": dict(sorted(by_type.items())), "customers": len(expected["customers"]),
            "orders": len(expected["orders"]), "orders_by_state": dict(sorted(by_state.items()))}


# =========================================================================================
# Inside a Django process
# =========================================================================================


def django_setup() -> None:
    sys.path.insert(0, str(BASE_DIR))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def log_insert(events: list[dict[str, Any]], *, chunk: int = 10_000) -> float:
    """Append the history to the central log with ``eventlog.relay.log_append`` (the relay's own
    append: serialised, ``ON CONFLICT DO NOTHING``), ``chunk`` rows per transaction; seconds taken."""
    from eventlog.relay import log_append

    started = time.perf_counter()
    for offset in range(0, len(events), chunk):
        log_append(events[offset : offset + chunk])
    return time.perf_counter() - started


def readmodel_tables() -> list[Any]:
    from readmodels.projections import PROJECTIONS

    return [model for projection in PROJECTIONS.values() for model in projection.tables]


def readmodels_empty(*, checkpoints: bool = True) -> None:
    """Empty every read-model table (and the projections' checkpoints)."""

    from readmodels.models import ProjectionCheckpoint

    models = readmodel_tables() + ([ProjectionCheckpoint] if checkpoints else [])
    tables_empty("readmodels", [m._meta.db_table for m in models])


def tables_empty(alias: str, tables: list[str], *, restart_identity: bool = False) -> None:
    from django.db import connections

    connection = connections[alias]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(quote(t) for t in tables)}{' RESTART IDENTITY' if restart_identity else ''}")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {quote(table)}")
            if restart_identity:
                cursor.execute(f"DELETE FROM sqlite_sequence WHERE name IN ({', '.join('?' * len(tables))})", tables)


def readmodels_compare(expected: dict[str, Any], *, examples: int = 5) -> dict[str, Any]:
    """Compare every live read-model row with the expected rows: counts and every column."""
    from readmodels.models import CustomerCredit, CustomerName, CustomerOrderState, OrderSummary

    checks = (
        (OrderSummary, expected["orders"]),
        (CustomerCredit, expected["customers"]),
        (CustomerName, {k: {"id": k, "name": v} for k, v in expected["names"].items()}),
        (CustomerOrderState, expected["order_states"]),
    )
    result: dict[str, Any] = {"ok": True, "tables": {}}
    for model, wanted in checks:
        fields = [f.attname for f in model._meta.local_fields]
        actual = {row[model._meta.pk.attname]: row for row in model.objects.using("readmodels").values(*fields)}
        missing = [str(k) for k in wanted.keys() - actual.keys()]
        extra = [str(k) for k in actual.keys() - wanted.keys()]
        differ = []
        for key in wanted.keys() & actual.keys():
            want, got = wanted[key], actual[key]
            diffs = [f for f in fields if _norm(want.get(f)) != _norm(got.get(f))]
            if diffs:
                differ.append(f"{key}: " + ", ".join(f"{f} {got.get(f)!r} != {want.get(f)!r}" for f in diffs[:3]))
        ok = not (missing or extra or differ)
        result["ok"] &= ok
        result["tables"][model._meta.db_table] = {"expected": len(wanted), "actual": len(actual), "missing": len(missing), "extra": len(extra),
                                                  "differ": len(differ), "examples": (missing + extra + differ)[:examples]}
    return result


def _norm(value: Any) -> Any:
    if isinstance(value, Decimal):
        return value.quantize(CENT)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.UTC)
    return value


def count_pg_round_trips(raw: Any, add: Any) -> Any:
    """Count the exchanges of a psycopg connection with its server into ``add(n)``; returns the
    undo. Every ``Connection.wait`` is one (a statement, a COMMIT), and so is the BEGIN that
    psycopg sends on its own before the first statement of a transaction, inside that
    statement's wait. Instance attributes, so nothing else is touched."""
    wait, exec_command = raw.wait, raw._exec_command

    def counting_wait(*args: Any, **kwargs: Any) -> Any:
        add(1)
        return wait(*args, **kwargs)

    def counting_exec_command(command: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(command, bytes) and command.lstrip().upper().startswith(b"BEGIN"):  # psycopg's own, always bytes
            add(1)
        return exec_command(command, *args, **kwargs)

    raw.wait, raw._exec_command = counting_wait, counting_exec_command

    def undo() -> None:
        del raw.wait, raw._exec_command

    return undo
