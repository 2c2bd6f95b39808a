"""The fault run: the production processes, on PostgreSQL + Redis, take orders in all three modes
while every fault of brief section 6 is injected for real; then every invariant is checked.

    python -m tests.faults                 # the full form: 1,000 orders, 90 s outages (make faults)
    python -m tests.faults --short         # about 2 minutes: 150 orders, 10 s outages (make faults-short, .ci/run)
    python -m tests.faults --orders 300 --outage-seconds 30

The processes are what production runs (``config.launcher.Stack``, the layout of
``bench/sagas.py``): gunicorn with 2 workers, two Celery workers (prefork, 2 processes each),
each consuming all five queues, and beat, with the production timings (``SAGA_TIME_SCALE`` 1,
10 s step timeouts, the 2 s sweep, the 30 s presumed-abort interval). PostgreSQL and Redis are a
private pair from ``scripts/services.sh`` in a directory of the run's own, wiped first.

While a client places orders at a steady rate (customers with credit for every order, customers
with too little, unknown customers; a share of the approved orders cancelled), the run injects,
one after the other, each fault proven to have happened:

- a Celery worker SIGKILLed (parent and pool) while an orchestrated saga's ``credit_reserve``
  runs in it, a pool child SIGKILLed the same way, and a worker SIGKILLed while a choreography
  handler runs in it: the customer's row is held ``FOR UPDATE`` so that the step blocks inside
  its task, and ``celery inspect active`` shows it executing in that process before the kill;
- Redis restarted (``scripts/services.sh restart-redis``: it keeps nothing, every queued message
  is lost);
- gunicorn SIGKILLed (master and workers, with requests in flight) and started again;
- a real 2PC coordinator process (``tests/e2e/twophase_coordinator.py``) stopped and SIGKILLed at
  each point between its first PREPARE and its last COMMIT PREPARED; nobody runs
  ``resolve_in_doubt`` by hand: the sweep of the running system finishes them, and the run
  measures how long the prepared transactions (and the customer's row lock) were held;
- each context's database unreachable (``tests.e2e.helpers.DatabaseOutage``: new connections
  refused, open ones ended) for ``--outage-seconds``;
- and all along, commands and replies delivered twice and late (the same messages re-sent now
  and with a countdown), subscriber wake-ups twice, and outbox events relayed twice.

Then: every order terminal, ``resolve_in_doubt``, no prepared transaction left, ``manage.py
verify``, each order's outcome against what its customer allowed (a transient fault only
delays), and a last round of duplicate and late deliveries that must change nothing. It prints a
table and writes the same to ``bench/results/faults.json`` (``faults-short.json``). Exit 0 only
if every fault was injected and proven, every order was placed, and there is no violation.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.services import env_file

if TYPE_CHECKING:
    # What `celery inspect active` answers per task: a TypedDict of celery-types' stubs only.
    from celery.app.control import _TaskInfo as TaskInfo

ROOT = Path(__file__).resolve().parent.parent.parent
SERVICES = ROOT / "scripts" / "services.sh"
RESULTS = ROOT / "bench" / "results"
MODES = ("orchestration", "choreography", "2pc")
CONTEXT_DATABASES = ("orders", "customers", "sagas", "eventlog", "readmodels")
FINISHED = re.compile(r"\[([0-9a-f-]{36})\] (?:succeeded|raised)")
TWO_PC_POINTS = ("prepared:orders", "prepared:customers", "decided", "committed:orders")
RICH_LIMIT = "10000000.00"
POOR_LIMIT = "1.00"

#: The faults the schedule injects, and each form's count (short, full).
SCHEDULED_FAULTS: dict[str, tuple[int, int]] = {
    "worker SIGKILL mid-step (orchestration)": (1, 3),
    "pool child SIGKILL mid-step (orchestration)": (1, 2),
    "worker SIGKILL mid-handler (choreography)": (1, 3),
    "Redis restarted": (1, 2),
    "web server SIGKILL": (1, 2),
    "2PC coordinator SIGKILL": (4, 8),
    "context database unreachable": (5, 5),
}
#: The duplicate and late deliveries sent all along: no set count, at least one of each.
DELIVERY_FAULTS = (
    "command delivered twice",
    "command delivered late",
    "reply delivered twice",
    "reply delivered late",
    "wake-up delivered twice",
    "outbox event relayed twice",
)
#: Every kind of fault, in the order of the table, and the form's count of each.
FAULT_KINDS: dict[str, tuple[int, int] | tuple[None, None]] = {**SCHEDULED_FAULTS, **{kind: (None, None) for kind in DELIVERY_FAULTS}}


def log(message: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def utc(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def dist(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    return {"n": len(values), "min": seconds(ordered[0]), "median": seconds(statistics.median(ordered)), "max": seconds(ordered[-1])}


class FaultNotProven(AssertionError):
    """A fault that the run could not show to have happened: the run fails, it does not pass."""


# =========================================================================================
# Services and processes
# =========================================================================================


def services(action: str, directory: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["bash", str(SERVICES), action, str(directory)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if check and done.returncode != 0:
        raise RuntimeError(f"scripts/services.sh {action} {directory} failed:\n{done.stderr[-3000:]}")
    return done


def services_fresh(directory: Path) -> dict[str, str]:
    """A private PostgreSQL + Redis in ``directory``, wiped first so the databases are empty."""
    if directory.exists():
        services("stop", directory, check=False)
        state = directory / "services.state"
        if state.exists():
            for line in state.read_text().splitlines():
                if line.startswith("PG_DATA=") and "/tmp/saga-pg." in line:
                    shutil.rmtree(Path(line.split("=", 1)[1].strip("'\"")).parent, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)
    started = services("start", directory)
    return env_file(Path(started.stdout.strip().splitlines()[-1]))


def machine() -> dict[str, Any]:
    cpu, memory = "?", None
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
        kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
        memory = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    from importlib.metadata import version

    packages = {p: version(p) for p in ("django", "celery", "kombu", "psycopg", "redis", "gunicorn")}
    return {"hostname": platform.node(), "platform": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "memory": memory,
            "python": platform.python_version(), "packages": packages}


def git_state() -> dict[str, Any]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "changed_files": [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]}


# =========================================================================================
# One client order
# =========================================================================================


@dataclass
class ClientOrder:
    """An order as the client placed it (with an Idempotency-Key, so a retry never doubles it)."""

    key: str
    mode: str
    kind: str  # rich | poor | unknown
    customer_id: str
    total: str
    cancel: bool
    order_id: str | None = None
    saga_id: str | None = None
    answer: dict[str, Any] | None = None
    tries: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    error_times: list[tuple[float, int]] = field(default_factory=list)
    failed: str | None = None
    posted_at: float = 0.0
    answered_at: float = 0.0
    cancel_status: str | None = None  # accepted | refused:<state> | gave up
    cancel_tries: int = 0
    #: "load": the steady client; "fault": an order a fault injection placed for itself.
    source: str = "load"

    def expected(self) -> tuple[str, str | None]:
        """What the order must end as, given its customer: a transient fault only delays."""
        if self.kind == "poor":
            return "REJECTED", "INSUFFICIENT_CREDIT"
        if self.kind == "unknown":
            return "REJECTED", "UNKNOWN_CUSTOMER"
        return ("CANCELLED" if self.cancel_status == "accepted" else "APPROVED"), None


class FaultRun:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.short = args.short
        self.rng = random.Random(args.seed)
        self.dir = args.work_dir
        self.stack: Any = None
        self.api: Any = None
        self.port = 0
        self.env: dict[str, str] = {}
        self.orders: list[ClientOrder] = []
        self.orders_lock = threading.Lock()
        self.faults: list[dict[str, Any]] = []
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.violations: list[str] = []
        self.rich: list[str] = []
        self.poor: list[str] = []
        self.faulting = threading.Event()  # set while the fault schedule runs
        self.pause_duplicates = threading.Event()
        self.late_tasks: list[tuple[str, str]] = []  # (kind, task id) of every duplicate sent
        self.baseline: dict[str, Any] = {}
        self.measured: set[str] = set()  # sagas and flows whose recovery a fault measures

    # --- set-up --------------------------------------------------------------------------

    def setup(self) -> None:
        log(f"bash scripts/services.sh start {self.args.services_dir} (wiped first)")
        svc = services_fresh(self.args.services_dir)
        run_dir = self.dir
        shutil.rmtree(run_dir, ignore_errors=True)
        (run_dir / "var").mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL") and k not in ("CACHE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
        env.update(svc)
        env.update({
            "DJANGO_SETTINGS_MODULE": "config.settings", "VAR_DIR": str(run_dir / "var"), "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DJANGO_DEBUG": "false", "PYTHONUNBUFFERED": "1", "CELERY_LOG_LEVEL": "INFO", "SERVICES_DIR": str(self.args.services_dir),
        })
        self.env = env
        os.environ.clear()
        os.environ.update(env)
        log("manage.py migrate_all")
        migrated = subprocess.run([sys.executable, "manage.py", "migrate_all"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        if migrated.returncode != 0:
            raise RuntimeError(f"migrate_all failed:\n{migrated.stderr[-3000:]}")
        import django

        django.setup()
        from config.launcher import Stack
        from tests.conftest import free_port
        from tests.e2e.helpers import Api

        self.stack = Stack(env=env, run_dir=run_dir / "run", log_dir=run_dir / "log", echo=False)
        self.port = free_port()
        log(f"starting 2 Celery workers (prefork x2, -Q all five queues), beat, gunicorn --workers 2 on 127.0.0.1:{self.port}")
        for index in (1, 2):
            self.start_worker(index)
        self.stack.start_beat()
        self.stack.start_web(host="127.0.0.1", port=self.port, workers=2)
        self.stack.wait_ready(timeout=120)
        self.wait_web()
        self.api = Api(f"http://127.0.0.1:{self.port}")
        for _ in range(6):
            self.rich.append(self.customer(RICH_LIMIT))
        for _ in range(2):
            self.poor.append(self.customer(POOR_LIMIT))

    def start_worker(self, index: int) -> Any:
        from config.launcher import QUEUES

        argv = [sys.executable, "-m", "celery", "-A", "config.celery_app", "worker", "-Q", ",".join(QUEUES), "-n", f"faults{index}@%h",
                "--pool", "prefork", "--concurrency", "2", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
        # Stack.start_worker names the node after one queue; two workers on all five need two names.
        return self.stack._start(f"worker{index}", argv, ready_marker=" ready.")

    def wait_web(self) -> float:
        from tests.conftest import _answers, eventually

        eventually(lambda: _answers(f"http://127.0.0.1:{self.port}/healthz"), timeout=60, interval=0.1, message="gunicorn to answer /healthz")
        return time.time()

    def teardown(self) -> None:
        if self.stack is not None:
            try:
                self.stack.stop()
            except Exception as exc:  # noqa: BLE001 - the services still go
                log(f"stopping the processes: {exc}")
        if not self.args.keep_services:
            services("stop", self.args.services_dir, check=False)

    # --- the client -------------------------------------------------------------------------

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One HTTP call; a connection error is status 0 (the web server is down)."""
        try:
            return self.api.call(method, path, body, headers)
        except OSError as exc:
            return 0, {"error": f"{type(exc).__name__}: {exc}"}

    def customer(self, limit: str) -> str:
        for _ in range(100):
            status, body = self.call("POST", "/api/customers/", {"name": "Ada", "credit_limit": limit})
            if status == 201:
                return str(body["id"])
            time.sleep(0.5)
        raise RuntimeError(f"POST /api/customers/ kept failing: {status} {body}")

    def place(self, order: ClientOrder, *, deadline: float) -> ClientOrder:
        order.posted_at = time.time()
        delay = 0.2
        while True:
            order.tries += 1
            status, body = self.call("POST", "/api/orders/", {"customer_id": order.customer_id, "total": order.total, "mode": order.mode}, {"Idempotency-Key": order.key})
            if status in (201, 202):
                order.order_id, order.saga_id, order.answer, order.answered_at = str(body["id"]), str(body.get("saga_id")), body, time.time()
                return order
            order.errors[str(status)] += 1
            order.error_times.append((time.time(), status))
            # 0: the web server is down; 5xx: a database is; 503: admission control; 409: the
            # first request with this key is still being decided. All are worth a retry.
            if status not in (0, 409) and status < 500:
                order.failed = f"{status} {body}"
                return order
            if time.time() > deadline:
                order.failed = f"gave up after {order.tries} tries: last {status} {body}"
                return order
            retry_after = 2.0 if status == 503 else delay
            time.sleep(retry_after)
            delay = min(delay * 2, 5.0)

    def cancel(self, order: ClientOrder, *, deadline: float) -> None:
        """Cancel an order once it is APPROVED (409 while PENDING: try again)."""
        if order.order_id is None or (order.mode == "2pc" and (order.answer or {}).get("state") != "APPROVED"):
            return
        delay = 0.5
        while time.time() < deadline:
            order.cancel_tries += 1
            status, body = self.call("POST", f"/api/orders/{order.order_id}/cancel/")
            if status == 0 or status >= 500:
                order.error_times.append((time.time(), status))
            if status == 202:
                order.cancel_status = "accepted"
                return
            state = (body or {}).get("extra", {}).get("state") if isinstance(body, dict) else None
            if status == 409 and state in ("REJECTED", "CANCELLED", "CANCEL_PENDING") and order.cancel_tries > 1:
                # A retried cancel whose first answer was lost (the web server died): it went through.
                order.cancel_status = "accepted" if state in ("CANCELLED", "CANCEL_PENDING") else f"refused:{state}"
                return
            if status == 409 and state == "REJECTED":
                order.cancel_status = "refused:REJECTED"
                return
            time.sleep(delay)
            delay = min(delay * 1.5, 5.0)
        order.cancel_status = "gave up"

    def new_order(self, index: int, mode: str | None = None, kind: str | None = None, customer: str | None = None, cancel: bool | None = None, source: str = "load") -> ClientOrder:
        mode = mode or MODES[index % len(MODES)]
        if kind is None:
            roll = self.rng.random()
            kind = "rich" if roll < 0.75 else ("poor" if roll < 0.9 else "unknown")
        customer = customer or {"rich": lambda: self.rng.choice(self.rich), "poor": lambda: self.rng.choice(self.poor), "unknown": lambda: str(uuid.uuid4())}[kind]()
        total = f"{self.rng.randint(500, 4000) / 100:.2f}"
        cancel = (kind == "rich" and self.rng.random() < 0.2) if cancel is None else cancel
        order = ClientOrder(key=str(uuid.uuid4()), mode=mode, kind=kind, customer_id=customer, total=total, cancel=cancel, source=source)
        with self.orders_lock:
            self.orders.append(order)
        return order

    def load(self, count: int, rate: float, pool: ThreadPoolExecutor, stop: threading.Event) -> None:
        """Place ``count`` orders at ``rate`` per second (open loop: a slow answer does not slow the rate)."""
        deadline_after = 900 if not self.short else 300
        started = time.monotonic()
        for index in range(count):
            while time.monotonic() < started + index / rate:
                if stop.wait(0.02):
                    return
            order = self.new_order(index)

            def job(order: ClientOrder = order) -> None:
                self.place(order, deadline=time.time() + deadline_after)
                if order.cancel and order.failed is None:
                    time.sleep(self.rng.uniform(0.5, 3.0))
                    self.cancel(order, deadline=time.time() + deadline_after)

            pool.submit(job)

    # --- warm-up: the latency without faults -------------------------------------------------

    def warm_up(self) -> None:
        from orders.models import Order
        from sagas.models import SagaInstance
        from tests.conftest import eventually

        per_mode = 6
        placed = []
        for mode in MODES:
            for _ in range(per_mode):
                order = ClientOrder(key=str(uuid.uuid4()), mode=mode, kind="rich", customer_id=self.rich[0], total="10.00", cancel=False)
                self.place(order, deadline=time.time() + 60)
                assert order.order_id, order.failed
                placed.append(order)
                placed_id = order.order_id

                def approved(order_id: str = placed_id) -> bool:
                    return Order.objects.using("orders").filter(id=order_id, state="APPROVED").exists()

                eventually(approved, timeout=60, interval=0.05, message="a warm-up order")
        latency: dict[str, list[float]] = defaultdict(list)
        for order in placed:
            assert order.order_id is not None  # each one asserted placed before it was appended
            row = Order.objects.using("orders").get(id=order.order_id)
            if order.mode == "orchestration":
                assert order.saga_id is not None  # place() sets it with the order_id asserted above
                saga_id = order.saga_id

                def ended(saga_id: str = saga_id) -> SagaInstance | None:
                    return SagaInstance.objects.using("sagas").filter(id=saga_id, ended_at__isnull=False).first()

                saga = eventually(ended, timeout=30)
                assert saga.ended_at is not None  # the filter above: ended_at__isnull=False
                latency[order.mode].append(saga.ended_at.timestamp() - order.posted_at)
            elif order.mode == "choreography":
                latency[order.mode].append(row.updated_at.timestamp() - order.posted_at)
            else:
                latency[order.mode].append(order.answered_at - order.posted_at)
        self.baseline = {mode: dist(values) for mode, values in latency.items()}
        medians = ", ".join(f"{m} {d['median']} s" for m, d in self.baseline.items())
        log(f"warm-up (no fault, one order at a time): median latency {medians}")

    # --- helpers for the faults ----------------------------------------------------------------

    def record(self, kind: str, **details: Any) -> dict[str, Any]:
        fault = {"kind": kind, **details}
        self.faults.append(fault)
        self.counts[kind] += 1
        log(f"fault: {kind}: {', '.join(f'{k}={v}' for k, v in details.items() if k in ('at', 'worker', 'point', 'alias', 'seconds', 'downtime_s'))}")
        return fault

    def active(self, match: Callable[[TaskInfo], object]) -> tuple[str, TaskInfo] | None:
        from config.celery_app import app

        replies = app.control.inspect(timeout=1.0).active() or {}
        for worker, tasks in replies.items():
            for task in tasks:
                if match(task):
                    return worker, task
        return None

    def worker_process(self, node: str) -> str:
        """``faults2@host`` -> the Stack's ``worker2``."""
        return "worker" + node.split("@", 1)[0].removeprefix("faults")

    def log_text(self, name: str) -> str:
        path = self.stack.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_sizes(self) -> dict[str, int]:
        return {p.stem: p.stat().st_size for p in self.stack.log_dir.glob("*.log")}

    def logged_since(self, sizes: dict[str, int], needle: str) -> list[str]:
        found = []
        for path in self.stack.log_dir.glob("*.log"):
            with open(path, "rb") as handle:
                handle.seek(sizes.get(path.stem, 0))
                if needle.encode() in handle.read():
                    found.append(path.stem)
        return found

    def blocked_task(self, match: Callable[[TaskInfo], object], what: str) -> tuple[str, TaskInfo]:
        """A task that ``celery inspect active`` shows executing twice, a second apart: it is
        blocked inside its task (on the row lock the run holds), not merely passing through."""
        from tests.conftest import eventually

        def twice() -> tuple[str, TaskInfo] | None:
            first = self.active(match)
            if first is None:
                return None
            time.sleep(1.0)
            second = self.active(lambda t: t["id"] == first[1]["id"])
            return second if second and second[0] == first[0] else None

        return eventually(twice, timeout=90, interval=0.2, message=f"{what} to be executing in a worker")

    # --- the faults -------------------------------------------------------------------------------

    def kill_worker_mid_step(self, *, whole: bool) -> None:
        """An orchestrated saga's ``credit_reserve`` provably executing, then its worker (or its
        pool child) SIGKILLed. The customer's row is held FOR UPDATE so the step blocks in its task."""
        from sagas.models import SagaStep
        from tests.conftest import eventually
        from tests.e2e.helpers import customer_locked

        customer = self.customer(RICH_LIMIT)
        kind = "worker SIGKILL mid-step (orchestration)" if whole else "pool child SIGKILL mid-step (orchestration)"
        self.pause_duplicates.set()  # the recovery measured is the system's own, not helped by a duplicate
        with customer_locked(customer):
            order = self.new_order(0, mode="orchestration", kind="rich", customer=customer, cancel=False, source="fault")
            self.place(order, deadline=time.time() + 60)
            assert order.saga_id, order.failed
            saga_id = order.saga_id
            self.measured.add(saga_id)
            step = eventually(lambda: SagaStep.objects.using("sagas").filter(saga_id=uuid.UUID(saga_id), name="reserve_credit", kind="forward").first(), timeout=90, message="the reserve step to be sent")
            command_id = str(step.command_id)
            node, task = self.blocked_task(lambda t: t["name"] == "customers.credit_reserve" and t["args"] and isinstance(t["args"][0], dict) and t["args"][0].get("command_id") == command_id, "credit_reserve")
            step.refresh_from_db()
            if step.status != "WAITING" or step.ended_at is not None:
                raise FaultNotProven(f"the step was not in flight at the kill: {step.status}, ended {step.ended_at}")
            name = self.worker_process(node)
            process = self.stack.processes[name]
            child = int(task["worker_pid"])
            at = time.time()
            if whole:
                process.kill()
                if process.popen.returncode != -signal.SIGKILL:
                    raise FaultNotProven(f"{name} exited with {process.popen.returncode}, not by SIGKILL")
            else:
                os.kill(child, signal.SIGKILL)
        released = time.time()
        proof = {"step": "reserve_credit", "step_status": step.status, "step_attempts": step.attempts, "step_started_at": step.started_at.isoformat(),
                 "celery_task": task["id"], "executing_in": node, "worker_pid": child, "parent_pid": process.pid}
        if whole:
            text = self.log_text(name)
            proof["worker_log_received"] = f"Task customers.credit_reserve[{task['id']}] received" in text
            proof["worker_log_succeeded"] = f"[{task['id']}] succeeded" in text
            if not proof["worker_log_received"] or proof["worker_log_succeeded"]:
                raise FaultNotProven(f"{name}'s log does not show the task received and unfinished: {proof}")
            self.start_worker(int(name.removeprefix("worker")))
            self.stack.wait_ready([name], timeout=90)
        else:
            needle = f"pid:{child} exited with 'signal 9 (SIGKILL)'"
            eventually(lambda: needle in self.log_text(name), timeout=30, message="the worker to log its child's death")
            proof["worker_log"] = needle
        self.record(kind, at=utc(at), lock_released_at=utc(released), saga_id=order.saga_id, order_id=order.order_id, worker=name, proof=proof)
        from sagas.models import SagaInstance

        eventually(lambda: SagaInstance.objects.using("sagas").filter(id=saga_id, ended_at__isnull=False).exists(), timeout=180, interval=0.25, message="the killed saga to finish")
        self.pause_duplicates.clear()

    def kill_worker_mid_handler(self) -> None:
        """The customers context's choreography handler provably executing an ``OrderCreated``
        (blocked on the customer's row), then its worker SIGKILLed."""
        from customers.models import CustomerEvent
        from tests.e2e.helpers import customer_locked

        customer = self.customer(RICH_LIMIT)
        self.pause_duplicates.set()  # no duplicate wake-up may speed up the recovery measured
        with customer_locked(customer):
            order = self.new_order(0, mode="choreography", kind="rich", customer=customer, cancel=False, source="fault")
            self.place(order, deadline=time.time() + 60)
            assert order.order_id, order.failed
            order_id = order.order_id
            node, task = self.blocked_task(lambda t: t["name"] == "eventlog.subscriber_advance" and list(t["args"]) == ["customers.choreography"], "the customers choreography handler")
            name = self.worker_process(node)
            process = self.stack.processes[name]
            at = time.time()
            process.kill()
            if process.popen.returncode != -signal.SIGKILL:
                raise FaultNotProven(f"{name} exited with {process.popen.returncode}, not by SIGKILL")
            # Still under the lock, so nothing else can have reserved it meanwhile.
            reserved = CustomerEvent.objects.using("customers").filter(stream_id=customer, type="CreditReserved").exists()
        released = time.time()
        if reserved:
            raise FaultNotProven("the credit was reserved before the kill: the handler was not mid-flight")
        self.start_worker(int(name.removeprefix("worker")))
        self.stack.wait_ready([name], timeout=90)
        proof = {"celery_task": task["id"], "executing_in": node, "worker_pid": task["worker_pid"], "subscriber": "customers.choreography",
                 "credit_reserved_before_kill": reserved}
        self.record("worker SIGKILL mid-handler (choreography)", at=utc(at), lock_released_at=utc(released), order_id=order.order_id, saga_id=order.saga_id, worker=name, proof=proof)
        from orders.models import Order
        from tests.conftest import eventually

        eventually(lambda: Order.objects.using("orders").filter(id=order_id, state="APPROVED").exists(), timeout=180, interval=0.25, message="the killed handler's flow to decide")
        self.pause_duplicates.clear()

    def restart_redis(self) -> None:
        import redis

        from config.launcher import QUEUES

        pid_file = self.args.services_dir / "redis.pid"
        before = pid_file.read_text().strip()
        client = redis.Redis.from_url(self.env["CELERY_BROKER_URL"])
        queued = {q: client.llen(q) for q in QUEUES}
        client.close()
        at = time.time()
        services("restart-redis", self.args.services_dir)
        after = pid_file.read_text().strip()
        if after == before:
            raise FaultNotProven("redis-server has the same pid after its restart")
        restarted = time.time()
        # The positive sign that the workers consume again: a task sent now is handled.
        from config.celery_app import app
        from tests.conftest import eventually

        probe = str(app.send_task("sagas.sweep").id)
        eventually(lambda: probe in self.finished_tasks(), timeout=120, interval=0.25, message="a task to be handled after the Redis restart")
        self.record("Redis restarted", at=utc(at), seconds=seconds(restarted - at), workers_consuming_again_after_s=seconds(time.time() - at),
                    proof={"pid_before": before, "pid_after": after, "queued_messages_lost": queued})
        # The next fault starts once this one's window (its span and 5 s) is over, so that what
        # the client meets is put down to the right fault.
        while time.time() < restarted + 6:
            time.sleep(0.2)

    def kill_web(self) -> None:
        web = self.stack.processes["web"]
        pid = web.pid
        in_flight_before = sum(1 for o in list(self.orders) if o.posted_at and not o.answered_at and o.failed is None)
        at = time.time()
        web.kill()
        if web.popen.returncode != -signal.SIGKILL:
            raise FaultNotProven(f"gunicorn exited with {web.popen.returncode}, not by SIGKILL")
        time.sleep(1.0)  # the outage itself: requests meet a closed port meanwhile
        self.stack.start_web(host="127.0.0.1", port=self.port, workers=2)
        self.stack.wait_ready(["web"], timeout=90)
        up = self.wait_web()
        self.record("web server SIGKILL", at=utc(at), downtime_s=seconds(up - at), proof={"master_pid": pid, "returncode": web.popen.returncode, "orders_awaiting_an_answer": in_flight_before})

    def kill_coordinators(self) -> list[str]:
        """A real coordinator process stopped at each point between the first PREPARE and the
        last COMMIT PREPARED, and SIGKILLed there. Nobody runs ``resolve_in_doubt``: the sweep of
        the running system finishes them. Where the customers branch stays prepared, a writer
        waits on the customer's row, and the run measures how long."""
        import psycopg
        from django.db import connections

        from eventlog.twophase import prepared_list
        from tests.e2e.test_two_phase import Coordinator, _ours_prepared

        settings = connections["customers"].settings_dict
        started = []
        for point in TWO_PC_POINTS:
            # One at a time, killed as soon as it stops: a coordinator paused past its decision
            # for TWO_PC_DECIDED_GRACE_SECONDS is finished by the sweep from under it.
            customer = self.customer(RICH_LIMIT)
            coordinator = Coordinator(self.env["CELERY_BROKER_URL"], point, "place", customer, "60.00", env=self.env)
            started.append((point, customer, coordinator))
            transaction_id = coordinator.wait_stopped(point)
            at = time.time()
            coordinator.kill()
            held = [g for g in _ours_prepared() if str(transaction_id) in g]
            prepared_at = min((p.prepared_at.timestamp() for a in ("orders", "customers") for p in prepared_list(a) if p.gid in held), default=None)
            expected = {"prepared:orders": 1, "prepared:customers": 2, "decided": 2, "committed:orders": 1}[point]
            if len(held) != expected:
                raise FaultNotProven(f"coordinator killed at {point}: {held} prepared, {expected} expected")
            fault = self.record("2PC coordinator SIGKILL", at=utc(at), point=point, transaction_id=str(transaction_id), customer_id=customer,
                                first_prepared_at=utc(prepared_at) if prepared_at else None, proof={"prepared_after_kill": held})
            if point in ("prepared:customers", "decided"):
                # The prepared customers branch holds the customer's row: a writer waits on it.
                def wait_on_row(fault: dict[str, Any] = fault, customer: str = customer, at: float = at) -> None:
                    try:
                        with psycopg.connect(host=settings["HOST"], port=settings["PORT"], user=settings["USER"], password=settings["PASSWORD"], dbname=settings["NAME"]) as conn:
                            conn.execute("SET lock_timeout = '300s'")
                            began = time.time()
                            conn.execute("SELECT id FROM customers_customer WHERE id = %s FOR UPDATE", [customer])
                            fault["row_lock_waited_s"] = seconds(time.time() - began)
                            fault["row_lock_free_after_kill_s"] = seconds(time.time() - at)
                            conn.rollback()
                    except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                        fault["row_lock_error"] = f"{type(exc).__name__}: {exc}"

                threading.Thread(target=wait_on_row, daemon=True, name=f"row-lock-{point}").start()
        return [str(c.transaction_id) for _, _, c in started]

    def database_outage(self, alias: str, duration: float) -> None:
        from django.db import connections

        from tests.conftest import eventually
        from tests.e2e.helpers import database_unreachable

        sizes = self.log_sizes()
        with database_unreachable(alias) as outage:
            at = time.time()
            who = eventually(lambda: self.logged_since(sizes, outage.refusal), timeout=max(duration - 1, 5), interval=0.5, message=f"a process to log {outage.refusal!r} for {alias}")
            while time.time() - at < duration:
                time.sleep(0.5)
            outage.assert_refuses()
            lasted = time.time() - at
        connections[alias].close()
        self.record("context database unreachable", at=utc(at), alias=alias, seconds=seconds(lasted),
                    proof={"refused_in_logs_of": who, "backends_ended": outage.terminated, "refusal": outage.refusal, "still_refused_at_its_end": True})

    # --- duplicates and late deliveries, all along ------------------------------------------------------

    def duplicates(self, stop: threading.Event) -> None:
        from django.db import connections

        from config.celery_app import app
        from eventlog.relay import outboxes
        from sagas.models import SagaStep
        from tests.e2e.helpers import step_message, step_reply

        while not stop.wait(2.0 if self.short else 3.0):
            if self.pause_duplicates.is_set():
                continue
            try:
                # Not the sagas whose recovery a fault is measuring: a duplicate would speed it up.
                steps = list(SagaStep.objects.using("sagas").exclude(saga_id__in=list(self.measured)).order_by("-id")[:40])
                for step in self.rng.sample(steps, min(3, len(steps))):
                    message = step_message(step)
                    self.late_tasks.append(("command delivered twice", str(app.send_task(step.command, args=(message,)).id)))
                    self.late_tasks.append(("command delivered late", str(app.send_task(step.command, args=(message,), countdown=self.rng.uniform(5, 20)).id)))
                    if step.reply is not None:
                        reply = step_reply(step)
                        self.late_tasks.append(("reply delivered twice", str(app.send_task("sagas.saga_reply", args=(reply,)).id)))
                        self.late_tasks.append(("reply delivered late", str(app.send_task("sagas.saga_reply", args=(reply,), countdown=self.rng.uniform(5, 20)).id)))
                for context in ("orders", "customers"):
                    self.late_tasks.append(("wake-up delivered twice", str(app.send_task("eventlog.subscriber_advance", args=(f"{context}.choreography",), queue=context).id)))
                # The relay's crash window: events copied into the log, not yet marked relayed.
                # The next relay copies them again; the log keeps each once (event_id is unique).
                for outbox in outboxes():
                    ids = list(outbox.model.objects.using(outbox.alias).filter(relayed_at__isnull=False).order_by("-id").values_list("id", flat=True)[:3])
                    if ids:
                        outbox.model.objects.using(outbox.alias).filter(id__in=ids).update(relayed_at=None)
                        self.counts["outbox event relayed twice"] += len(ids)
                        app.send_task("eventlog.relay", args=(outbox.source,))
            except Exception:  # noqa: BLE001 - a database may be unreachable right now: next round
                connections.close_all()

    # --- the schedule ------------------------------------------------------------------------------------

    def schedule(self) -> None:
        """One fault after another (the client keeps placing orders through all of them). The
        2PC kills come first, and the system's own sweep finishes them while the worker kills
        run; the outages wait until it has, so that a database outage does not lengthen the
        time a prepared transaction is held (the 2PC cost measured here is the resolver's)."""
        form = 0 if self.short else 1
        rounds = SCHEDULED_FAULTS["2PC coordinator SIGKILL"][form] // len(TWO_PC_POINTS)
        transactions = self.kill_coordinators()
        for _ in range(SCHEDULED_FAULTS["worker SIGKILL mid-step (orchestration)"][form]):
            self.kill_worker_mid_step(whole=True)
        for _ in range(SCHEDULED_FAULTS["pool child SIGKILL mid-step (orchestration)"][form]):
            self.kill_worker_mid_step(whole=False)
        for _ in range(SCHEDULED_FAULTS["worker SIGKILL mid-handler (choreography)"][form]):
            self.kill_worker_mid_handler()
        self.wait_in_doubt_finished(transactions)
        for _ in range(rounds - 1):
            self.wait_in_doubt_finished(self.kill_coordinators())
        for _ in range(SCHEDULED_FAULTS["Redis restarted"][form]):
            self.restart_redis()
            self.kill_web()
        for _ in range(SCHEDULED_FAULTS["web server SIGKILL"][form] - SCHEDULED_FAULTS["Redis restarted"][form]):
            self.kill_web()
        for alias in CONTEXT_DATABASES:
            self.database_outage(alias, self.args.outage_seconds)

    def wait_in_doubt_finished(self, transactions: list[str]) -> None:
        from tests.conftest import eventually
        from tests.e2e.test_two_phase import _ours_prepared

        eventually(lambda: not [g for g in _ours_prepared() if any(t in g for t in transactions)], timeout=180, interval=0.25,
                   message="the sweep to finish the killed coordinators' transactions")
        eventually(lambda: all("row_lock_waited_s" in f or "row_lock_error" in f for f in self.faults if f.get("point") in ("prepared:customers", "decided")),
                   timeout=60, interval=0.25, message="the writers waiting on the customers' rows")

    # --- the end: settle, check, measure -------------------------------------------------------------------

    def settle(self, timeout: float) -> float:
        from django.db import connections

        from eventlog.twophase import prepared_list
        from orders.models import Order
        from sagas.models import ACTIVE_STATES, SagaInstance

        started = time.time()
        while True:
            try:
                pending = Order.objects.using("orders").filter(state__in=("PENDING", "CANCEL_PENDING")).count()
                active = SagaInstance.objects.using("sagas").filter(state__in=ACTIVE_STATES).count()
                prepared = sum(len(prepared_list(a)) for a in ("orders", "customers"))
                from eventlog.relay import outbox_backlog

                backlog = sum(outbox_backlog().values())
            except Exception:  # noqa: BLE001
                connections.close_all()
                pending = active = prepared = backlog = -1
            if pending == 0 and active == 0 and prepared == 0 and backlog == 0:
                return time.time() - started
            if time.time() - started > timeout:
                self.violations.append(f"not settled {timeout:.0f} s after the faults: {pending} orders PENDING/CANCEL_PENDING, {active} sagas active, {prepared} prepared transactions, {backlog} outbox events unrelayed")
                return time.time() - started
            time.sleep(1.0)

    def finished_tasks(self) -> set[str]:
        """The ids of every task a worker finished (Celery logs ``Task name[id] succeeded in``
        at INFO, or ``raised``): the positive sign that a message was delivered and handled."""
        done: set[str] = set()
        for name in ("worker1", "worker2"):
            done.update(FINISHED.findall(self.log_text(name)))
        return done

    def final_duplicates(self) -> dict[str, Any]:
        """After every order ended: every step of a sample of sagas delivered again, twice and
        late, and wake-ups and relays again; nothing may change."""
        from config.celery_app import app
        from eventlog.models import LogEvent
        from sagas.models import SagaStep
        from tests.conftest import eventually
        from tests.e2e.helpers import snapshot, step_message, step_reply

        before = snapshot()
        log_count = LogEvent.objects.using("eventlog").count()
        saga_ids = list(SagaStep.objects.using("sagas").values_list("saga_id", flat=True).distinct())
        sample = self.rng.sample(saga_ids, min(len(saga_ids), 10 if self.short else 40))
        sent = []
        for s in SagaStep.objects.using("sagas").filter(saga_id__in=sample):
            message = step_message(s)
            sent.append(str(app.send_task(s.command, args=(message,)).id))
            sent.append(str(app.send_task(s.command, args=(message,), countdown=2).id))
            if s.reply is not None:
                sent.append(str(app.send_task("sagas.saga_reply", args=(step_reply(s),)).id))
                sent.append(str(app.send_task("sagas.saga_reply", args=(step_reply(s),), countdown=2).id))
        for context in ("orders", "customers"):
            sent.append(str(app.send_task("eventlog.subscriber_advance", args=(f"{context}.choreography",), queue=context).id))
        for source in ("orders", "customers"):
            sent.append(str(app.send_task("eventlog.relay", args=(source,)).id))

        def all_done() -> bool:
            return set(sent) <= self.finished_tasks()

        eventually(all_done, timeout=120, interval=0.5, message=f"the {len(sent)} final duplicate deliveries to be handled")
        # Replies caused by the duplicate commands: drain the sagas queue behind a sweep.
        sweep = str(app.send_task("sagas.sweep").id)
        eventually(lambda: sweep in self.finished_tasks(), timeout=60, interval=0.5, message="a sweep after them")
        self.settle(60)
        after = snapshot()
        changed = [key for key in before if before[key] != after[key]]
        log_after = LogEvent.objects.using("eventlog").count()
        if changed or log_after != log_count:
            self.violations.append(f"the final duplicate and late deliveries changed {changed or ''} (log events {log_count} -> {log_after})")
        return {"sagas": len(sample), "messages": len(sent), "handled": len(sent), "changed": changed, "log_events_before": log_count, "log_events_after": log_after}

    def check(self) -> dict[str, Any]:
        from io import StringIO

        from django.core.management import call_command

        from eventlog.twophase import prepared_list
        from orders.models import Order
        from sagas.models import SagaInstance

        checks: dict[str, Any] = {}
        out = StringIO()
        call_command("resolve_in_doubt", stdout=out)
        checks["resolve_in_doubt"] = out.getvalue().strip().splitlines()
        left = [{"alias": p.alias, "gid": p.gid, "prepared_at": p.prepared_at.isoformat()} for a in ("orders", "customers") for p in prepared_list(a)]
        checks["prepared_left"] = left
        if left:
            self.violations.append(f"{len(left)} prepared transaction(s) left after resolve_in_doubt: {left[:5]}")
        verify = subprocess.run([sys.executable, "manage.py", "verify"], cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=900)
        lines = (verify.stdout + verify.stderr).strip().splitlines()
        checks["verify"] = {"exit_code": verify.returncode, "output": lines}
        for line in lines:
            if line.startswith("FAIL"):
                self.violations.append(f"verify: {line[4:].strip()}")
        if verify.returncode != 0 and not any(line.startswith("FAIL") for line in lines):
            self.violations.append(f"verify exited {verify.returncode}: {lines[-3:]}")
        failed = list(SagaInstance.objects.using("sagas").filter(state="FAILED").values_list("id", "mode", "type", "last_error"))
        if failed:
            self.violations.append(f"{len(failed)} saga(s) FAILED, and no fault of this run is permanent: {failed[:5]}")
        # Each client order: it exists, in its mode, and ended as its customer allowed.
        rows = {str(r[0]): r[1:] for r in Order.objects.using("orders").values_list("id", "mode", "state", "rejection_reason")}
        outcome_violations = []
        aborted_2pc: Counter[str] = Counter()
        for order in self.orders:
            if order.failed:
                self.violations.append(f"order {order.key} ({order.mode}) was never placed: {order.failed}")
                continue
            row = rows.get(order.order_id or "")
            if row is None:
                # (id=None matched no saga: the `is not None` only says so to the type checker.)
                if order.mode == "orchestration" and order.saga_id is not None and SagaInstance.objects.using("sagas").filter(id=order.saga_id, state="COMPENSATED").exists():
                    outcome_violations.append(f"orchestrated order {order.order_id}: never created, its saga compensated")
                else:
                    outcome_violations.append(f"order {order.order_id} ({order.mode}) does not exist")
                continue
            mode, state, reason = row
            expected = order.expected()
            if order.mode == "2pc":
                # 2PC answers the final state: the order must stay what the client was told
                # (then be cancelled, if it asked). A fault may make it answer REJECTED with no
                # reason (the transaction aborted): that is 2PC's blocking, reported apart.
                told = ((order.answer or {}).get("state"), (order.answer or {}).get("rejection_reason"))
                if told == ("REJECTED", None):
                    aborted_2pc[self.during(order.posted_at, order.answered_at)] += 1
                    expected = ("REJECTED", None)  # == told, typed as expected() answers
                elif told != (("APPROVED", None) if order.kind == "rich" else expected):
                    outcome_violations.append(f"2pc order {order.order_id} of a {order.kind} customer answered {told}")
            if mode != order.mode:
                outcome_violations.append(f"order {order.order_id}: mode {mode}, placed as {order.mode}")
            if (state, reason) != expected:
                outcome_violations.append(f"{order.mode} order {order.order_id} of a {order.kind} customer is {state}/{reason}, expected {expected[0]}/{expected[1]} (cancel: {order.cancel_status})")
        self.violations.extend(outcome_violations)
        checks["2pc_rejected_by_a_fault"] = sum(aborted_2pc.values())
        checks["2pc_rejected_by_a_fault_during"] = dict(aborted_2pc)
        return checks

    def errors_by_fault(self) -> dict[str, Counter[str]]:
        """The answers a client had to retry (0: no connection), by the fault that caused them."""
        table: dict[str, Counter[str]] = defaultdict(Counter)
        for order in self.orders:
            for at, status in order.error_times:
                table[self.during(at)][str(status)] += 1
        return table

    def during(self, start: float, end: float | None = None) -> str:
        """The fault that hit a moment (the latest one begun by then, within its span and 5 s),
        or a span from ``start`` to ``end`` (the earliest one whose window overlaps it: the
        fault the order met first, even if its answer came during a later one)."""
        found, best = "no fault at that moment", None
        for fault in self.faults:
            at = dt.datetime.fromisoformat(fault["at"]).timestamp()
            lasted = fault.get("seconds") or fault.get("downtime_s") or 0
            if at - 1 <= (end or start) and start <= at + lasted + 5:
                if best is None or (at > best if end is None else at < best):
                    found, best = fault["kind"] + (f" ({fault['alias']})" if "alias" in fault else ""), at
        return found

    def orders_table(self) -> dict[str, dict[str, int]]:
        from orders.models import Order

        table: dict[str, Counter[str]] = {mode: Counter() for mode in MODES}
        for mode, state, reason in Order.objects.using("orders").values_list("mode", "state", "rejection_reason"):
            table[mode][state if state != "REJECTED" else f"REJECTED {reason or 'no reason'}"] += 1
        return {mode: dict(sorted(c.items())) for mode, c in table.items()}

    def costs(self) -> dict[str, Any]:
        """What a death mid-flight cost, per mode, measured from the databases' own timestamps."""
        from orders.models import Order
        from sagas.models import CoordinatorLogEntry, SagaInstance, SagaLogEntry

        result: dict[str, Any] = {"baseline_latency_s": self.baseline}
        orchestration = []
        for fault in self.faults:
            if fault["kind"].endswith("(orchestration)"):
                killed_at = dt.datetime.fromisoformat(fault["at"])
                saga = SagaInstance.objects.using("sagas").get(id=fault["saga_id"])
                resumed = SagaLogEntry.objects.using("sagas").filter(saga_id=saga.id, at__gt=dt.datetime.fromisoformat(fault["lock_released_at"])).order_by("at").first()
                fault["cost"] = {"saga_state": saga.state, "resumed_after_kill_s": seconds(resumed.at.timestamp() - killed_at.timestamp()) if resumed else None,
                                 "resumed_by": f"{resumed.step} {resumed.event}" if resumed else None,
                                 "finished_after_kill_s": seconds(saga.ended_at.timestamp() - killed_at.timestamp()) if saga.ended_at else None}
                orchestration.append((fault["kind"], fault["cost"]))
        result["orchestration"] = {
            kind: {"resumed_after_kill_s": dist([c["resumed_after_kill_s"] for k, c in orchestration if k == kind and c["resumed_after_kill_s"] is not None]),
                   "finished_after_kill_s": dist([c["finished_after_kill_s"] for k, c in orchestration if k == kind and c["finished_after_kill_s"] is not None])}
            for kind in ("worker SIGKILL mid-step (orchestration)", "pool child SIGKILL mid-step (orchestration)")
        }
        choreography = []
        for fault in self.faults:
            if fault["kind"] == "worker SIGKILL mid-handler (choreography)":
                at = dt.datetime.fromisoformat(fault["at"]).timestamp()
                order = Order.objects.using("orders").get(id=fault["order_id"])
                trace = SagaInstance.objects.using("sagas").filter(id=fault["saga_id"]).first()
                fault["cost"] = {"order_state": order.state, "decided_after_kill_s": seconds(order.updated_at.timestamp() - at),
                                 "trace_ended_after_kill_s": seconds(trace.ended_at.timestamp() - at) if trace and trace.ended_at else None}
                choreography.append(fault["cost"])
        result["choreography"] = {"decided_after_kill_s": dist([c["decided_after_kill_s"] for c in choreography]),
                                  "trace_ended_after_kill_s": dist([c["trace_ended_after_kill_s"] for c in choreography if c["trace_ended_after_kill_s"] is not None])}
        two_pc = []
        for fault in self.faults:
            if fault["kind"] == "2PC coordinator SIGKILL":
                at = dt.datetime.fromisoformat(fault["at"]).timestamp()
                entries = list(CoordinatorLogEntry.objects.using("sagas").filter(saga_id=fault["transaction_id"]).order_by("id"))
                finishing = [e for e in entries if e.phase in ("commit", "rollback") and e.actor != "coordinator"]
                decision = next((e for e in entries if e.phase == "decision"), None)
                prepared = [e for e in entries if e.phase == "prepare"]
                # pg_prepared_xacts' own time, at the kill (the log has no prepare row when the
                # coordinator died before its decision: those rows are written with it).
                first_prepare = dt.datetime.fromisoformat(fault["first_prepared_at"]) if fault.get("first_prepared_at") else min((e.at for e in prepared), default=None)
                last_finish = max((e.at for e in finishing), default=None)
                saga = SagaInstance.objects.using("sagas").get(id=fault["transaction_id"])
                fault["cost"] = {
                    "decision": decision.outcome if decision else None, "decided_by": decision.actor if decision else None,
                    "finished_by": sorted({e.actor for e in finishing}), "saga_state": saga.state,
                    "prepared_held_after_kill_s": seconds(last_finish.timestamp() - at) if last_finish else None,
                    "prepared_held_since_first_prepare_s": seconds(last_finish.timestamp() - first_prepare.timestamp()) if last_finish and first_prepare else None,
                    "row_lock_waited_s": fault.get("row_lock_waited_s"), "row_lock_error": fault.get("row_lock_error"),
                }
                two_pc.append((fault["point"], fault["cost"]))
        result["2pc"] = {point: {"prepared_held_after_kill_s": dist([c["prepared_held_after_kill_s"] for p, c in two_pc if p == point and c["prepared_held_after_kill_s"] is not None]),
                                 "prepared_held_since_first_prepare_s": dist([c["prepared_held_since_first_prepare_s"] for p, c in two_pc
                                                                              if p == point and c["prepared_held_since_first_prepare_s"] is not None]),
                                 "row_lock_waited_s": dist([c["row_lock_waited_s"] for p, c in two_pc if p == point and c["row_lock_waited_s"] is not None]),
                                 "decision": sorted({str(c["decision"]) for p, c in two_pc if p == point}),
                                 "finished_by": sorted({a for p, c in two_pc if p == point for a in c["finished_by"]})}
                         for point in TWO_PC_POINTS}
        return result

    # --- the whole run ---------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.time()
        results: dict[str, Any] = {
            "run": "faults-short" if self.short else "faults",
            "command": " ".join(["python", "-m", "tests.faults", *sys.argv[1:]]),
            "machine": machine(),
            "git": git_state(),
            "started_at": utc(started),
            "config": {"orders": self.args.orders, "outage_seconds": self.args.outage_seconds, "rate_per_s": None, "seed": self.args.seed,
                       "processes": "gunicorn --workers 2; 2 x celery worker --pool prefork --concurrency 2 -Q orders,customers,sagas,eventlog,readmodels; celery beat",
                       "timings": "production defaults: SAGA_TIME_SCALE 1 (10 s step timeout), SWEEP_INTERVAL_SECONDS 2, TWO_PC_SAFETY_INTERVAL_SECONDS 30, TWO_PC_DECIDED_GRACE_SECONDS 2"},
            "notes": self.notes,
        }
        if self.short:
            self.notes.append(f"short form: each context database is unreachable for {self.args.outage_seconds:g} s (the full form, make faults, holds each for 90 s), one of each other fault")
        try:
            self.setup()
            self.warm_up()
            planned = self.args.planned_seconds
            rate = self.args.orders / planned
            results["config"]["rate_per_s"] = round(rate, 2)
            stop = threading.Event()
            log(f"placing {self.args.orders} orders at {rate:.2f}/s while the faults run (about {planned:.0f} s)")
            with ThreadPoolExecutor(max_workers=64, thread_name_prefix="client") as pool:
                loader = threading.Thread(target=self.load, args=(self.args.orders, rate, pool, stop), name="load", daemon=True)
                loader.start()
                duplicator = threading.Thread(target=self.duplicates, args=(stop,), name="duplicates", daemon=True)
                duplicator.start()
                faults_started = time.time()
                try:
                    self.schedule()
                except FaultNotProven as exc:
                    self.errors.append(f"fault not proven: {exc}")
                except Exception as exc:  # noqa: BLE001 - reported; the run still checks what it did
                    self.errors.append(f"fault schedule crashed: {type(exc).__name__}: {exc}\n{traceback.format_exc()[-3000:]}")
                faults_ended = time.time()
                log(f"faults done in {faults_ended - faults_started:.0f} s; placing the rest of the orders")
                loader.join()
                stop.set()
                duplicator.join()
            log("every order placed; waiting for every order to end")
            settled = self.settle(900 if not self.short else 300)
            log(f"settled {settled:.0f} s after the last order was placed")
            finished = self.finished_tasks()
            delivered: dict[str, Counter[str]] = defaultdict(Counter)
            for kind, task_id in self.late_tasks:
                handled = task_id in finished
                delivered[kind]["handled" if handled else "lost (a broker restart, or a worker killed)"] += 1
                self.counts[kind] += handled  # only what a worker's log shows it handled counts
            results["duplicates_sent"] = {kind: dict(c) for kind, c in delivered.items()}
            results["final_duplicates"] = self.final_duplicates()
            results["checks"] = self.check()
            results["costs"] = self.costs()
            results["orders"] = self.orders_table()
            results["client"] = {
                "orders_placed": sum(1 for o in self.orders if o.order_id and o.source == "load"), "orders_requested": self.args.orders,
                "orders_placed_by_the_faults": sum(1 for o in self.orders if o.order_id and o.source == "fault"),
                "retries": sum(o.tries - 1 for o in self.orders), "errors_seen": dict(sum((o.errors for o in self.orders), Counter())),
                "errors_by_fault": {k: dict(v) for k, v in self.errors_by_fault().items()},
                "cancels_accepted": sum(1 for o in self.orders if o.cancel_status == "accepted"),
                "cancels_refused": dict(Counter(o.cancel_status for o in self.orders if o.cancel_status and o.cancel_status != "accepted")),
                "by_customer": dict(Counter(f"{o.mode} {o.kind}" for o in self.orders)),
            }
            results["timestamps"] = {"faults_started_at": utc(faults_started), "faults_ended_at": utc(faults_ended), "settled_after_s": seconds(settled)}
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-4000:]}")
        finally:
            results["faults_injected"] = {kind: self.counts.get(kind, 0) for kind in FAULT_KINDS}
            results["faults"] = self.faults
            results["violations"] = self.violations
            results["errors"] = self.errors
            required = {kind: counts[1 if not self.short else 0] for kind, counts in FAULT_KINDS.items()}
            missing = [kind for kind, n in required.items() if self.counts.get(kind, 0) < (n or 1)]
            if missing:
                self.errors.append(f"faults not injected: {missing}")
            placed = sum(1 for o in self.orders if o.order_id and o.source == "load")
            if placed < self.args.orders:
                self.errors.append(f"only {placed} of {self.args.orders} orders were placed")
            results["ended_at"] = utc(time.time())
            results["elapsed_s"] = seconds(time.time() - started)
            results["passed"] = not self.violations and not self.errors
            self.teardown()
        return results


# =========================================================================================
# The table
# =========================================================================================


def render(results: dict[str, Any]) -> str:
    lines = [f"Fault run ({results['run']}): {results['command']}", f"{results['started_at']} to {results.get('ended_at')}, {results.get('elapsed_s')} s, "
             f"{results['machine']['cpus']} cores, {results['machine']['cpu']}"]
    lines += [f"note: {n}" for n in results.get("notes", [])]
    lines += ["", f"{'faults injected':48} {'count':>6}"]
    for kind, count in results.get("faults_injected", {}).items():
        lines.append(f"  {kind:46} {count:>6}")
    table = results.get("orders") or {}
    states = sorted({s for row in table.values() for s in row})
    if table:
        width = max(len(s) for s in states) + 2
        lines += ["", f"{'orders':15}" + "".join(f"{s:>{width}}" for s in states) + f"{'total':>8}"]
        for mode, row in table.items():
            lines.append(f"  {mode:13}" + "".join(f"{row.get(s, 0):>{width}}" for s in states) + f"{sum(row.values()):>8}")
    client = results.get("client")
    if client:
        lines.append(f"client: {client['orders_placed']} of {client['orders_requested']} orders placed (and the faults' own), {client['retries']} retries, "
                     f"{client['cancels_accepted']} cancels accepted; answers retried (status: count; 0 = no connection), by fault:")
        for fault, statuses in client["errors_by_fault"].items():
            lines.append(f"  {fault:46} {statuses}")
    costs = results.get("costs")
    if costs:
        lines += ["", "what a death mid-flight cost (seconds; min / median / max)"]
        base = costs["baseline_latency_s"]
        lines.append("  no fault, median latency: " + ", ".join(f"{m} {d.get('median')}" for m, d in base.items()))
        for kind, c in costs["orchestration"].items():
            lines.append(f"  orchestration, {kind.split(' (')[0]}: resumed after {_d(c['resumed_after_kill_s'])}, finished after {_d(c['finished_after_kill_s'])}")
        ch = costs["choreography"]
        lines.append(f"  choreography, worker SIGKILL mid-handler: order decided after {_d(ch['decided_after_kill_s'])}, trace ended after {_d(ch['trace_ended_after_kill_s'])}")
        for point, c in costs["2pc"].items():
            lock = f", a writer waited on the customer's row {_d(c['row_lock_waited_s'])}" if c["row_lock_waited_s"].get("n") else ""
            lines.append(f"  2pc, coordinator SIGKILL at {point}: prepared held {_d(c['prepared_held_after_kill_s'])} after the kill ({'/'.join(c['decision'])} by {'/'.join(c['finished_by'])}){lock}")
    checks = results.get("checks")
    if checks:
        verify = checks["verify"]["output"]
        lines += ["", f"verify (exit {checks['verify']['exit_code']}): {verify[-1] if verify else ''}; prepared transactions left after resolve_in_doubt: {len(checks['prepared_left'])}",
                  f"2pc orders a fault made abort (answered REJECTED, no reason, consistently): {checks['2pc_rejected_by_a_fault']} {checks['2pc_rejected_by_a_fault_during']}",
                  "(the orders table's 2pc 'REJECTED no reason' also counts the coordinators killed before their decision: presumed abort)"]
    violations = results.get("violations", [])
    lines += ["", f"violations found: {len(violations)}"] + [f"  - {v}" for v in violations[:30]]
    errors = results.get("errors", [])
    if errors:
        lines += [f"run errors: {len(errors)}"] + [f"  - {e.splitlines()[0]}" for e in errors]
    lines.append("PASSED" if results.get("passed") else "FAILED")
    return "\n".join(lines)


def _d(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "n/a"
    return f"{d['min']} / {d['median']} / {d['max']} (n={d['n']})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", action="store_true", help="the short form: 150 orders, 10 s outages, one of each fault (about 2 minutes of faults)")
    parser.add_argument("--orders", type=int, default=None, help="orders to place (default 1,000; 150 with --short)")
    parser.add_argument("--outage-seconds", type=float, default=None, help="how long each context database is unreachable (default 90; 10 with --short)")
    parser.add_argument("--services-dir", type=Path, default=Path(os.environ.get("FAULTS_SERVICES_DIR", ROOT / "var" / "faults-services")),
                        help="scripts/services.sh DIR for this run's PostgreSQL + Redis (wiped first; default var/faults-services or $FAULTS_SERVICES_DIR)")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "var" / "faults", help="the processes' logs and run files (wiped first)")
    parser.add_argument("--output", type=Path, default=None, help="results file (default bench/results/faults.json, faults-short.json with --short)")
    parser.add_argument("--keep-services", action="store_true", help="leave PostgreSQL and Redis running at the end")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    args.orders = args.orders or (150 if args.short else 1000)
    args.outage_seconds = args.outage_seconds if args.outage_seconds is not None else (10.0 if args.short else 90.0)
    # How long the fault schedule takes, roughly: the client's rate spreads the orders over it.
    args.planned_seconds = (60.0 if args.short else 240.0) + len(CONTEXT_DATABASES) * args.outage_seconds
    args.output = args.output or RESULTS / ("faults-short.json" if args.short else "faults.json")
    run = FaultRun(args)
    results = run.run()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(render(results), flush=True)
    log(f"results in {args.output}; logs in {args.work_dir / 'log'}")
    return 0 if results["passed"] else 1
