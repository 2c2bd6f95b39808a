"""Orchestrated create-order sagas end to end (HTTP -> gunicorn -> Celery -> PostgreSQL), next to
the bare Celery floor, on PostgreSQL + Redis.

Run from the repository root::

    .venv/bin/python bench/sagas.py               # N=500 sagas (+ 500 floor chains), about 2-3 minutes
    .venv/bin/python bench/sagas.py --quick       # N=100, unsaturated 15
    .venv/bin/python bench/sagas.py --pool prefork --concurrency 2     # another worker pool
    .venv/bin/python bench/sagas.py --profile     # also a cProfiled pass (bench/results/profile-sagas.txt)

Set-up: a private PostgreSQL 15 + Redis (``scripts/services.sh start /tmp/bench-services-sagas``,
wiped first so the databases are fresh, stopped at the end), ``manage.py migrate_all``, a
superuser and its DRF token (``createsuperuser --noinput``, ``drf_create_token``). Then, through
``config.launcher.Stack``: two Celery workers, each consuming all five queues
(``-Q orders,customers,sagas,eventlog,readmodels``), beat, and gunicorn with 2 workers. Every one
of them runs with ``DJANGO_SETTINGS_MODULE=bench.saga_settings``: the project's settings plus the
floor's no-op tasks (bench/noop_tasks.py), so the saga run and the floor run use the very same
processes and differ only in the work.

Phases (after a warm-up of 20 sagas and 20 chains):

1. unsaturated sagas: ``--unsat`` orders (30) POSTed one at a time; each waits until its saga is
   final and the broker is idle again.
2. unsaturated floor: as many chains, one at a time, the same way.
3. saturated sagas: N orders POSTed by ``--threads`` (8) client threads as fast as they go.
4. saturated floor: N chains published by the same number of threads.

A saga is ``POST /api/orders/`` (the view writes the saga and sends the first command after
commit), then 6 Celery hops: ``orders.order_create``, the reply, ``customers.credit_reserve``, the
reply, ``orders.order_approve``, the reply (which sets ``ended_at``). Its latency is
``SagaInstance.ended_at`` minus the client's clock just before the POST (same machine, same clock),
so polling adds no noise. Throughput = N / (last ended_at - first POST). A floor chain is 6 chained
no-op hops over the same queue sequence (orders, sagas, customers, sagas, orders, sagas); its
latency is the last hop's start minus the client's publish, throughput N / (last hop - first
publish). One customer per phase, with a credit limit that approves every order.

Afterwards: every saga must be COMPLETED; ``manage.py verify`` runs against the bench databases.
The breakdown comes from the databases' own timestamps (saga created/ended, each step's
started/ended, each participant's ``processed_at``), from the workers' "succeeded in" log lines
(execution time per task name) and from /proc (CPU time per component during each run).

Goals: >= 50 sagas/s; unsaturated p50 < 100 ms. Results: ``bench/results/sagas.json`` and a table
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

SERVICES_DIR = Path("/tmp/bench-services-sagas")
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
SUCCEEDED = re.compile(r"Task (\S+)\[[0-9a-f-]+\] succeeded in ([0-9.e-]+)s")


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
        self.redis: Any = None
        self.done_redis: Any = None
        self.celery: Any = None
        self.worker_names: list[str] = []
        self.sampler: CpuSampler | None = None

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
                    "BENCH_NOOP_REDIS_URL": services["CELERY_BROKER_URL"].rsplit("/", 1)[0] + "/2"}

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

        self.pg = psycopg.connect(self.services["SAGAS_DATABASE_URL"], autocommit=True)
        self.redis = redis.Redis.from_url(self.services["CELERY_BROKER_URL"])
        self.done_redis = redis.Redis.from_url(self.env["BENCH_NOOP_REDIS_URL"])
        self.celery = Celery("bench-sagas-client", broker=self.services["CELERY_BROKER_URL"])
        self.celery.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)

    def start_workers(self, extra_env: dict[str, str] | None = None) -> None:
        assert self.stack is not None
        pool, concurrency = self.args.pool, self.args.concurrency
        self.worker_names = []
        for index in (1, 2):
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
        progress(f"starting 2 workers (-Q {','.join(QUEUES)}, --pool {self.args.pool} --concurrency {self.args.concurrency}), beat, "
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

    def post_order(self, customer_id: str) -> dict[str, Any]:
        started = time.time()
        status, body = self.http("POST", "/api/orders/", {"customer_id": customer_id, "total": ORDER_TOTAL})
        answered = time.time()
        if status != 202:
            return {"error": f"{status} {body}", "posted": started, "answered": answered}
        return {"saga_id": body["saga_id"], "order_id": body["id"], "posted": started, "answered": answered}

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

    def wait_idle(self, *, quiet: float = 0.3, timeout: float = 60.0) -> float:
        """Until the broker has had nothing queued or unacknowledged for ``quiet`` seconds."""
        started = time.monotonic()
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            if self.broker_busy() == 0:
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
    """Post ``count`` sagas (kind "saga") or publish ``count`` chains (kind "floor")."""
    assert bench.sampler is not None
    bench.wait_idle()
    if kind == "floor":
        bench.take_chains()
    offsets = bench.log_offsets()
    cpu_before = bench.sampler.sample()
    meter = common.CpuMeter()
    submit = (lambda: bench.post_order(customer_id)) if kind == "saga" else bench.publish_chain  # type: ignore[arg-type]
    posted: list[dict[str, Any]] = []
    wall_start = time.time()
    if saturated:
        rate = bench.args.rate if label.startswith("saturated") else None
        progress(f"{label}: {count} {'orders' if kind == 'saga' else 'chains'} from {bench.args.threads} threads"
                 + (f", paced at {rate:g}/s" if rate else ""))

        def paced(index: int) -> dict[str, Any]:
            if rate:
                delay = wall_start + index / rate - time.time()
                if delay > 0:
                    time.sleep(delay)
            return submit()

        with ThreadPoolExecutor(max_workers=bench.args.threads) as pool:
            posted = list(pool.map(paced, range(count)))
        progress(f"  submitted in {time.time() - wall_start:.1f}s; waiting for the end")
        errors = [p["error"] for p in posted if "error" in p]
        if errors:
            raise RuntimeError(f"{len(errors)} POSTs failed, e.g. {errors[:3]}")
        if kind == "saga":
            ok = bench.wait_sagas([p["saga_id"] for p in posted], timeout=bench.args.timeout, interval=0.25, label=label)
        else:
            ok = bench.wait_chains(count, timeout=bench.args.timeout, interval=0.1, label=label)
    else:
        progress(f"{label}: {count} {'orders' if kind == 'saga' else 'chains'}, one at a time")
        ok = True
        for index in range(count):
            bench.wait_idle(quiet=0.05)
            one = submit()
            if "error" in one:
                raise RuntimeError(f"POST failed: {one['error']}")
            posted.append(one)
            if kind == "saga":
                ok = bench.wait_sagas([one["saga_id"]], timeout=30, interval=0.01) and ok
            else:
                ok = bench.wait_chains(index + 1, timeout=30, interval=0.005) and ok
    wall = time.time() - wall_start
    settle = bench.wait_idle(quiet=0.5, timeout=120)
    cpu = CpuSampler.diff(cpu_before, bench.sampler.sample())
    system = meter.stop()
    tasks = bench.task_times(offsets, bench.log_offsets())
    return {"kind": kind, "count": count, "saturated": saturated, "all_final": ok, "posted": posted, "wall_seconds": round(wall, 3),
            "drain_seconds_after": round(settle, 2), "cpu_seconds": cpu, "system_cpu": system, "task_times": tasks}


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


def run(args: argparse.Namespace, results: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sagas-") as tmp_name:
        bench = Bench(args, Path(tmp_name))
        try:
            bench.services_up()
            bench.migrate_and_token()
            bench.connect()
            info = bench.pg.execute("SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit'), "
                                    "current_setting('max_connections')").fetchone()
            results["info"] = {"postgres": info[0], "fsync": info[1], "synchronous_commit": info[2], "max_connections": info[3],
                               "redis": bench.redis.info("server").get("redis_version")}
            bench.stack_up()
            customers = {name: bench.customer(f"Bench {name}") for name in ("warmup", "unsaturated", "saturated")}
            progress("warm-up: 20 sagas and 20 chains")
            run_phase(bench, "saga", 20, saturated=True, customer_id=customers["warmup"], label="warm-up sagas")
            run_phase(bench, "floor", 20, saturated=True, customer_id=None, label="warm-up floor")
            phases: dict[str, dict[str, Any]] = {}
            phases["saga_unsat"] = run_phase(bench, "saga", args.unsat, saturated=False, customer_id=customers["unsaturated"], label="unsaturated sagas")
            phases["floor_unsat"] = run_phase(bench, "floor", args.unsat, saturated=False, customer_id=None, label="unsaturated floor")
            floor_unsat_chains = bench.take_chains()
            phases["saga_sat"] = run_phase(bench, "saga", args.n, saturated=True, customer_id=customers["saturated"], label="saturated sagas")
            phases["floor_sat"] = run_phase(bench, "floor", args.n, saturated=True, customer_id=None, label="saturated floor")
            floor_sat_chains = bench.take_chains()

            progress("reading the databases' timestamps")
            for key in ("saga_unsat", "saga_sat"):
                collect_saga_rows(bench, phases[key])
            summary = {
                "saga_sat": summarise_sagas(phases["saga_sat"]), "saga_unsat": summarise_sagas(phases["saga_unsat"]),
                "floor_sat": summarise_floor(phases["floor_sat"], floor_sat_chains), "floor_unsat": summarise_floor(phases["floor_unsat"], floor_unsat_chains),
            }
            summary["saga_sat"]["reserve_credit_stream_effect"] = stream_effect(phases["saga_sat"])
            for key, phase in phases.items():
                summary[key]["tasks"] = summarise_tasks(phase["task_times"])
                summary[key]["cpu_seconds"] = phase["cpu_seconds"]
                count = phase["count"]
                summary[key]["cpu_ms_per_item"] = {name: _r(seconds * 1000 / count) for name, seconds in phase["cpu_seconds"].items()}
                summary[key]["system_cpu"] = phase["system_cpu"]
                summary[key]["wall_seconds"] = phase["wall_seconds"]
                summary[key]["drain_seconds_after"] = phase["drain_seconds_after"]
            results["summary"] = summary
            states = dict(bench.pg.execute("SELECT state, count(*) FROM sagas_sagainstance GROUP BY state").fetchall())
            results["final_states"] = states
            expected = 20 + args.unsat + args.n
            results["all_completed"] = states.get("COMPLETED", 0) == expected and sum(states.values()) == expected
            progress(f"saga states: {states} (expected {expected} COMPLETED)")
            results["log_problems"] = bench.log_problems()[:50]

            if args.profile:
                profile_pass(bench, customers["saturated"], results)
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
                if bench.pg is not None:
                    bench.pg.close()
                code = common.services_stop(SERVICES_DIR)
                progress(f"services stopped (exit {code})")


def profile_pass(bench: Bench, customer_id: str, results: dict[str, Any]) -> None:
    """Restart both workers under cProfile (BENCH_PROFILE_DIR), run sagas, write the top functions."""
    import pstats

    count = bench.args.profile_n
    profile_dir = bench.tmp / "profiles"
    progress(f"profile pass: restarting both workers with cProfile, {count} saturated sagas")
    bench.wait_idle()
    bench.stop_workers()
    bench.start_workers({"BENCH_PROFILE_DIR": str(profile_dir)})
    phase = run_phase(bench, "saga", count, saturated=True, customer_id=customer_id, label="profiled sagas")
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
    out = RESULTS_DIR / "profile-sagas.txt"
    with open(out, "w") as handle:
        handle.write(f"# bench/sagas.py --profile: {count} saturated sagas, both workers (--pool {bench.args.pool}) under cProfile, "
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


# =========================================================================================
# Report
# =========================================================================================


def render(results: dict[str, Any]) -> str:
    s = results.get("summary")
    cfg = results["config"]
    lines = [f"Orchestrated create-order sagas vs the bare Celery floor  (PostgreSQL {results.get('info', {}).get('postgres', '?')}, "
             f"Redis {results.get('info', {}).get('redis', '?')}; 2 workers x --pool {cfg['pool']} --concurrency {cfg['concurrency']}, "
             f"all 5 queues each; beat; gunicorn 2 workers)"]
    if not s:
        lines += [f"  ERROR: {e}" for e in results["errors"]]
        return "\n".join(lines) + "\n"
    sat, unsat, fsat, funsat = s["saga_sat"], s["saga_unsat"], s["floor_sat"], s["floor_unsat"]
    header = f"  {'figure':<34} {'sagas':>9} {'floor':>9} {'x floor':>8}  {'goal':<18} {'result':<6}"
    paced = f", paced at {cfg['rate']:g}/s" if cfg.get("rate") else ""
    lines += [f"  saturated: N={cfg['n']} from {cfg['threads']} threads{paced}; unsaturated: {cfg['unsat']} one at a time", header, "  " + "-" * (len(header) - 2)]

    def row(label: str, ours: float | None, floor: float | None, goal: str = "", ok: bool | None = None, spec: str = ",.1f") -> None:
        ratio = f"{ours / floor:.2f}" if ours is not None and floor else "n/a"
        result = common.verdict(ok) if goal else ""
        lines.append(f"  {label:<34} {common.fmt(ours, spec):>9} {common.fmt(floor, spec):>9} {ratio:>8}  {goal:<18} {result:<6}".rstrip())

    tput = sat["throughput_per_s"]
    row("throughput (/s)", tput, fsat["throughput_per_s"], f">= {THROUGHPUT_GOAL:.0f} sagas/s", None if tput is None else tput >= THROUGHPUT_GOAL)
    row("saturated p50 (ms)", sat["latency"]["p50_ms"], fsat["latency"]["p50_ms"])
    row("saturated p99 (ms)", sat["latency"]["p99_ms"], fsat["latency"]["p99_ms"])
    p50 = unsat["latency"]["p50_ms"]
    row("unsaturated p50 (ms)", p50, funsat["latency"]["p50_ms"], f"< {UNSAT_P50_GOAL_MS:.0f} ms", None if p50 is None else p50 < UNSAT_P50_GOAL_MS)
    row("unsaturated p99 (ms)", unsat["latency"]["p99_ms"], funsat["latency"]["p99_ms"])
    row("unsaturated sum of 6 hop p50s (ms)", unsat["hop_sum_p50_ms"], funsat["hop_sum_p50_ms"])
    lines.append("  sagas: latency = saga ended_at - client clock before the POST; throughput = N / (last ended_at - first POST).")
    lines.append("  floor: 6 chained no-op hops on the same workers/queues; latency = last hop start - publish; x floor = sagas / floor.")
    lines.append(f"  final saga states: {results.get('final_states')}  all COMPLETED: {results.get('all_completed')}  "
                 f"steps retried (sat/unsat): {sat['steps_retried']}/{unsat['steps_retried']}")
    lines.append(f"  saturated run's saga log events: {sat.get('saga_log_events')}")
    verify = results.get("verify") or {}
    lines.append(f"  manage.py verify: exit {verify.get('exit')}: {verify.get('summary')}")

    lines.append("")
    lines.append("  Where a saga's time goes: medians per segment, ms (database timestamps)")
    lines.append(f"  {'segment':<58} {'unsat p50':>10} {'sat p50':>10} {'sat p99':>10}")
    for key in unsat["segments"]:
        u, t = unsat["segments"].get(key, {}), sat["segments"].get(key, {})
        lines.append(f"  {key:<58} {common.fmt(u.get('p50_ms'), ',.1f'):>10} {common.fmt(t.get('p50_ms'), ',.1f'):>10} {common.fmt(t.get('p99_ms'), ',.1f'):>10}")
    lines.append(f"  {'hop':<58} {'unsat p50':>10} {'floor u':>10} {'sat p50':>10} {'floor s':>10}")
    names = ["order_create", "reply", "credit_reserve", "reply", "order_approve", "reply"]
    for k in range(1, 7):
        lines.append(f"  {f'hop {k} ({HOP_QUEUES[k - 1]}: {names[k - 1]})':<58} {common.fmt(unsat['hops'].get(str(k), {}).get('p50_ms'), ',.1f'):>10} "
                     f"{common.fmt(funsat['hops'].get(str(k), {}).get('p50_ms'), ',.1f'):>10} {common.fmt(sat['hops'].get(str(k), {}).get('p50_ms'), ',.1f'):>10} "
                     f"{common.fmt(fsat['hops'].get(str(k), {}).get('p50_ms'), ',.1f'):>10}")
    effect = sat.get("reserve_credit_stream_effect", {})
    lines.append(f"  reserve_credit started->processed, first vs last tenth of the saturated run (one customer stream growing to N events): "
                 f"{common.fmt(effect.get('first_tenth_p50_ms'), ',.1f')} -> {common.fmt(effect.get('last_tenth_p50_ms'), ',.1f')} ms")

    lines.append("")
    lines.append("  Worker execution time per task (\"succeeded in\"), saturated saga run")
    lines.append(f"  {'task':<34} {'count':>7} {'per saga':>9} {'p50 ms':>8} {'p99 ms':>8} {'total s':>8} {'share':>6}")
    for name, t in sat["tasks"]["tasks"].items():
        lines.append(f"  {name:<34} {t['count']:>7} {t['count'] / cfg['n']:>9.2f} {common.fmt(t['p50_ms'], ',.2f'):>8} {common.fmt(t['p99_ms'], ',.1f'):>8} "
                     f"{t['total_s']:>8.2f} {t['share_of_busy'] * 100 if t['share_of_busy'] is not None else 0:>5.0f}%")
    fl = fsat["tasks"]
    lines.append(f"  floor run: {sum(t['count'] for t in fl['tasks'].values())} tasks, busy {fl['busy_seconds']} s "
                 f"(p50 {next(iter(fl['tasks'].values()), {}).get('p50_ms')} ms per no-op hop)")
    lines.append("")
    lines.append("  CPU ms per saga / per chain (saturated runs, /proc), and busy cores over the run")
    comps = list(sat["cpu_ms_per_item"])
    lines.append("  " + f"{'':<10}" + "".join(f"{c:>16}" for c in comps) + f"{'busy cores':>12}")
    for key, label in (("saga_sat", "saga"), ("floor_sat", "floor")):
        per = s[key]["cpu_ms_per_item"]
        lines.append("  " + f"{label:<10}" + "".join(f"{common.fmt(per.get(c), ',.2f'):>16}" for c in comps) + f"{common.fmt(s[key]['system_cpu'].get('busy_cores'), '.2f'):>12}")
    for note in results.get("notes", []):
        lines.append(f"  note: {note}")
    for error in results.get("errors", []):
        lines.append(f"  ERROR: {error}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N=100 and 15 unsaturated sagas")
    parser.add_argument("-n", type=int, default=None, help="sagas (and floor chains) in the saturated runs (default 500)")
    parser.add_argument("--unsat", type=int, default=None, help="sagas (and chains) in the unsaturated runs (default 30)")
    parser.add_argument("--threads", type=int, default=8, help="client threads in the saturated runs")
    parser.add_argument("--pool", default="solo", choices=("solo", "prefork", "threads"), help="Celery pool of both workers (default solo; see bench/README.md)")
    parser.add_argument("--concurrency", type=int, default=1, help="pool size per worker (solo is always 1)")
    parser.add_argument("--rate", type=float, default=None, help="diagnostic: pace the saturated runs' submissions at this many per second "
                        "(open loop) instead of as fast as the threads go")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds to wait for a saturated run to finish")
    parser.add_argument("--profile", action="store_true", help="also a cProfiled pass of --profile-n sagas (bench/results/profile-sagas.txt)")
    parser.add_argument("--profile-n", type=int, default=200)
    parser.add_argument("--keep-logs", metavar="DIR", help="copy the processes' logs here at the end")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "sagas.json")
    args = parser.parse_args(argv)
    args.n = args.n or (100 if args.quick else 500)
    args.unsat = args.unsat or (15 if args.quick else 30)
    if args.pool == "solo":
        args.concurrency = 1
    started = time.perf_counter()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "sagas", "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": common.machine_info(),
        "config": {"n": args.n, "unsat": args.unsat, "threads": args.threads, "pool": args.pool, "concurrency": args.concurrency,
                   "workers": 2, "queues": list(QUEUES), "gunicorn_workers": 2, "settings": SETTINGS, "order_total": ORDER_TOTAL,
                   "credit_limit": CREDIT_LIMIT, "floor_hop_queues": HOP_QUEUES, "warmup": 20, "rate": args.rate, "quick": args.quick, "profile": args.profile},
        "goals": [f"sagas/s >= {THROUGHPUT_GOAL:.0f}", f"unsaturated p50 < {UNSAT_P50_GOAL_MS:.0f} ms"],
        "errors": [], "notes": [],
    }
    # The load average lags (it still counts a run that just ended): sample the CPU for 2 s instead.
    meter = common.CpuMeter()
    time.sleep(2)
    busy = meter.stop()["busy_cores"]
    results["busy_cores_before"] = busy
    progress(f"saga bench: N={args.n}, unsaturated {args.unsat}, {args.threads} threads, --pool {args.pool} --concurrency {args.concurrency}; "
             f"busy cores over the 2 s before: {busy}")
    if busy is not None and busy > 0.2:
        results["notes"].append(f"{busy} cores were busy in the 2 s before the run: something else was using the CPU")
    run(args, results)
    s = results.get("summary")
    if s:
        tput, p50 = s["saga_sat"]["throughput_per_s"], s["saga_unsat"]["latency"]["p50_ms"]
        results["goal_results"] = [
            {"goal": results["goals"][0], "value": tput, "pass": None if tput is None else tput >= THROUGHPUT_GOAL},
            {"goal": results["goals"][1], "value": p50, "pass": None if p50 is None else p50 < UNSAT_P50_GOAL_MS},
        ]
    results["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(render(results))
    progress(f"done in {results['elapsed_seconds']:.0f}s; results in {args.output}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
