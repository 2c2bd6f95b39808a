"""GET /api/orders/{id}/ under load, next to a bare Django view doing one primary-key select.

Run from the repository root::

    .venv/bin/python bench/query.py               # full run: 3 x 15 s per figure, about 4 minutes
    .venv/bin/python bench/query.py --quick       # smoke run: 1 x 4 s per figure
    .venv/bin/python bench/query.py -d 30 -n 5    # longer / more runs

Set-up: the private PostgreSQL + Redis of ``scripts/services.sh`` (in /tmp/bench-services-rq-query,
stopped at the end), ``manage.py migrate_all``, then about 1,000 orders seeded into the read model
(a synthetic history written to the central log, see bench/_common.py, folded by the live
projections with ``subscriber_advance``; every row is checked), a user and a DRF token.

One gunicorn (the production command of the README, ``gunicorn config.wsgi``, with ``--workers 2``,
one sync worker per core, no access log) runs with
``DJANGO_SETTINGS_MODULE=bench.bare_settings``: the project's settings plus one extra URL,
``/bare/<uuid>/``, a plain function view doing ``OrderSummary.objects.using("readmodels")
.filter(pk=pk).values().first()`` and returning a JsonResponse (bench/bare_urls.py). The
environment is the services' (PostgreSQL, Redis cache), ``DJANGO_ALLOWED_HOSTS=127.0.0.1`` and
``API_THROTTLE_USER=100000000/minute`` (the throttle runs on every request, it just never refuses).
Everything else is the project's default configuration, as in production: token authentication
with valid tokens remembered per process for ``API_TOKEN_CACHE_SECONDS`` (5 s), the user
throttle's counter and the cached order fetched in one Redis round trip, all the middleware.
After the warm-up every API read is a cache hit; the bare view selects its row every time.

Load: wrk, 2 threads, 16 connections, 15 s per run, every request a random id of the seeded
orders (a Lua script), ``Authorization: Token ...`` on every request (the bare view ignores it).
A warm-up run of each endpoint first, then the endpoints alternate, 3 runs each. Figures are the
medians over the runs: requests/s, p50 and p99 latency (wrk's latency distribution). A run with any
non-2xx response or socket error is reported as such.

A diagnostic run follows (unless ``--no-diagnostic``): the same API with DRF's throttle classes off
(``BENCH_NO_THROTTLE=1`` in bench/bare_settings.py), to show what the throttle costs (the read then
makes its one round trip itself). Then, without
gunicorn, a cProfile of 2,000 in-process requests to each endpoint (Django's test client) goes to
``bench/results/profile-query.txt``, and 200 more requests per endpoint are counted: SQL
statements, PostgreSQL and Redis round trips per request (``counts`` in the JSON, and a line per
endpoint under the table).

Goals: the API's requests/s >= 70% of the bare view's, and its p99 within 2x of the bare view's.
Results: ``bench/results/query.json`` and a table on stdout. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import http.client
import io
import json
import os
import pstats
import random
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from _common import BASE_DIR, RESULTS_DIR, fmt, verdict  # noqa: E402

SCRIPT = Path(__file__).resolve()
PG_SERVICES_DIR = common.services_dir("-rq-query")
SETTINGS = "bench.bare_settings"
THROTTLE_RATE = "100000000/minute"
USERNAME = "bench-query"
SEED_EVENTS = 3_450  # about 1,000 orders with the generator's mix
RPS_SHARE_GOAL = 0.70
P99_FACTOR_GOAL = 2.0
PROFILE_REQUESTS = 2_000
CONTENDED_CORES = 0.25  # other processes' CPU during a run above which the run is flagged
ENDPOINTS = {"api": "/api/orders/", "bare": "/bare/"}

LUA = r"""
-- bench/query.py: GET <prefix><random seeded order id>/ ; the prefix is the first script argument.
local ids = {%(ids)s}
local prefix = "/api/orders/"
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

function init(args)
  if args[1] ~= nil then prefix = args[1] end
  math.randomseed(os.time() * 1000 + (thread_number or 0) * 7919)
end

function request()
  return wrk.format("GET", prefix .. ids[math.random(#ids)] .. "/")
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests": %%d, "duration_us": %%d, "bytes": %%d, "errors": {"connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}, ' ..
    '"latency_us": {"mean": %%.1f, "stdev": %%.1f, "max": %%d, "p50": %%d, "p75": %%d, "p90": %%d, "p99": %%d, "p99_9": %%d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max, latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


def progress(message: str) -> None:
    common.log(message, prefix="query")


# =========================================================================================
# Workers (child processes with the database environment set)
# =========================================================================================


def worker_seed(params: dict[str, Any]) -> dict[str, Any]:
    """Empty log and read models, fold a fresh history with the live projections, make a token."""
    common.django_setup()
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.db import connections
    from rest_framework.authtoken.models import Token

    from eventlog.models import LogEvent
    from eventlog.subscriptions import subscriber_advance
    from readmodels.projections import PROJECTIONS, subscriber_name

    common.tables_empty("eventlog", [LogEvent._meta.db_table], restart_identity=True)
    common.readmodels_empty()
    cache.clear()
    events, expected = common.generate_history(params["events"], seed=params["seed"])
    common.log_insert(events)
    consumed = {p.name: subscriber_advance(subscriber_name(p), batch_size=1000) for p in PROJECTIONS.values()}
    check = common.readmodels_compare(expected)
    if not check["ok"]:
        raise RuntimeError(f"seeded read models differ from the expected rows: {json.dumps(check['tables'])}")
    user, _ = get_user_model().objects.get_or_create(username=USERNAME)
    token, _ = Token.objects.get_or_create(user=user)
    orders = expected["orders"]
    with connections["readmodels"].cursor() as cursor:
        cursor.execute("SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit'), current_setting('max_connections')")
        version, fsync, sync_commit, max_connections = cursor.fetchone()
    return {
        "token": token.key,
        "ids": [str(order_id) for order_id in orders],
        "sample": {str(k): {"state": v["state"], "version": v["version"], "customer_name": v["customer_name"]} for k, v in list(orders.items())[:20]},
        "history": common.history_summary(events, expected),
        "consumed": consumed,
        "check": check,
        "info": {"server_version": version, "fsync": fsync, "synchronous_commit": sync_commit, "max_connections": max_connections,
                 "cache": settings_cache()},
    }


def settings_cache() -> str:
    from django.conf import settings

    return f"{settings.CACHES['default']['BACKEND']} {str(settings.CACHES['default'].get('LOCATION', ''))}"


def worker_profile(params: dict[str, Any]) -> dict[str, Any]:
    """In-process (no gunicorn, no network to the client): time and cProfile both endpoints."""
    common.django_setup()
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Token {params['token']}")
    rng = random.Random(7)
    ids = params["ids"]
    n = params["requests"]
    result: dict[str, Any] = {"requests": n}
    text = io.StringIO()
    text.write(f"In-process cProfile of {n:,} GET requests per endpoint through Django's test client (settings {SETTINGS}, "
               f"PostgreSQL + Redis of scripts/services.sh, throttle rate {THROTTLE_RATE}, warm cache).\n"
               "No gunicorn and no HTTP parsing: this is the Django/DRF side of one request.\n")
    for name, prefix in ENDPOINTS.items():
        paths = [f"{prefix}{rng.choice(ids)}/" for _ in range(n)]
        for path in paths[:300]:  # warm-up: connections, imports, cache entries
            response = client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.content[:300]!r}")
        started = time.perf_counter()
        for path in paths:
            client.get(path)
        plain = time.perf_counter() - started
        profiler = cProfile.Profile()
        profiler.enable()
        for path in paths:
            client.get(path)
        profiler.disable()
        result[name] = {"ms_per_request": round(plain / n * 1000, 3), "counts": count_per_request(client, paths[:COUNTED_REQUESTS])}
        text.write(f"\n\n######## {name}: GET {prefix}<id>/  ({plain / n * 1000:.3f} ms per request without the profiler)\n")
        text.write("\n=== top 25 by cumulative time ===\n")
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("cumulative").print_stats(25)
        text.write("\n=== top 25 by own time (tottime) ===\n")
        pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(25)
    Path(params["profile_to"]).write_text(text.getvalue())
    result["path"] = params["profile_to"]
    return result


COUNTED_REQUESTS = 200


def count_per_request(client: Any, paths: list[str]) -> dict[str, Any]:
    """Statements (``execute_wrapper`` on every alias), PostgreSQL round trips
    (``_common.count_pg_round_trips``) and Redis round trips (redis-py's ``send_packed_command``: a pipeline is one) per request,
    over ``paths`` after the timed passes: a regression shows as a number."""
    import contextlib

    import redis.connection
    from django.db import connections

    counts = {"statements": 0, "pg_round_trips": 0, "redis_round_trips": 0}

    def watch(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        counts["statements"] += 1
        return execute(sql, params, many, context)

    original_send = redis.connection.AbstractConnection.send_packed_command

    def counting_send(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["redis_round_trips"] += 1
        return original_send(self, *args, **kwargs)

    def counted(n: int) -> None:
        counts["pg_round_trips"] += n

    undo = []
    with contextlib.ExitStack() as stack:
        for alias in connections:
            connection = connections[alias]
            stack.enter_context(connection.execute_wrapper(watch))
            if connection.vendor == "postgresql" and connection.connection is not None:
                undo.append(common.count_pg_round_trips(connection.connection, counted))
        redis.connection.AbstractConnection.send_packed_command = counting_send  # type: ignore[method-assign]
        try:
            for path in paths:
                client.get(path)
        finally:
            redis.connection.AbstractConnection.send_packed_command = original_send  # type: ignore[method-assign]
            for step in undo:
                step()
    return {"requests": len(paths), **counts, **{f"{key}_per_request": round(value / len(paths), 3) for key, value in counts.items()}}


WORKERS = {"seed": worker_seed, "profile": worker_profile}


def worker_main(kind: str, params_json: str, out: str) -> int:
    try:
        result = WORKERS[kind](json.loads(params_json))
    except BaseException as exc:
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    Path(out).write_text(json.dumps(result, default=str))
    return 0


# =========================================================================================
# gunicorn, wrk, CPU accounting (parent process)
# =========================================================================================


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """``python -m gunicorn config.wsgi --bind 127.0.0.1:PORT --workers 2`` in its own session."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int) -> None:
        self.port = free_port()
        self.log_path = log_path
        argv = [sys.executable, "-m", "gunicorn", "config.wsgi", "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)]
        self.argv = argv
        self.log_file = open(log_path, "ab")
        self.popen = subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdin=subprocess.DEVNULL, stdout=self.log_file, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, path: str, headers: dict[str, str], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(f"gunicorn exited with code {self.popen.returncode}; see {self.log_path}")
            try:
                status, _ = http_get(self.port, path, headers)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"gunicorn did not answer 200 on {path} within {timeout:.0f}s; see {self.log_path}")
            time.sleep(0.2)

    def worker_pids(self) -> list[int]:
        return [self.popen.pid, *children(self.popen.pid)]

    def stop(self) -> None:
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)  # the session of the process we started
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)
        self.log_file.close()


def http_get(port: int, path: str, headers: dict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def cpu_ticks(pids: list[int]) -> dict[int, int]:
    """utime + stime of each live pid, in clock ticks."""
    ticks: dict[int, int] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])
    return ticks


def cpu_delta(before: dict[int, int], after: dict[int, int]) -> int:
    """CPU used between two snapshots by the processes alive at the end (a process that exited
    in between is not counted; one that started in between counts whole)."""
    return sum(ticks - before.get(pid, 0) for pid, ticks in after.items())


def service_pids(services: dict[str, str]) -> dict[str, list[int]]:
    """The services' processes: the postmaster and its children, and redis-server."""
    pids: dict[str, list[int]] = {"postgres": [], "redis": []}
    try:
        postmaster = int(Path(services["SERVICES_PG_DATA"], "postmaster.pid").read_text().split()[0])
        pids["postgres"] = [postmaster, *children(postmaster)]
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        pids["redis"] = [int(Path(services["SERVICES_DIR"], "redis.pid").read_text().strip())]
    except (OSError, KeyError, ValueError):
        pass
    return pids


def wrk_run(wrk: str, port: int, script: Path, prefix: str, token: str, *, threads: int, connections: int, duration: int,
            gunicorn: Gunicorn, services: dict[str, str]) -> dict[str, Any]:
    argv = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--latency", "--timeout", "10s",
            "-H", f"Authorization: Token {token}", "-s", str(script), f"http://127.0.0.1:{port}", "--", prefix]
    groups = {"gunicorn": gunicorn.worker_pids(), **service_pids(services)}
    before: dict[int, int] = {}
    for pids in groups.values():
        before.update(cpu_ticks(pids))
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    meter = common.CpuMeter()
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    machine = meter.stop()
    usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # Backends started during the run are children now: count them from the end snapshot too.
    groups = {"gunicorn": gunicorn.worker_pids(), **service_pids(services)}
    after = {name: cpu_ticks(pids) for name, pids in groups.items()}
    if completed.returncode != 0:
        raise RuntimeError(f"wrk exited {completed.returncode}: {completed.stderr.strip()[-1000:]}")
    match = re.search(r"^JSON (\{.*\})$", completed.stdout, re.MULTILINE)
    if not match:
        raise RuntimeError(f"no summary line in wrk's output:\n{completed.stdout[-2000:]}")
    summary = json.loads(match.group(1))
    seconds = summary["duration_us"] / 1e6
    requests = summary["requests"]
    tick = os.sysconf("SC_CLK_TCK")
    cpu = {name: cpu_delta(before, after[name]) / tick for name in groups}
    cpu["wrk"] = (usage_after.ru_utime - usage_before.ru_utime) + (usage_after.ru_stime - usage_before.ru_stime)
    errors = summary["errors"]
    # CPU the machine spent on anything but this bench's processes: another load competing.
    machine["foreign_cores"] = round(max(machine["busy_cpu_seconds"] - sum(cpu.values()), 0.0) / seconds, 2)
    return {
        "requests": requests, "seconds": round(seconds, 3), "rps": round(requests / seconds, 1),
        "p50_ms": summary["latency_us"]["p50"] / 1000, "p90_ms": summary["latency_us"]["p90"] / 1000,
        "p99_ms": summary["latency_us"]["p99"] / 1000, "max_ms": summary["latency_us"]["max"] / 1000,
        "mean_ms": round(summary["latency_us"]["mean"] / 1000, 3),
        "errors": errors, "ok": all(v == 0 for v in errors.values()),
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_ms_per_request": {k: round(v * 1000 / requests, 3) if requests else None for k, v in cpu.items()},
        "machine": machine,
        "wrk_text": completed.stdout.split("JSON ", 1)[0].strip(),
    }


# =========================================================================================
# Orchestration
# =========================================================================================


def median_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in runs if r.get("ok")]
    return round(statistics.median(values), 3) if values else None


def summarise(figures: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for name, runs in figures.items():
        summary[name] = {key: median_of(runs, key) for key in ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms")}
        summary[name]["runs_ok"] = sum(1 for r in runs if r.get("ok"))
        summary[name]["runs"] = len(runs)
        cpu_keys = sorted({k for r in runs for k in r.get("cpu_ms_per_request", {})})
        summary[name]["cpu_ms_per_request"] = {k: round(statistics.median(r["cpu_ms_per_request"][k] for r in runs if r.get("ok")), 3)
                                               for k in cpu_keys if any(r.get("ok") for r in runs)}
    bare = summary.get("bare", {})
    for s in summary.values():
        s["rps_vs_bare"] = round(s["rps"] / bare["rps"], 3) if s.get("rps") and bare.get("rps") else None
        s["p99_vs_bare"] = round(s["p99_ms"] / bare["p99_ms"], 3) if s.get("p99_ms") and bare.get("p99_ms") else None
    api = summary.get("api", {})
    goals = [
        {"goal": f"API req/s >= {RPS_SHARE_GOAL:.0%} of the bare view's", "value": api.get("rps_vs_bare"),
         "pass": None if api.get("rps_vs_bare") is None else api["rps_vs_bare"] >= RPS_SHARE_GOAL},
        {"goal": f"API p99 <= {P99_FACTOR_GOAL:g} x the bare view's", "value": api.get("p99_vs_bare"),
         "pass": None if api.get("p99_vs_bare") is None else api["p99_vs_bare"] <= P99_FACTOR_GOAL},
    ]
    return {"figures": summary, "goals": goals}


LABELS = {"api": "GET /api/orders/{id}/", "bare": "bare view /bare/{id}/", "api_no_throttle": "API, throttle off (diagnostic)"}


def render(results: dict[str, Any]) -> str:
    summary = results.get("summary")
    cfg = results["config"]
    if not summary:
        return "query bench: FAILED - " + "; ".join(results.get("errors", [])) + "\n"
    info = results.get("info", {})
    lines = [f"GET /api/orders/{{id}}/ vs a bare view  (gunicorn --workers {cfg['workers']} sync, PostgreSQL {info.get('server_version', '?').split()[0]} + Redis cache; "
             f"wrk -t{cfg['threads']} -c{cfg['connections']} -d{cfg['duration']}s, {results.get('orders', '?'):,} random order ids; median of {cfg['runs']} runs)"]
    header = f"  {'figure':<32} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'x bare req/s':>13} {'x bare p99':>11}  {'CPU ms/req: gunicorn / postgres / redis / wrk':<44}"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for name, s in summary["figures"].items():
        cpu = s.get("cpu_ms_per_request", {})
        cpu_text = " / ".join(fmt(cpu.get(k), ".3f") for k in ("gunicorn", "postgres", "redis", "wrk"))
        runs = "" if s["runs_ok"] == s["runs"] else f"  ({s['runs'] - s['runs_ok']} run(s) with errors left out)"
        lines.append(f"  {LABELS.get(name, name):<32} {fmt(s['rps']):>8} {fmt(s['p50_ms'], '.2f'):>8} {fmt(s['p99_ms'], '.2f'):>8} "
                     f"{fmt(s['rps_vs_bare'], '.2f'):>13} {fmt(s['p99_vs_bare'], '.2f'):>11}  {cpu_text:<44}{runs}")
    for goal in summary["goals"]:
        value = "n/a" if goal["value"] is None else f"{goal['value']:.2f}"
        lines.append(f"  goal: {goal['goal']:<44} {value:>6}  {verdict(goal['pass'])}")
    prof = results.get("profile") or {}
    if prof.get("api") and prof.get("bare"):
        lines.append(f"  in-process (test client, no gunicorn): API {prof['api']['ms_per_request']:.3f} ms/request, bare {prof['bare']['ms_per_request']:.3f} ms/request "
                     f"(profile: {Path(prof['path']).relative_to(BASE_DIR) if Path(prof['path']).is_relative_to(BASE_DIR) else prof['path']})")
        for name in ("api", "bare"):
            c = prof[name].get("counts")
            if c:
                lines.append(f"  per request ({name}, {c['requests']} in-process requests counted): SQL statements {c['statements_per_request']:g}, "
                             f"PostgreSQL round trips {c['pg_round_trips_per_request']:g}, Redis round trips {c['redis_round_trips_per_request']:g}")
    foreign = [r["machine"]["foreign_cores"] for runs in results.get("runs", {}).values() for r in runs if r.get("machine")]
    if foreign:
        lines.append(f"  machine: other processes used {max(foreign):.2f} cores at most during a measured run"
                     + ("  (CONTENDED: another load competed for the 2 cores; rerun on a quiet machine)" if max(foreign) > CONTENDED_CORES else ""))
    lines.append("  CPU ms/req: CPU time of each process group during the runs divided by the requests served (2 cores in all).")
    for note in results.get("notes", []):
        lines.append(f"  note: {note}")
    for error in results.get("errors", []):
        lines.append(f"  ERROR: {error}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 run of 4 s per figure, 2 s warm-ups, a shorter profile")
    parser.add_argument("-d", "--duration", type=int, default=None, help="seconds per wrk run (default 15; 4 with --quick)")
    parser.add_argument("-n", "--runs", type=int, default=None, help="measured runs per figure (default 3; 1 with --quick)")
    parser.add_argument("--warmup", type=int, default=None, help="seconds of the warm-up run per figure (default 5; 2 with --quick)")
    parser.add_argument("-t", "--threads", type=int, default=2)
    parser.add_argument("-c", "--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--no-diagnostic", dest="diagnostic", action="store_false", help="skip the throttle-off diagnostic run")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the in-process cProfile")
    parser.add_argument("--seed", type=int, default=20250102)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "query.json")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_params", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        return worker_main(args._worker, args._params, args._out)

    duration = args.duration or (4 if args.quick else 15)
    runs = args.runs or (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 5)
    started = time.perf_counter()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "benchmark": "query", "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": common.machine_info(),
        "config": {"duration": duration, "runs": runs, "warmup": warmup, "threads": args.threads, "connections": args.connections,
                   "workers": args.workers, "worker_class": "sync", "settings": SETTINGS, "throttle_user": THROTTLE_RATE, "quick": args.quick,
                   "api_token_cache_seconds": os.environ.get("API_TOKEN_CACHE_SECONDS", "5 (default)")},
        "goals": [f"API req/s >= {RPS_SHARE_GOAL:.0%} of the bare view's", f"API p99 <= {P99_FACTOR_GOAL:g} x the bare view's"],
        "errors": [], "notes": [], "runs": {},
    }
    wrk = shutil.which("wrk")
    if wrk is None:
        results["errors"].append("wrk is not installed (apt-get install -y wrk)")
    else:
        version = subprocess.run([wrk, "--version"], capture_output=True, text=True, check=False)
        results["config"]["wrk"] = (version.stdout or version.stderr).splitlines()[0].strip() if (version.stdout or version.stderr) else "?"
    services: dict[str, str] | None = None
    gunicorn: Gunicorn | None = None
    with tempfile.TemporaryDirectory(prefix="bench-query-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            if wrk is None:
                raise RuntimeError("wrk is not installed")
            progress(f"bash scripts/services.sh start {PG_SERVICES_DIR}")
            services, error = common.services_start(PG_SERVICES_DIR)
            if services is None:
                raise RuntimeError(f"PostgreSQL/Redis unavailable: {error}")
            env = {**common.base_env(), **services, "DJANGO_SETTINGS_MODULE": SETTINGS, "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
                   "API_THROTTLE_USER": THROTTLE_RATE}
            progress("manage.py migrate_all")
            common.manage(["migrate_all"], env)
            progress(f"seeding the read model: {SEED_EVENTS:,} log events folded by the live projections")
            seed = common.run_worker(SCRIPT, "seed", {"events": SEED_EVENTS, "seed": args.seed}, env, tmp / "seed.json", timeout=600)
            if "error" in seed:
                print(seed.get("traceback", ""), file=sys.stderr)
                raise RuntimeError(f"seeding failed: {seed['error']}")
            ids, token = seed["ids"], seed["token"]
            results.update(orders=len(ids), history=seed["history"], info=seed["info"], seed_check={t: v["actual"] for t, v in seed["check"]["tables"].items()})
            progress(f"seeded {len(ids):,} orders ({seed['history']['events']:,} events; every row checked); token for user {USERNAME!r}")
            script = tmp / "orders.lua"
            script.write_text(LUA % {"ids": ", ".join(f'"{i}"' for i in ids)})
            headers = {"Authorization": f"Token {token}", "Host": "127.0.0.1"}

            def serve(extra_env: dict[str, str], label: str) -> Gunicorn:
                server = Gunicorn({**env, **extra_env}, tmp / f"gunicorn-{label}.log", args.workers)
                server.wait_ready(f"/bare/{ids[0]}/", headers)
                # Correctness before load: both endpoints answer the seeded rows.
                for order_id, expected in list(seed["sample"].items())[:5]:
                    for prefix in ENDPOINTS.values():
                        status, body = http_get(server.port, f"{prefix}{order_id}/", headers)
                        row = json.loads(body) if status == 200 else {}
                        if status != 200 or row.get("id") != order_id or row.get("state") != expected["state"] or row.get("version") != expected["version"]:
                            raise RuntimeError(f"{prefix}{order_id}/ answered {status} {body[:300]!r}, expected state {expected['state']}")
                status, _ = http_get(server.port, f"/api/orders/{ids[0]}/", {"Host": "127.0.0.1"})
                if status not in (401, 403):
                    raise RuntimeError(f"/api/orders/ without a token answered {status}, expected 401/403")
                progress(f"gunicorn ({label}) ready on 127.0.0.1:{server.port}, pid {server.popen.pid}; both endpoints answer the seeded rows")
                return server

            def measure(server: Gunicorn, figure: str, endpoint: str, seconds: int, tag: str) -> dict[str, Any]:
                run = wrk_run(wrk, server.port, script, ENDPOINTS[endpoint], token, threads=args.threads, connections=args.connections,
                              duration=seconds, gunicorn=server, services=services)
                state = "ok" if run["ok"] else f"ERRORS {run['errors']}"
                progress(f"  {figure} {tag}: {run['rps']:,.0f} req/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, "
                         f"CPU ms/req gunicorn {run['cpu_ms_per_request']['gunicorn']:.3f} postgres {run['cpu_ms_per_request']['postgres']:.3f} "
                         f"redis {run['cpu_ms_per_request']['redis']:.3f}; other processes {run['machine']['foreign_cores']:.2f} cores ({state})")
                return run

            gunicorn = serve({}, "main")
            results["warmup"] = {}
            for figure in ("api", "bare"):
                results["warmup"][figure] = measure(gunicorn, figure, figure, warmup, "warm-up")
            results["runs"] = {"api": [], "bare": []}
            for index in range(runs):
                for figure in ("api", "bare"):
                    results["runs"][figure].append(measure(gunicorn, figure, figure, duration, f"run {index + 1}/{runs}"))
            gunicorn.stop()
            gunicorn = None

            if args.diagnostic:
                progress("diagnostic: the same API with DRF's throttle classes off (BENCH_NO_THROTTLE=1)")
                gunicorn = serve({"BENCH_NO_THROTTLE": "1"}, "no-throttle")
                measure(gunicorn, "api_no_throttle", "api", warmup, "warm-up")
                results["runs"]["api_no_throttle"] = [measure(gunicorn, "api_no_throttle", "api", duration, f"run {i + 1}/{runs}") for i in range(runs)]
                gunicorn.stop()
                gunicorn = None
                results["notes"].append("api_no_throttle is a diagnostic (REST_FRAMEWORK DEFAULT_THROTTLE_CLASSES = [] in bench/bare_settings.py), not a project configuration")

            results["summary"] = summarise(results["runs"])
            if args.profile:
                progress(f"in-process cProfile of {PROFILE_REQUESTS if not args.quick else 300:,} requests per endpoint")
                profile = common.run_worker(SCRIPT, "profile", {"token": token, "ids": ids, "requests": PROFILE_REQUESTS if not args.quick else 300,
                                                                "profile_to": str(RESULTS_DIR / "profile-query.txt")}, env, tmp / "profile.json", timeout=600)
                if "error" in profile:
                    results["errors"].append(f"profile: {profile['error']}")
                    print(profile.get("traceback", ""), file=sys.stderr)
                else:
                    results["profile"] = profile
        except Exception as exc:
            results["errors"].append(f"{type(exc).__name__}: {exc}")
            progress(f"FAILED: {exc}")
            traceback.print_exc()
        finally:
            if gunicorn is not None:
                gunicorn.stop()
            if services is not None:
                code = common.services_stop(PG_SERVICES_DIR)
                progress(f"services stopped (exit {code})")
    if results.get("runs") and "summary" not in results:
        results["summary"] = summarise({k: v for k, v in results["runs"].items() if v})
    results["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    print(render(results))
    progress(f"done in {results['elapsed_seconds']:.0f}s; results in {args.output}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
