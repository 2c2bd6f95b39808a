"""Ceilings on one machine as the load grows: the outbox + relay + serialised log append with 1, 2,
4 and 8 concurrent writers, and sagas/s with 1, 2 and 4 Celery workers (docs/scaling.md).

Run from the repository root::

    .venv/bin/python bench/scaling.py               # full run: 4 x 10 s per writer figure, 3 saga runs; about 8 minutes
    .venv/bin/python bench/scaling.py --quick       # smoke run: 3 s per figure, writers 1 and 2, sagas with 1 and 2 workers (N=60)
    .venv/bin/python bench/scaling.py --no-sagas    # the writer figures only
    .venv/bin/python bench/scaling.py --writers 1,2,4,8,16 -d 20

Set-up: the private PostgreSQL 15 + Redis of ``scripts/services.sh`` in
``$BENCH_SERVICES_DIR-scaling`` (default ``/tmp/bench-services-scaling``), ``manage.py
migrate_all``; stopped at the end. No Celery worker runs in the writer part: the relay wake-ups
that ``customer_create`` asks for pile up in the broker (they are coalesced) and are purged.

Figures, for each K in ``--writers`` (every process is a child of this script, started before
the clock and released together):

* ``writers``: K processes each calling ``customers.services.customer_create`` in a loop for
  ``-d`` seconds (one event and the state row per transaction, the append path of
  bench/append.py), while **one** relay process runs ``eventlog.relay.outbox_relay("customers",
  batch_size=1000)`` in a loop (as a relay that is always woken would; it sleeps 5 ms when it
  finds nothing). Reported: the writers' events/s in all and each call's p50/p99; the relay's
  events/s over the same seconds, its batches and their mean size, how long it took to drain
  what was left when the writers stopped; the relay lag of every event (``recorded_at`` in the
  log minus ``occurred_at`` in the outbox), p50/p99.
* ``appenders``: K processes each calling ``eventlog.relay.log_append`` for ``-d`` seconds with
  batches of ``--append-batch`` new events (100): what K relays of K contexts do to the one
  central log, whose appends are serialised by ``LOCK TABLE ... IN EXCLUSIVE MODE``
  (eventlog/relay.py). Reported: log events/s in all, each append's p50/p99 (lock wait
  included).

Sagas (``--sagas-workers``, default 1,2,4): ``bench/sagas.py --workers W --modes
orchestration,choreography -n 300 --unsat 5`` for each W, into
``bench/results/scaling-sagas-w<W>.json`` (``--pg-settle 2``: the counters it waits for are not used here); ``scaling.json`` keeps each run's sagas/s, p50/p99 and
CPU per order, and the command. (2PC runs in the web process, so Celery workers do not bound it.)

Every figure is measured on one machine where every process (writers, relay, PostgreSQL,
Redis, the bench) shares the same cores: ``machine`` in each figure is the CPU the machine used
meanwhile (``busy_cores``). Results: ``bench/results/scaling.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from _common import BASE_DIR, RESULTS_DIR, fmt  # noqa: E402

SCRIPT = Path(__file__).resolve()
SERVICES_DIR = common.services_dir("-scaling")
RELAY_BATCH = 1000
RELAY_IDLE_SLEEP = 0.005
DRAIN_TIMEOUT = 120.0
SAGA_MODES = "orchestration,choreography"


def progress(message: str) -> None:
    common.log(message, prefix="scaling")


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


# =========================================================================================
# Children (``--_worker KIND``): each sets Django up, says it is ready, waits for the go file
# =========================================================================================


def _wait_for_go(params: dict[str, Any]) -> float:
    Path(params["ready"]).write_text("ready")
    go = Path(params["go"])
    deadline = time.monotonic() + 120
    while not go.exists():
        if time.monotonic() > deadline:
            raise TimeoutError("no go file")
        time.sleep(0.005)
    start_at = float(go.read_text())
    while time.time() < start_at:
        time.sleep(0.001)
    return start_at


def _new_log_events(count: int) -> list[dict[str, Any]]:
    now = dt.datetime.now(dt.UTC)
    rows = []
    for _ in range(count):
        stream = uuid.uuid4()
        rows.append({"event_id": uuid.uuid4(), "stream_id": stream, "stream_type": "Customer", "version": 1, "type": "CustomerCreated",
                     "data": {"name": "bench", "credit_limit": "100.00"}, "occurred_at": now, "correlation_id": stream,
                     "causation_id": None, "saga_id": None})
    return rows


def worker_main(kind: str, params_json: str, out: str) -> int:
    params = json.loads(params_json)
    common.django_setup()
    result: dict[str, Any] = {}
    if kind == "write":
        from customers.services import customer_create

        for i in range(10):  # warm-up: connections, caches
            customer_create(name=f"warm-{params['index']}-{i}", credit_limit="100.00")
        start_at = _wait_for_go(params)
        end_at = start_at + params["seconds"]
        durations: list[float] = []
        while True:
            t0 = time.perf_counter()
            customer_create(name=f"w{params['index']}", credit_limit="100.00")
            durations.append(time.perf_counter() - t0)
            if time.time() >= end_at:
                break
        result = {"events": len(durations), "seconds": time.time() - start_at,
                  "p50_ms": percentile(durations, 0.5) * 1000, "p99_ms": percentile(durations, 0.99) * 1000}
    elif kind == "relay":
        from eventlog.relay import outbox_relay

        outbox_relay("customers", batch_size=RELAY_BATCH)  # the writers' warm-up rows
        start_at = _wait_for_go(params)
        end_at = start_at + params["seconds"]
        during = after = 0
        batches: list[int] = []
        drained_at = None
        while True:
            copied = outbox_relay("customers", batch_size=RELAY_BATCH)
            now = time.time()
            if copied:
                batches.append(copied)
                if now <= end_at:
                    during += copied
                else:
                    after += copied
            elif now > end_at + 0.5:  # the writers have stopped and their last commits are in
                drained_at = now
                break
            else:
                time.sleep(RELAY_IDLE_SLEEP)
            if now > end_at + DRAIN_TIMEOUT:
                break
        result = {"relayed_during": during, "relayed_after": after, "seconds": params["seconds"],
                  "events_per_s": during / params["seconds"], "runs_that_copied": len(batches),
                  "mean_batch": statistics.mean(batches) if batches else None, "max_batch": max(batches) if batches else None,
                  "drain_seconds": None if drained_at is None else round(drained_at - 0.5 - end_at, 3)}
    elif kind == "append":
        from eventlog.relay import log_append

        log_append(_new_log_events(params["batch"]))
        start_at = _wait_for_go(params)
        end_at = start_at + params["seconds"]
        durations = []
        events = 0
        while True:
            rows = _new_log_events(params["batch"])
            t0 = time.perf_counter()
            log_append(rows)
            durations.append(time.perf_counter() - t0)
            events += len(rows)
            if time.time() >= end_at:
                break
        result = {"events": events, "appends": len(durations), "seconds": time.time() - start_at,
                  "p50_ms": percentile(durations, 0.5) * 1000, "p99_ms": percentile(durations, 0.99) * 1000}
    elif kind == "stats":
        from django.db import connections

        with connections["eventlog"].cursor() as cursor:
            cursor.execute("SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM recorded_at - occurred_at)),"
                           " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM recorded_at - occurred_at)) FROM eventlog_logevent")
            count, p50, p99 = cursor.fetchone()
        with connections["customers"].cursor() as cursor:
            cursor.execute("SELECT count(*), count(*) FILTER (WHERE relayed_at IS NULL) FROM customers_customerevent")
            outbox, unrelayed = cursor.fetchone()
        result = {"log_events": count, "lag_p50_ms": None if p50 is None else float(p50) * 1000,
                  "lag_p99_ms": None if p99 is None else float(p99) * 1000, "outbox_events": outbox, "outbox_unrelayed": unrelayed}
    if kind in ("stats", "reset"):
        common.tables_empty("customers", ["customers_customerevent", "customers_customer"], restart_identity=True)
        common.tables_empty("eventlog", ["eventlog_logevent"], restart_identity=True)
        from django.db import connections

        for alias in ("customers", "eventlog"):
            with connections[alias].cursor() as cursor:
                cursor.execute("ANALYZE")
    Path(out).write_text(json.dumps(result, default=str))
    return 0


# =========================================================================================
# Parent
# =========================================================================================


def run_together(children: list[tuple[str, dict[str, Any]]], env: dict[str, str], tmp: Path, *, seconds: float) -> list[dict[str, Any]]:
    """Start every child, wait until all are ready, release them at once; their results."""
    go = tmp / "go"
    go.unlink(missing_ok=True)
    procs = []
    for index, (kind, params) in enumerate(children):
        out = tmp / f"child-{index}.json"
        ready = tmp / f"ready-{index}"
        out.unlink(missing_ok=True)
        ready.unlink(missing_ok=True)
        full = {**params, "go": str(go), "ready": str(ready), "seconds": seconds}
        argv = [sys.executable, str(SCRIPT), "--_worker", kind, "--_params", json.dumps(full), "--_out", str(out)]
        procs.append((subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=subprocess.DEVNULL), out, ready))
    deadline = time.monotonic() + 180
    while not all(ready.exists() for _, _, ready in procs):
        if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p, _, _ in procs):
            for p, _, _ in procs:
                p.kill()
            raise RuntimeError("a child failed to get ready")
        time.sleep(0.02)
    meter = common.CpuMeter()
    go.write_text(str(time.time() + 0.3))
    results = []
    for p, out, _ in procs:
        p.wait(timeout=seconds + DRAIN_TIMEOUT + 120)
        results.append(json.loads(out.read_text()) if out.exists() else {"error": f"child exited {p.returncode} without a result"})
    machine = meter.stop()
    for r in results:
        r.setdefault("machine", machine)
    return results


def run_writers(k: int, args: argparse.Namespace, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    children = [("write", {"index": i}) for i in range(k)] + [("relay", {})]
    out = run_together(children, env, tmp, seconds=args.duration)
    writers, relay = out[:k], out[k]
    errors = [r["error"] for r in out if "error" in r]
    stats = common.run_worker(SCRIPT, "stats", {}, env, tmp / "stats.json", timeout=300)
    events = sum(w.get("events", 0) for w in writers)
    seconds = max((w.get("seconds", args.duration) for w in writers), default=args.duration)
    return {"writers": k, "events": events, "write_events_per_s": events / seconds if seconds else None,
            "write_p50_ms": statistics.median([w["p50_ms"] for w in writers if "p50_ms" in w] or [0]),
            "write_p99_ms": max((w["p99_ms"] for w in writers if "p99_ms" in w), default=None),
            "relay_events_per_s": relay.get("events_per_s"), "relay": relay, "per_writer": writers,
            "lag_p50_ms": stats.get("lag_p50_ms"), "lag_p99_ms": stats.get("lag_p99_ms"), "stats": stats,
            "all_relayed": stats.get("outbox_unrelayed") == 0 and stats.get("log_events") == stats.get("outbox_events"),
            "machine": out[0].get("machine"), "errors": errors}


def run_appenders(k: int, args: argparse.Namespace, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    out = run_together([("append", {"index": i, "batch": args.append_batch}) for i in range(k)], env, tmp, seconds=args.duration)
    errors = [r["error"] for r in out if "error" in r]
    common.run_worker(SCRIPT, "reset", {}, env, tmp / "reset.json", timeout=300)
    events = sum(r.get("events", 0) for r in out)
    seconds = max((r.get("seconds", args.duration) for r in out), default=args.duration)
    return {"appenders": k, "batch": args.append_batch, "events": events, "events_per_s": events / seconds if seconds else None,
            "append_p50_ms": statistics.median([r["p50_ms"] for r in out if "p50_ms" in r] or [0]),
            "append_p99_ms": max((r["p99_ms"] for r in out if "p99_ms" in r), default=None),
            "per_appender": out, "machine": out[0].get("machine"), "errors": errors}


def run_sagas(workers: int, args: argparse.Namespace) -> dict[str, Any]:
    output = args.output.parent / f"scaling-sagas-w{workers}.json"
    argv = [sys.executable, "bench/sagas.py", "--workers", str(workers), "--modes", args.sagas_modes, "-n", str(args.sagas_n),
            "--unsat", str(args.sagas_unsat), "--pg-settle", str(args.sagas_pg_settle), "--output", str(output)]
    command = " ".join(["bench/sagas.py", *argv[2:]]).replace(str(BASE_DIR) + "/", "")
    progress(f"sagas with {workers} worker(s): {command}")
    completed = subprocess.run(argv, cwd=BASE_DIR, stdout=subprocess.DEVNULL, check=False)
    row: dict[str, Any] = {"workers": workers, "command": command, "file": str(output.relative_to(BASE_DIR)) if output.is_relative_to(BASE_DIR) else str(output),
                           "exit": completed.returncode}
    if not output.exists():
        row["error"] = "bench/sagas.py wrote no results"
        return row
    data = json.loads(output.read_text())
    summary = data.get("summary") or {}
    for mode in [*args.sagas_modes.split(","), "floor"]:
        part = summary.get(mode)
        if not part:
            continue
        row[mode] = {"sagas_per_s": part["sat"]["throughput_per_s"], "sat_p50_ms": part["sat"]["latency"]["p50_ms"],
                     "sat_p99_ms": part["sat"]["latency"]["p99_ms"], "unsat_p50_ms": part["unsat"]["latency"]["p50_ms"],
                     "cpu_ms_per_order": round(sum(v for k, v in part["sat"]["cpu_ms_per_item"].items() if k != "bench client"), 2)}
        if part.get("sat", {}).get("steps_retried") is not None:
            row[mode]["steps_retried"] = part["sat"]["steps_retried"]
    row["busy_cores_before"] = data.get("busy_cores_before")
    row["loadavg_1m"] = dig_loadavg(summary)
    row["all_completed"] = data.get("all_completed")
    row["errors"] = data.get("errors", [])
    return row


def dig_loadavg(summary: dict[str, Any]) -> float | None:
    """The highest 1-minute load average the saga runs saw (what else the machine was doing)."""
    seen = [part["sat"].get("system_cpu", {}).get("loadavg_1m_after") for part in summary.values() if isinstance(part, dict) and "sat" in part]
    seen = [x for x in seen if x is not None]
    return max(seen) if seen else None


def render(results: dict[str, Any]) -> str:
    lines = [f"Scaling on one machine ({results['machine'].get('cpus')} cores; {results['config']['duration']} s per figure)", ""]
    lines.append(f"  {'writers':>8} {'write ev/s':>11} {'write p50':>10} {'write p99':>10} {'relay ev/s':>11} {'mean batch':>11} {'drain s':>8} "
                 f"{'lag p50':>9} {'lag p99':>9} {'busy cores':>11}")
    for r in results.get("writers", []):
        lines.append(f"  {r['writers']:>8} {fmt(r['write_events_per_s']):>11} {fmt(r['write_p50_ms'], '.2f'):>10} {fmt(r['write_p99_ms'], '.1f'):>10} "
                     f"{fmt(r['relay_events_per_s']):>11} {fmt(r['relay'].get('mean_batch'), '.1f'):>11} {fmt(r['relay'].get('drain_seconds'), '.2f'):>8} "
                     f"{fmt(r['lag_p50_ms'], '.0f'):>9} {fmt(r['lag_p99_ms'], '.0f'):>9} {fmt((r.get('machine') or {}).get('busy_cores'), '.2f'):>11}")
    lines += ["", f"  {'appenders':>9} {'batch':>6} {'log ev/s':>10} {'append p50':>11} {'append p99':>11} {'busy cores':>11}"]
    for r in results.get("appenders", []):
        lines.append(f"  {r['appenders']:>9} {r['batch']:>6} {fmt(r['events_per_s']):>10} {fmt(r['append_p50_ms'], '.2f'):>11} "
                     f"{fmt(r['append_p99_ms'], '.1f'):>11} {fmt((r.get('machine') or {}).get('busy_cores'), '.2f'):>11}")
    if results.get("sagas"):
        modes = results["config"]["sagas_modes"].split(",") + ["floor"]
        lines += ["", f"  {'workers':>8}" + "".join(f"{m + ' /s':>20}{'p50 unsat':>11}" for m in modes)]
        for r in results["sagas"]:
            lines.append(f"  {r['workers']:>8}" + "".join(f"{fmt((r.get(m) or {}).get('sagas_per_s'), '.1f'):>20}{fmt((r.get(m) or {}).get('unsat_p50_ms'), '.1f'):>11}"
                                                       for m in modes))
    for e in results.get("errors", []):
        lines.append(f"  ERROR: {e}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 s per figure, writers 1,2, sagas with 1 and 2 workers at N=60")
    parser.add_argument("--writers", default=None, help="comma-separated writer counts (default 1,2,4,8; 1,2 with --quick)")
    parser.add_argument("-d", "--duration", type=float, default=None, help="seconds per figure (default 10; 3 with --quick)")
    parser.add_argument("--append-batch", type=int, default=100, help="events per log_append in the appenders figure")
    parser.add_argument("--sagas-workers", default=None, help="comma-separated Celery worker counts for bench/sagas.py (default 1,2,4; 1,2 with --quick)")
    parser.add_argument("--sagas-modes", default=SAGA_MODES)
    parser.add_argument("--sagas-n", type=int, default=None, help="saturated orders per mode (default 300; 60 with --quick)")
    parser.add_argument("--sagas-unsat", type=int, default=None, help="unsaturated orders per mode (default 5; 3 with --quick)")
    parser.add_argument("--sagas-pg-settle", type=float, default=2.0,
                        help="bench/sagas.py --pg-settle (default 2 s: this bench reads no PostgreSQL counter, so it need not wait for them)")
    parser.add_argument("--no-sagas", dest="sagas", action="store_false")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "scaling.json")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_params", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        return worker_main(args._worker, args._params, args._out)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    writer_counts = [int(x) for x in (args.writers or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    saga_workers = [int(x) for x in (args.sagas_workers or ("1,2" if args.quick else "1,2,4")).split(",")]
    args.sagas_n = args.sagas_n or (60 if args.quick else 300)
    args.sagas_unsat = args.sagas_unsat or (3 if args.quick else 5)
    started = time.perf_counter()
    results: dict[str, Any] = {
        "benchmark": "scaling", "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": common.machine_info(),
        "command": " ".join(["bench/scaling.py", *(argv if argv is not None else sys.argv[1:])]),
        "config": {"duration": args.duration, "writers": writer_counts, "append_batch": args.append_batch, "relay_batch": RELAY_BATCH,
                   "sagas_workers": saga_workers if args.sagas else [], "sagas_modes": args.sagas_modes, "sagas_n": args.sagas_n,
                   "sagas_unsat": args.sagas_unsat, "quick": args.quick},
        "writers": [], "appenders": [], "sagas": [], "errors": [], "notes": [],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    progress(f"bash scripts/services.sh start {SERVICES_DIR}")
    services, error = common.services_start(SERVICES_DIR)
    if services is None:
        results["errors"].append(f"PostgreSQL not available: {error}")
    else:
        try:
            env = {**common.base_env(), **{k: v for k, v in services.items() if not k.startswith("SERVICES_")}}
            results["info"] = {"services_dir": str(SERVICES_DIR)}
            progress("manage.py migrate_all")
            common.manage(["migrate_all"], env)
            with tempfile.TemporaryDirectory(prefix="bench-scaling-") as tmp_name:
                tmp = Path(tmp_name)
                common.run_worker(SCRIPT, "reset", {}, env, tmp / "reset.json", timeout=300)
                for k in writer_counts:
                    progress(f"{k} writer(s) + 1 relay, {args.duration:g} s")
                    row = run_writers(k, args, env, tmp)
                    results["writers"].append(row)
                    progress(f"  writes {fmt(row['write_events_per_s'])}/s, relay {fmt(row['relay_events_per_s'])}/s, lag p99 {fmt(row['lag_p99_ms'])} ms")
                for k in writer_counts:
                    progress(f"{k} appender(s) into the log, batches of {args.append_batch}, {args.duration:g} s")
                    row = run_appenders(k, args, env, tmp)
                    results["appenders"].append(row)
                    progress(f"  log {fmt(row['events_per_s'])} events/s, append p99 {fmt(row['append_p99_ms'], '.1f')} ms")
            import redis

            results["broker_purged"] = redis.Redis.from_url(services["CELERY_BROKER_URL"]).flushdb()
        except Exception as exc:  # the results file still says what happened
            results["errors"].append(f"{type(exc).__name__}: {exc}")
        finally:
            progress(f"bash scripts/services.sh stop {SERVICES_DIR}")
            common.services_stop(SERVICES_DIR)
    def save() -> None:
        # After each part, so a long saga part that is stopped still leaves the figures so far.
        results["elapsed_seconds"] = round(time.perf_counter() - started, 1)
        args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")

    save()
    if args.sagas:
        for workers in saga_workers:
            row = run_sagas(workers, args)
            results["sagas"].append(row)
            if row.get("error") or row.get("errors"):
                results["errors"].append(f"sagas with {workers} workers: {row.get('error') or row.get('errors')}")
            save()
    save()
    print()
    print(render(results))
    progress(f"done in {results['elapsed_seconds']:.0f}s; results in {args.output}")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
