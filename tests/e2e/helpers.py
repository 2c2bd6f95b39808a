"""What the end-to-end tests share: an API client on the real gunicorn, and the final checks."""

from __future__ import annotations

import json
import sqlite3
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from config.launcher import Stack
from config.verify import CHECKS
from tests.conftest import eventually

TERMINAL_SAGA = ("COMPLETED", "COMPENSATED", "FAILED")


class Api:
    def __init__(self, base_url: str) -> None:
        user = get_user_model().objects.create_user("saga-tester", password="x" * 16)
        self.token = Token.objects.create(user=user).key
        self.base_url = base_url

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.base_url + path, method=method, data=json.dumps(body).encode() if body is not None else None)
        request.add_header("Authorization", f"Token {self.token}")
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _json(error.read())

    def customer(self, limit: str) -> str:
        status, body = self.call("POST", "/api/customers/", {"name": "Ada", "credit_limit": limit})
        assert status == 201, body
        return str(body["id"])

    def order(self, customer_id: str, total: str, **headers: str) -> dict[str, Any]:
        status, body = self.call("POST", "/api/orders/", {"customer_id": customer_id, "total": total}, headers)
        assert status == 202, body
        return body

    def settled_order(self, order_id: str, *, states: tuple[str, ...] = ("APPROVED", "REJECTED", "CANCELLED"), timeout: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status, body = self.call("GET", f"/api/orders/{order_id}/")
            return body if status == 200 and body["state"] in states else None

        return eventually(probe, timeout=timeout, interval=0.2, message=f"order {order_id} to reach {states}")

    def settled_saga(self, saga_id: str, timeout: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status, body = self.call("GET", f"/api/sagas/{saga_id}/")
            return body if status == 200 and body["state"] in TERMINAL_SAGA else None

        return eventually(probe, timeout=timeout, interval=0.2, message=f"saga {saga_id} to settle")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return {"unparsed": raw[:2000].decode(errors="replace")}


def assert_verify_passes() -> None:
    out = StringIO()
    # Projections catch up within the sweep; verify compares them with a replay at their position.
    call_command("relay_outbox", "--advance", stdout=StringIO())
    call_command("verify", stdout=out)
    assert f"All {len(CHECKS)} invariant checks passed." in out.getvalue(), out.getvalue()


def credit(api: Api, customer_id: str, *, reserved: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status, body = api.call("GET", f"/api/customers/{customer_id}/")
        return body if status == 200 and body["credit_reserved"] == reserved else None

    return eventually(probe, timeout=30, interval=0.2, message=f"customer {customer_id} to show {reserved} reserved")


# --- messages by hand, and proof that a worker ran them ------------------------------------


def step_message(step: Any) -> dict[str, Any]:
    """The command message of a saga step, rebuilt from its row (``sagas_sagastep``), as an
    operator re-sends one by hand: same command id, the step's current attempt, and for a
    compensation the command id of the forward step it undoes."""
    compensates = None
    if step.kind == "compensation":
        forward = type(step).objects.using("sagas").filter(saga_id=step.saga_id, index=step.index, kind="forward").values_list("command_id", flat=True).first()
        compensates = str(forward) if forward else None
    return {
        "command_id": str(step.command_id),
        "name": step.command,
        "payload": step.payload,
        "saga_id": str(step.saga_id),
        "correlation_id": str(step.saga_id),
        "reply_to": "sagas.saga_reply",
        "step": step.name,
        "attempt": step.attempts,
        "compensates": compensates,
    }


def step_reply(step: Any) -> dict[str, Any]:
    """The participant's reply to a step, again, from the row that recorded it."""
    assert step.reply is not None, f"step {step} has no recorded reply"
    return {"command_id": str(step.command_id), "saga_id": str(step.saga_id), "step": step.name, "attempt": step.attempts, **step.reply}


def send_by_name(name: str, message: dict[str, Any]) -> str:
    """Send a task through the broker as the system does (routed to its context's queue); its id."""
    from config.celery_app import app

    return str(app.send_task(name, args=(message,)).id)


def task_outcome(stack: Stack, queue: str, task_id: str) -> str | None:
    """What the ``queue`` worker's log says task ``task_id`` returned, once it has finished.

    The workers run at ``--loglevel INFO`` (config.launcher), where Celery's tracer logs
    ``Task <name>[<id>] succeeded in <s>s: <repr of the result>`` after the task returns: a
    positive sign that the message was delivered and handled to its end. A task that raised
    fails the test at once.
    """
    assert stack.log_dir is not None
    path = stack.log_dir / f"worker-{queue}.log"
    if not path.exists():
        return None
    for line in path.read_text(errors="replace").splitlines():
        if f"[{task_id}] succeeded in " in line:
            return line.rsplit("s: ", 1)[-1].strip().strip("'\"")
        if f"[{task_id}] raised" in line:
            raise AssertionError(f"task {task_id} failed in worker-{queue}: {line}")
    return None


def wait_task(stack: Stack, queue: str, task_id: str, *, timeout: float = 60) -> str:
    return eventually(lambda: task_outcome(stack, queue, task_id), timeout=timeout, interval=0.1, message=f"task {task_id} to finish in worker-{queue}")


def sagas_queue_drained(stack: Stack) -> None:
    """Every message queued on ``sagas`` before this call has been handled: the queue is FIFO
    and its one worker takes one message at a time, so once a sweep sent now has finished,
    everything ahead of it (the replies that duplicates caused) has finished too."""
    from config.celery_app import app

    wait_task(stack, "sagas", str(app.send_task("sagas.sweep").id), timeout=60)


def log_mentions(stack: Stack, process: str, needle: str) -> bool:
    assert stack.log_dir is not None
    path = stack.log_dir / f"{process}.log"
    return path.exists() and needle in path.read_text(errors="replace")


def snapshot() -> dict[str, Any]:
    """Everything a command or a reply could change, in every context (for "nothing changed")."""
    from customers.models import CreditReservation, CustomerEvent
    from customers.models import Customer as CustomerRow
    from orders.models import Order, OrderEvent
    from sagas.models import SagaInstance, SagaStep

    return {
        "order events": sorted(map(str, OrderEvent.objects.using("orders").values_list("event_id", flat=True))),
        "customer events": sorted(map(str, CustomerEvent.objects.using("customers").values_list("event_id", flat=True))),
        "orders": sorted(map(str, Order.objects.using("orders").values_list("id", "state", "rejection_reason", "version"))),
        "customers": sorted(map(str, CustomerRow.objects.using("customers").values_list("id", "credit_reserved", "version"))),
        "reservations": sorted(map(str, CreditReservation.objects.using("customers").values_list("order_id", "amount"))),
        "sagas": sorted(map(str, SagaInstance.objects.using("sagas").values_list("id", "state", "version"))),
        "steps": sorted(map(str, SagaStep.objects.using("sagas").values_list("id", "kind", "status", "attempts", "command_id"))),
    }


# --- a context's database made unreachable, or one participant blocked, for real ----------


class DatabaseOutage:
    """The database of ``alias`` refuses the system's processes, for real, until ``end()``.

    PostgreSQL (what a failover looks like from a client: new connections refused, open ones
    ended): ``ALTER DATABASE <name> WITH ALLOW_CONNECTIONS false``, then every backend on it is
    ended with ``pg_terminate_backend``, again every half second for the whole outage (a
    connection that raced the ALTER is ended too). Both run on a connection of their own to
    the ``postgres`` database, as the test tier's role, which owns the test databases (it
    created them: ``scripts/services.sh`` gives it CREATEDB) and may signal its own backends;
    no superuser is needed. Workers then see ``database "..." is not currently accepting
    connections`` on every connect.

    SQLite: the test process takes the database file's write lock (``BEGIN IMMEDIATE`` on a
    connection of its own) and holds it. In WAL mode readers never wait for a writer, so reads
    still work, but every write is refused: each command handler and the relay open an
    IMMEDIATE transaction, wait their busy timeout (30 s) and fail with ``OperationalError:
    database is locked``. (An exclusive lock that refuses readers too, ``PRAGMA
    locking_mode=EXCLUSIVE``, cannot be taken while any other process keeps the file open in
    WAL mode, which the workers always do while they work: it starves.) Every piece of work of
    the context needs a write, so for the system the context is down.

    ``refusal`` is the text a refused worker logs.
    """

    def __init__(self, alias: str) -> None:
        from django.db import connections

        self.alias = alias
        self.settings = connections[alias].settings_dict
        self.vendor = connections[alias].vendor
        self.refusal = "is not currently accepting connections" if self.vendor == "postgresql" else "database is locked"
        self.terminated = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._admin: Any = None
        self._lock: sqlite3.Connection | None = None
        connections[alias].close()  # this process's own connection must not hold the file, nor be ended mid-query

    def begin(self) -> DatabaseOutage:
        if self.vendor == "postgresql":
            import psycopg
            from psycopg import sql

            self._admin = psycopg.connect(**self._conninfo("postgres"), autocommit=True)
            self._admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(self.settings["NAME"])))
            self._terminate()
            self._thread = threading.Thread(target=self._keep_terminating, name=f"outage-{self.alias}", daemon=True)
            self._thread.start()
        else:
            self._lock = sqlite3.connect(self.settings["NAME"], timeout=60, isolation_level=None, check_same_thread=False)
            self._lock.execute("BEGIN IMMEDIATE")  # waits for a writer that is mid-commit, then holds the lock
        self.assert_refuses()
        return self

    def assert_refuses(self) -> None:
        """A new connection, as a worker opens one, is refused (PostgreSQL) or cannot write (SQLite)."""
        if self.vendor == "postgresql":
            import psycopg

            try:
                psycopg.connect(**self._conninfo(self.settings["NAME"]), connect_timeout=5).close()
            except psycopg.OperationalError as exc:
                assert self.refusal in str(exc), exc
            else:
                raise AssertionError(f"{self.settings['NAME']} still accepts connections")
            return
        probe = sqlite3.connect(self.settings["NAME"], timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            assert self.refusal in str(exc), exc
        else:
            raise AssertionError(f"{self.settings['NAME']} still takes writes")
        finally:
            probe.close()

    def end(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._admin is not None:
            from psycopg import sql

            self._admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(self.settings["NAME"])))
            self._admin.close()
            self._admin = None
        if self._lock is not None:
            self._lock.execute("ROLLBACK")
            self._lock.close()
            self._lock = None

    def _conninfo(self, dbname: str) -> dict[str, Any]:
        s = self.settings
        return {"host": s["HOST"] or "localhost", "port": s["PORT"] or 5432, "user": s["USER"], "password": s["PASSWORD"], "dbname": dbname}

    def _terminate(self) -> None:
        rows = self._admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", [self.settings["NAME"]]
        ).fetchall()
        self.terminated += sum(1 for (ended,) in rows if ended)

    def _keep_terminating(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self._terminate()
            except Exception:  # noqa: BLE001 - the next round tries again; end() reports real trouble
                pass


@contextmanager
def database_unreachable(alias: str) -> Iterator[DatabaseOutage]:
    outage = DatabaseOutage(alias).begin()
    try:
        yield outage
    finally:
        outage.end()


@contextmanager
def customer_locked(customer_id: str) -> Iterator[None]:
    """Commands on this customer block inside their task until the block ends.

    PostgreSQL: the test holds the customer's row ``FOR UPDATE``, which every credit command
    takes first (customers/repository.py). SQLite: the test holds the customers file's write
    lock, which every command takes at the start of its transaction (``transaction_mode
    IMMEDIATE``); a command gives up after its busy timeout (30 s), so keep the block shorter.
    """
    from django.db import connections

    settings = connections["customers"].settings_dict
    if connections["customers"].vendor == "postgresql":
        import psycopg

        s = settings
        with psycopg.connect(host=s["HOST"] or "localhost", port=s["PORT"] or 5432, user=s["USER"], password=s["PASSWORD"], dbname=s["NAME"]) as blocker:
            assert blocker.execute("SELECT id FROM customers_customer WHERE id = %s FOR UPDATE", [customer_id]).fetchone()
            yield
            blocker.rollback()
        return
    blocker = sqlite3.connect(settings["NAME"], timeout=30, isolation_level=None)  # type: ignore[assignment]  # the SQLite branch's connection, under the PostgreSQL branch's name
    try:
        blocker.execute("BEGIN IMMEDIATE")
        yield
        blocker.execute("ROLLBACK")
    finally:
        blocker.close()
