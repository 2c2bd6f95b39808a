"""Plain GET /api/orders/{id}/ while a flood of ``?min_version=`` waits for a version that never
comes, side by side with the same plain load and no flood, on real gunicorn (2 sync workers).

Run from the repository root::

    .venv/bin/python bench/readyourwrites.py            # full run: 3 x 10 s per figure, about 2 minutes
    .venv/bin/python bench/readyourwrites.py --quick    # smoke run: 1 x 4 s per figure
    .venv/bin/python bench/readyourwrites.py -d 20 -n 5

Set-up: the embedded default (SQLite files in a temporary ``VAR_DIR``, the embedded
redis-server as broker and cache), ``manage.py migrate_all``, one order projected into the read
model, a user and a DRF token. gunicorn runs as the README's production command
(``gunicorn config.wsgi --workers 2``, no access log) with ``READ_YOUR_WRITES_WAIT_SECONDS=3``
(the default) and ``API_THROTTLE_USER`` high enough never to refuse.

Load: plain reads of the order, open-loop at ``--plain-rate`` per second (requests leave on a
fixed schedule whatever the answers do, and each latency is counted from its scheduled
departure, so a stalled server cannot hide its stall by slowing the client down). In the flood
runs, also ``--flood-clients`` clients that each send ``?min_version=999999`` reads of the same
order, one after the other, at most ``--flood-rate`` per second in all (each read would wait
the full 3 s if it could). Figures: the plain reads' median, p99 and max latency, and how the
flood reads were answered (their ``X-Read-Your-Writes`` header).

Rows, each the median over the runs (the runs alternate):

* ``baseline``: the plain load alone (``READ_YOUR_WRITES_MAX_WAITERS=1``, the default);
* ``flood, bounded``: plus the flood, same server: at most one read waits on the machine;
* ``flood, unbounded``: plus the flood, on a gunicorn with ``READ_YOUR_WRITES_MAX_WAITERS=1000``,
  which is what every wait did before the bound: hold its worker.

Goal: the plain reads' p99 under the bounded flood within 2x of the baseline's.
Results: ``bench/results/readyourwrites.json`` and a table on stdout. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from _common import BASE_DIR, RESULTS_DIR, fmt, verdict  # noqa: E402

P99_FACTOR_GOAL = 2.0
NEVER = 999_999

SEED = """
import uuid
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from eventlog.domain import MessageContext
from eventlog.relay import outbox_relay
from eventlog.subscriptions import subscriber_advance
from orders.services import order_create
from readmodels.projections import PROJECTIONS, subscriber_name
order = order_create(customer_id=uuid.uuid4(), total="5.00", mode="orchestration", context=MessageContext())
outbox_relay("orders")
for projection in PROJECTIONS.values():
    subscriber_advance(subscriber_name(projection))
token = Token.objects.create(user=get_user_model().objects.create_user("bench-ryw"))
print("SEEDED", order.id, token.key)
"""


def progress(message: str) -> None:
    common.log(message, prefix="readyourwrites")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Web:
    """One gunicorn, as the README's production command runs it."""

    def __init__(self, env: dict[str, str], *, max_waiters: int, log: Path) -> None:
        self.port = free_port()
        env = {**env, "READ_YOUR_WRITES_MAX_WAITERS": str(max_waiters)}
        argv = [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--graceful-timeout", "5"]
        self.process = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if request(self.port, "/healthz", None)[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer (see {log})")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def request(port: int, path: str, token: str | None) -> tuple[int, str | None]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", path, headers={"Authorization": f"Token {token}"} if token else {})
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("X-Read-Your-Writes")
    finally:
        connection.close()


def run_load(port: int, token: str, order_id: str, *, seconds: float, plain_rate: float, flood_rate: float, flood_clients: int) -> dict[str, Any]:
    """Open-loop plain reads, and paced flood clients; plain latencies from the scheduled time."""
    plain: list[float] = []
    timeline: list[tuple[float, float]] = []  # (scheduled offset, latency) of each plain read
    flood: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=128)
    start = time.monotonic()
    end = start + seconds

    def plain_read(scheduled: float) -> None:
        try:
            status, _ = request(port, f"/api/orders/{order_id}/", token)
        except OSError as exc:
            with lock:
                errors[f"plain: {type(exc).__name__}"] += 1
            return
        latency = time.monotonic() - scheduled
        with lock:
            if status == 200:
                plain.append(latency)
                timeline.append((scheduled - start, latency))
            else:
                errors[f"plain: HTTP {status}"] += 1

    def flood_client(first: float) -> None:
        interval = flood_clients / flood_rate
        next_at = first
        while next_at < end:
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                status, header = request(port, f"/api/orders/{order_id}/?min_version={NEVER}", token)
                with lock:
                    if status == 200:
                        flood[header or "none"] += 1
                    else:
                        errors[f"flood: HTTP {status}"] += 1
            except OSError as exc:
                with lock:
                    errors[f"flood: {type(exc).__name__}"] += 1
            next_at = max(next_at + interval, time.monotonic())

    meter = common.CpuMeter()
    flooders = [threading.Thread(target=flood_client, args=(start + i / flood_rate,)) for i in range(flood_clients)] if flood_rate else []
    for thread in flooders:
        thread.start()
    for i in range(int(seconds * plain_rate)):
        scheduled = start + i / plain_rate
        delay = scheduled - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        pool.submit(plain_read, scheduled)
    pool.shutdown(wait=True)
    for thread in flooders:
        thread.join()
    cpu = meter.stop()
    plain.sort()
    p99 = plain[min(len(plain) - 1, int(len(plain) * 0.99))] if plain else None
    return {
        "seconds": seconds, "plain_sent": int(seconds * plain_rate), "plain_ok": len(plain),
        "plain_p50_ms": round(statistics.median(plain) * 1000, 2) if plain else None,
        "plain_p99_ms": round(p99 * 1000, 2) if p99 is not None else None,
        "plain_max_ms": round(plain[-1] * 1000, 2) if plain else None,
        # When the slowest plain reads were sent (seconds into the run): one stall of the machine
        # shows as a cluster, a steady effect of the load as a spread.
        "plain_slowest": [(round(at, 2), round(latency * 1000, 1)) for at, latency in sorted(timeline, key=lambda t: -t[1])[:8]],
        "flood_answers": dict(flood), "errors": dict(errors), "cpu": cpu,
    }


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 run of 4 s per figure")
    parser.add_argument("-d", "--duration", type=float, default=10.0, help="seconds per run")
    parser.add_argument("-n", "--runs", type=int, default=3)
    parser.add_argument("--plain-rate", type=float, default=100.0, help="plain reads per second")
    parser.add_argument("--flood-rate", type=float, default=20.0, help="never-satisfied min_version reads per second, at most")
    parser.add_argument("--flood-clients", type=int, default=8, help="clients sending them, each one read at a time")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "readyourwrites.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.runs = 4.0, 1
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so that the finally below stops what it started
    tmp = Path(tempfile.mkdtemp(prefix="bench-ryw-"))
    broker, url = common.embedded_broker(tmp / "run")
    webs: list[Web] = []
    try:
        env = {**common.base_env(), "VAR_DIR": str(tmp), "CELERY_BROKER_URL": url, "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
               "API_THROTTLE_USER": "100000000/minute", "READ_YOUR_WRITES_WAIT_SECONDS": "3"}
        progress("manage.py migrate_all")
        common.manage(["migrate_all"], env)
        seeded = common.manage(["shell", "-c", SEED], env).split("SEEDED", 1)[1].split()
        order_id, token = seeded[0], seeded[1]
        bounded = Web(env, max_waiters=1, log=tmp / "web-bounded.log")
        webs.append(bounded)
        unbounded = Web(env, max_waiters=1000, log=tmp / "web-unbounded.log")
        webs.append(unbounded)
        load = {"token": token, "order_id": order_id, "seconds": args.duration, "plain_rate": args.plain_rate, "flood_clients": args.flood_clients}
        for web in webs:  # warm-up: every worker imports, connects, caches the order
            run_load(web.port, **{**load, "seconds": 2.0, "flood_rate": 0.0})
        rows: dict[str, list[dict[str, Any]]] = {"baseline": [], "flood, bounded": [], "flood, unbounded": []}
        for run in range(args.runs):
            for name, web, flood_rate in (("baseline", bounded, 0.0), ("flood, bounded", bounded, args.flood_rate), ("flood, unbounded", unbounded, args.flood_rate)):
                progress(f"run {run + 1}/{args.runs}: {name}")
                rows[name].append(run_load(web.port, flood_rate=flood_rate, **load))
                time.sleep(1.0)
    finally:
        for web in webs:
            web.stop()
        broker.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    summary = {name: {"plain_p50_ms": median_of(runs, "plain_p50_ms"), "plain_p99_ms": median_of(runs, "plain_p99_ms"),
                      "plain_max_ms": median_of(runs, "plain_max_ms")} for name, runs in rows.items()}
    base = summary["baseline"]["plain_p99_ms"]
    for name in ("flood, bounded", "flood, unbounded"):
        p99 = summary[name]["plain_p99_ms"]
        summary[name]["p99_x_baseline"] = round(p99 / base, 2) if p99 is not None and base else None
    ratio = summary["flood, bounded"]["p99_x_baseline"]
    results = {
        "benchmark": "readyourwrites", "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": common.machine_info(),
        "setup": {"tier": "embedded (SQLite + embedded redis)", "gunicorn_workers": 2, "wait_seconds": 3, "duration_s": args.duration, "runs": args.runs,
                  "plain_rate": args.plain_rate, "flood_rate": args.flood_rate, "flood_clients": args.flood_clients, "never_version": NEVER},
        "goal": {"plain_p99_flood_bounded_x_baseline_at_most": P99_FACTOR_GOAL, "met": None if ratio is None else ratio <= P99_FACTOR_GOAL},
        "summary": summary, "runs": rows,
    }
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"{'row':<18} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99 x base':>10}  flood answers (X-Read-Your-Writes)")
    for name, runs in rows.items():
        s = summary[name]
        answers: Counter[str] = Counter()
        for r in runs:
            answers.update(r["flood_answers"])
        errors = sum(sum(r["errors"].values()) for r in runs)
        print(f"{name:<18} {fmt(s['plain_p50_ms'], '.1f'):>8} {fmt(s['plain_p99_ms'], '.1f'):>8} {fmt(s['plain_max_ms'], '.1f'):>8} "
              f"{fmt(s.get('p99_x_baseline'), '.2f'):>10}  {dict(answers) or '-'}{f'  ERRORS {errors}' if errors else ''}")
    print(f"goal: bounded flood p99 <= {P99_FACTOR_GOAL}x baseline: {verdict(results['goal']['met'])}   -> {args.output}")
    return 0


if __name__ == "__main__":
    os.chdir(BASE_DIR)
    sys.exit(main())
