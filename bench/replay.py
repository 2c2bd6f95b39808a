"""Replay throughput of the read models, on SQLite and on PostgreSQL, next to a bulk-insert floor.

Run from the repository root::

    .venv/bin/python bench/replay.py                 # full run: 200,000 events, both databases, ~3.5 min
    .venv/bin/python bench/replay.py --quick         # smoke run: 20,000 events, ~30 s
    .venv/bin/python bench/replay.py --only postgresql
    .venv/bin/python bench/replay.py -n 5 --profile none     # 5 replays per database, no profile
    .venv/bin/python bench/replay.py --events 500000 --profile both

What is measured, per database:

* the history: ``--events`` events (200,000) written straight into the central log
  (``eventlog_logevent``) with ``eventlog.relay.log_append``, 10,000 rows per transaction, in a
  realistic mix (see ``bench/_common.py:generate_history``). This is set-up, not measured.
* replay: ``readmodels.rebuild.projections_rebuild(every projection, batch_size=...)``, what
  ``manage.py replay_events`` runs: one pass over the log into the shadow tables of every
  projection, then the swap into the live tables, on empty read-model tables. The rate is N /
  its time; the median of ``-n`` replays (3). After the last one every read-model row is
  compared with the rows the generator expects (counts and every column).
* floor: the rows that replay produced are read back, the tables emptied, and the same rows
  written again, timed table by table (one transaction per table): with the ORM's
  ``bulk_create(batch_size=5000)``, with the raw driver's ``executemany`` (batches of 5,000), and on
  PostgreSQL with ``COPY ... FROM STDIN``. The fastest variant is the floor.
* profile: one more, unmeasured, replay under cProfile, written to
  ``bench/results/profile-replay-<db>.txt`` (top 25 by cumulative and by own time); on
  PostgreSQL only by default (``--profile``). cProfile sees the main thread only: most of the
  reading of the log runs in the replay's reader thread and is not in it.

The floor variants are repeated 3 times (median), in rounds with the replays (replay 1, floors 1,
replay 2, floors 2, ...), so both see the same load; ``x_floor_same_round`` is each replay over
the best floor's run of its round. ``busy_cores`` in the JSON (system-wide CPU use
during each timed replay) shows whether anything else was running on the machine.

Goals: replay >= 20,000 events/s on PostgreSQL, and replay time within 3x of the floor's (both
databases). Results: ``bench/results/replay.json`` and a table per database.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as common  # noqa: E402
from _common import RESULTS_DIR, fmt, log, verdict  # noqa: E402

SCRIPT = Path(__file__).resolve()
PG_SERVICES_DIR = common.services_dir("-rq")
WORKER_TIMEOUT = 1200
PG_RATE_GOAL = 20_000.0
FLOOR_FACTOR_GOAL = 3.0
FLOOR_BATCH = 5000


def progress(message: str) -> None:
    log(message, prefix="replay")


# =========================================================================================
# The worker (a child process with the database environment set)
# =========================================================================================


def _server_info() -> dict[str, Any]:
    import sqlite3

    from django.db import connections

    connection = connections["readmodels"]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT current_setting('server_version'), current_setting('fsync'), current_setting('synchronous_commit'), current_setting('shared_buffers')")
            version, fsync, sync_commit, shared_buffers = cursor.fetchone()
            return {"vendor": "postgresql", "server_version": version, "fsync": fsync, "synchronous_commit": sync_commit, "shared_buffers": shared_buffers}
        cursor.execute("PRAGMA journal_mode")
        journal = cursor.fetchone()[0]
        cursor.execute("PRAGMA synchronous")
        sync = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(cursor.fetchone()[0], "?")
        return {"vendor": "sqlite", "server_version": sqlite3.sqlite_version, "journal_mode": journal, "synchronous": sync}


READ_KEY = "read the log (fetch rows; reader thread, overlapping the rest)"
DECODE_KEY = "decode (events and payloads; reader thread, overlapping the rest)"
WAIT_KEY = "wait for the log (read ahead, in a thread)"
SWAP_KEY = "swap: shadows into live"
SWAP_PREPARE_KEY = "swap, before: indexes and ANALYZE on the shadows"
#: The parts that run in the reader thread, alongside the main thread's.
THREAD_KEYS = (READ_KEY, DECODE_KEY)


class Breakdown:
    """Wall time inside a few functions of the replay path, by wrapping them (a few hundred calls
    per replay, so the wrappers cost nothing measurable): reading the log's rows and decoding them
    into events (in the reader thread, which overlaps the rest), the main thread's wait for them,
    each projection's fold, loading and writing the rows of each table, and the swap. It also
    counts the statements, COPYs and commits on every connection of the process (the reader
    thread's too)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.rows: dict[str, int] = {}
        self.counts = {"statements": 0, "copy": 0, "commits": 0}
        self._undo: list[Any] = []

    def _patch(self, owner: Any, attribute: str, replacement: Any) -> None:
        original = owner[attribute] if isinstance(owner, dict) else getattr(owner, attribute)
        if isinstance(owner, dict):
            owner[attribute] = replacement(original)
        else:
            setattr(owner, attribute, replacement(original))
        self._undo.append((owner, attribute, original))

    def _wrap(self, owner: Any, attribute: str, label: Any) -> None:
        breakdown = self

        def replacement(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                key, rows = label(args, kwargs)
                started = time.perf_counter()
                try:
                    return original(*args, **kwargs)
                finally:
                    breakdown.seconds[key] = breakdown.seconds.get(key, 0.0) + time.perf_counter() - started
                    if rows is not None:
                        breakdown.rows[key] = breakdown.rows.get(key, 0) + rows
            return wrapper

        self._patch(owner, attribute, replacement)

    def _count(self, owner: Any, attribute: str, counter: str) -> None:
        counts = self.counts

        def replacement(original: Any) -> Any:
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                counts[counter] += 1
                return original(*args, **kwargs)
            return wrapper

        self._patch(owner, attribute, replacement)

    def _count_statements(self) -> None:
        """PostgreSQL: psycopg's cursor methods, which every statement goes through (Django's,
        the log scan's own cursor, COPY). SQLite: an ``execute_wrapper`` on every connection,
        the ones the reader thread opens included (``connection_created``)."""
        import psycopg
        from django.db import connections
        from django.db.backends.signals import connection_created

        counts = self.counts

        def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            counts["statements"] += 1
            return execute(sql, params, many, context)

        def wrap(connection: Any) -> None:
            if connection.vendor == "sqlite" and count not in connection.execute_wrappers:
                connection.execute_wrappers.append(count)

        def created(sender: Any, connection: Any, **kwargs: Any) -> None:
            wrap(connection)

        for name in ("execute", "executemany"):
            self._count(psycopg.Cursor, name, "statements")
        self._count(psycopg.Cursor, "copy", "copy")
        for connection in connections.all():
            wrap(connection)
        for backend in {type(connection) for connection in connections.all()}:  # one class for every alias
            self._count(backend, "_commit", "commits")
        connection_created.connect(created, weak=False)
        self._undo.append((connection_created, None, created))
        self._wrappers = (count, connections)

    def __enter__(self) -> Breakdown:
        from eventlog import selectors
        from readmodels import projections, rebuild

        table = lambda rows: rows.model._meta.db_table.removeprefix("readmodels_")  # noqa: E731
        self._wrap(rebuild._ReadAhead, "__call__", lambda a, k: (WAIT_KEY, None))
        for vendor in list(selectors._SCANS):
            self._wrap(selectors._SCANS, vendor, lambda a, k: (READ_KEY, None))
        self._wrap(selectors, "scan_decode", lambda a, k: (DECODE_KEY, len(a[0])))
        self._wrap(rebuild.Replay, "apply", lambda a, k: (f"apply {a[0].projection.name}", len(a[1])))
        self._wrap(projections.Rows, "load", lambda a, k: (f"load {table(a[0])}", None))
        self._wrap(projections.Rows, "flush", lambda a, k: (f"write {table(a[0])}", len(a[0].dirty)))
        self._wrap(rebuild, "_swap", lambda a, k: (SWAP_KEY, None))
        self._wrap(rebuild, "_swap_prepare", lambda a, k: (SWAP_PREPARE_KEY, None))
        self._count_statements()
        return self

    def __exit__(self, *exc: Any) -> None:
        count, connections = self._wrappers
        for connection in connections.all():
            if count in connection.execute_wrappers:
                connection.execute_wrappers.remove(count)
        for owner, attribute, original in reversed(self._undo):
            if attribute is None:
                owner.disconnect(original)
            elif isinstance(owner, dict):
                owner[attribute] = original
            else:
                setattr(owner, attribute, original)

    def report(self, total: float) -> dict[str, Any]:
        """Seconds per part; "fold <projection>" is its apply time without its loads and writes."""
        from readmodels.projections import PROJECTIONS

        seconds = dict(self.seconds)
        for name, projection in PROJECTIONS.items():
            applied = seconds.pop(f"apply {name}", None)
            if applied is not None:
                inner = sum(v for k, v in seconds.items() if k.split(" ", 1)[0] in ("load", "write")
                            and k.split(" ", 1)[1] in {m._meta.db_table.removeprefix("readmodels_") + "__rebuild" for m in projection.tables})
                seconds[f"fold {name} (in Python)"] = applied - inner
                self.rows[f"fold {name} (in Python)"] = self.rows.pop(f"apply {name}", 0)
        parts = {k: {"seconds": round(v, 3), "share": round(v / total, 3), **({"rows": self.rows[k]} if self.rows.get(k) else {})}
                 for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}
        rest = total - sum(v for k, v in seconds.items() if k not in THREAD_KEYS)
        parts["everything else (checkpoints, transactions, shadow tables)"] = {"seconds": round(rest, 3), "share": round(rest / total, 3)}
        return parts

    def phases(self, total: float) -> dict[str, Any]:
        """The time split the issue asks for: read, decode, fold, write, swap (seconds). Read and
        decode run in the reader thread while the main thread folds and writes the batch before,
        so they overlap the rest; fold + write + swap + wait_for_read + other is the replay's
        wall time. ``swap`` is the index build on the shadows before it plus the swap itself."""
        s = self.seconds
        fold = sum(v for k, v in s.items() if k.startswith("apply ")) - sum(v for k, v in s.items() if k.startswith(("load ", "write ")))
        split = {
            "read": s.get(READ_KEY, 0.0), "decode": s.get(DECODE_KEY, 0.0), "fold": fold,
            "write": sum(v for k, v in s.items() if k.startswith(("load ", "write "))), "swap": s.get(SWAP_KEY, 0.0) + s.get(SWAP_PREPARE_KEY, 0.0),
            "wait_for_read": s.get(WAIT_KEY, 0.0),
        }
        split["other"] = total - split["fold"] - split["write"] - split["swap"] - split["wait_for_read"]
        return {k: round(v, 3) for k, v in split.items()}


def _replay_once(n_events: int, batch_size: int, *, breakdown: bool = True) -> dict[str, Any]:
    """Every projection rebuilt from the log in one pass (``projections_rebuild``), on empty
    read-model tables: shadow catch-up, then the swap."""
    import contextlib

    from readmodels.projections import PROJECTIONS
    from readmodels.rebuild import projections_rebuild

    common.readmodels_empty()
    marks: list[float] = []
    timers = Breakdown() if breakdown else None
    meter = common.CpuMeter()
    cpu_started = time.process_time()
    started = time.perf_counter()
    with timers if timers is not None else contextlib.nullcontext():
        reports = projections_rebuild(list(PROJECTIONS), batch_size=batch_size, progress=lambda position, head: marks.append(time.perf_counter()))
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    machine = meter.stop()
    for report in reports:
        if report.events != n_events:
            raise RuntimeError(f"{report.projection} consumed {report.events} events, expected {n_events}")
    batches = [b - a for a, b in zip([started, *marks], marks, strict=False)]
    catch_up = (marks[-1] - started) if marks else seconds
    progress(f"  {', '.join(PROJECTIONS)}: {n_events:,} events in {seconds:.2f}s = {n_events / seconds:,.0f} events/s "
             f"(catch-up {catch_up:.2f}s, swap {seconds - catch_up:.2f}s; {len(batches)} batches, median {statistics.median(batches):.3f}s; "
             f"machine busy {machine['busy_cores']} of {machine['cores']} cores)")
    if timers is not None:
        phases = timers.phases(seconds)
        progress("  time split (s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()) + f"; this process's CPU {cpu:.2f}s; "
                 + ", ".join(f"{k} {v}" for k, v in timers.counts.items()))
    return {
        "events": n_events, "seconds": round(seconds, 4), "events_per_s": round(n_events / seconds, 1),
        "catch_up_seconds": round(catch_up, 4), "swap_seconds": round(seconds - catch_up, 4),
        "batches": len(batches), "batch_seconds": {"min": round(min(batches), 4), "median": round(statistics.median(batches), 4),
                                                   "max": round(max(batches), 4), "first": round(batches[0], 4), "last": round(batches[-1], 4)} if batches else None,
        "rows": {r.projection: r.rows for r in reports}, "machine": machine,
        "breakdown": timers.report(seconds) if timers is not None else None,
        "phases": timers.phases(seconds) if timers is not None else None,
        "statements": dict(timers.counts) if timers is not None else None,
        "process_cpu_seconds": round(cpu, 3),
    }


def _floor_read() -> dict[str, Any]:
    """The replay's rows, as model instances (for bulk_create) and as raw driver tuples."""
    import sqlite3

    from django.db import connections

    connection = connections["readmodels"]
    quote = connection.ops.quote_name
    tables: dict[str, Any] = {}
    raw_sqlite = sqlite3.connect(connection.settings_dict["NAME"]) if connection.vendor == "sqlite" else None
    for model in common.readmodel_tables():
        table = model._meta.db_table
        columns = [f.column for f in model._meta.local_fields]
        column_sql = ", ".join(quote(c) for c in columns)
        instances = list(model.objects.using("readmodels").all())
        if raw_sqlite is not None:  # exactly the stored values, no converters
            tuples = raw_sqlite.execute(f"SELECT {column_sql} FROM {quote(table)}").fetchall()
        else:
            with connection.cursor() as cursor:
                cursor.execute(f"SELECT {column_sql} FROM {quote(table)}")
                tuples = cursor.fetchall()
        tables[table] = {"model": model, "instances": instances, "tuples": tuples, "columns": columns, "column_sql": column_sql}
    if raw_sqlite is not None:
        raw_sqlite.close()
    return tables


def _floor_run(variant: str, tables: dict[str, Any]) -> dict[str, Any]:
    """Empty the read-model tables, then write the rows back with ``variant``, one transaction per table."""
    from django.db import connections, transaction

    from readmodels.projections import PROJECTIONS

    connection = connections["readmodels"]
    quote = connection.ops.quote_name
    common.readmodels_empty(checkpoints=False)
    per_table: dict[str, float] = {}
    for table, spec in tables.items():
        model, rows = spec["model"], spec["tuples"]
        connection.ensure_connection()
        started = time.perf_counter()
        with transaction.atomic(using="readmodels"):
            if variant == "orm_bulk_create":
                model.objects.using("readmodels").bulk_create(spec["instances"], batch_size=FLOOR_BATCH)
            elif variant == "raw_executemany":
                placeholder = "?" if connection.vendor == "sqlite" else "%s"
                sql = f"INSERT INTO {quote(table)} ({spec['column_sql']}) VALUES ({', '.join([placeholder] * len(spec['columns']))})"
                raw = connection.connection.cursor()
                for offset in range(0, len(rows), FLOOR_BATCH):
                    raw.executemany(sql, rows[offset : offset + FLOOR_BATCH])
                raw.close()
            elif variant == "pg_copy":
                with connection.connection.cursor() as raw:
                    with raw.copy(f"COPY {quote(table)} ({spec['column_sql']}) FROM STDIN") as copy:
                        for row in rows:
                            copy.write_row(row)
            else:
                raise ValueError(variant)
        per_table[table] = time.perf_counter() - started
    counts = {table: spec["model"].objects.using("readmodels").count() for table, spec in tables.items()}
    for table, spec in tables.items():
        if counts[table] != len(spec["tuples"]):
            raise RuntimeError(f"floor {variant}: {table} has {counts[table]} rows, expected {len(spec['tuples'])}")
    per_projection = {name: round(sum(per_table[m._meta.db_table] for m in projection.tables), 4) for name, projection in PROJECTIONS.items()}
    return {"seconds": round(sum(per_table.values()), 4), "tables": {t: round(s, 4) for t, s in per_table.items()}, "projections": per_projection}


def _profile(n_events: int, batch_size: int, out_path: str, db_label: str) -> dict[str, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    started = time.perf_counter()
    _replay_once(n_events, batch_size, breakdown=False)
    seconds = time.perf_counter() - started
    profiler.disable()
    text = io.StringIO()
    text.write(f"cProfile of one replay of {n_events:,} log events into every projection in one pass ({db_label}), "
               f"projections_rebuild(names, batch_size={batch_size}); {seconds:.2f}s under the profiler.\n"
               "The main thread only: most of the reading of the log (log_scan) runs in the replay's reader thread.\n\n")
    text.write("=== top 25 by cumulative time ===\n")
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("cumulative").print_stats(25)
    text.write("\n=== top 25 by own time (tottime) ===\n")
    pstats.Stats(profiler, stream=text).strip_dirs().sort_stats("tottime").print_stats(25)
    Path(out_path).write_text(text.getvalue())
    return {"path": out_path, "seconds_under_profiler": round(seconds, 2)}


def worker_replay(params: dict[str, Any]) -> dict[str, Any]:
    common.django_setup()
    from django.db import connections

    from eventlog.models import LogEvent
    from readmodels.projections import PROJECTIONS
    from readmodels.rebuild import DEFAULT_BATCH_SIZE

    n_events, repeats = params["events"], params["repeats"]
    batch_size = params["batch_size"] or DEFAULT_BATCH_SIZE
    info = _server_info()
    vendor = info["vendor"]
    result: dict[str, Any] = {"info": info, "batch_size": batch_size}

    # --- the history in the log --------------------------------------------------------------
    common.tables_empty("eventlog", [LogEvent._meta.db_table], restart_identity=True)
    common.readmodels_empty()
    started = time.perf_counter()
    events, expected = common.generate_history(n_events, seed=params["seed"])
    generated = time.perf_counter() - started
    inserted = common.log_insert(events)
    if vendor == "postgresql":
        eventlog = connections["eventlog"]
        eventlog.ensure_connection()
        with eventlog.cursor() as cursor:  # what autovacuum would do soon after a bulk load
            cursor.execute(f"VACUUM ANALYZE {LogEvent._meta.db_table}")
    in_log = LogEvent.objects.using("eventlog").count()
    if in_log != n_events:
        raise RuntimeError(f"the log holds {in_log} events, expected {n_events}")
    result["history"] = {**common.history_summary(events, expected), "generate_seconds": round(generated, 2), "log_insert_seconds": round(inserted, 2)}
    del events
    progress(f"{vendor}: history of {n_events:,} events in the log (generated in {generated:.1f}s, appended in {inserted:.1f}s): "
             f"{len(expected['customers']):,} customers, {len(expected['orders']):,} orders")

    # --- replay and floor, in rounds -------------------------------------------------------------
    # Each round is a replay, then each floor variant, so that the replays and the floors see the
    # same load on a shared machine (run one after the other, the two phases saw loads that
    # differed by 2x). The first replay's rows are checked and become the floor's rows.
    result["replay"] = []
    floor_repeats = params["floor_repeats"]
    variants = ["orm_bulk_create", "raw_executemany"] + (["pg_copy"] if vendor == "postgresql" else [])
    result["floor"] = {variant: [] for variant in variants}
    tables: dict[str, Any] = {}
    for round_ in range(max(repeats, floor_repeats)):
        if round_ < repeats:
            progress(f"{vendor}: replay {round_ + 1}/{repeats} (batch_size={batch_size})")
            result["replay"].append(_replay_once(n_events, batch_size))
            progress(f"{vendor}: replay {round_ + 1}/{repeats}: {result['replay'][-1]['events_per_s']:,.0f} events/s")
        if round_ == 0:
            check = common.readmodels_compare(expected)
            result["check"] = check
            progress(f"{vendor}: check of every read-model row against the generator: {'OK' if check['ok'] else 'FAILED'} "
                     + ", ".join(f"{t} {v['actual']:,}/{v['expected']:,}" for t, v in check["tables"].items()))
            if not check["ok"]:
                raise RuntimeError(f"read models differ from the expected rows: {json.dumps(check['tables'])}")
            tables = _floor_read()
            result["floor_rows"] = {table: len(spec["tuples"]) for table, spec in tables.items()}
        if round_ < floor_repeats:
            for variant in variants:
                run = _floor_run(variant, tables)
                result["floor"][variant].append(run)
                progress(f"{vendor}: floor {variant} {round_ + 1}/{floor_repeats}: {sum(result['floor_rows'].values()):,} rows in {run['seconds']:.2f}s")
    # The last replay or floor wrote the rows: the live tables hold the replay's result again.
    check_after = common.readmodels_compare(expected)
    if not check_after["ok"]:
        raise RuntimeError(f"after the floor the read models differ from the expected rows: {json.dumps(check_after['tables'])}")
    del tables

    # --- profile -------------------------------------------------------------------------------
    if params.get("profile_to"):
        progress(f"{vendor}: one more replay under cProfile -> {params['profile_to']}")
        result["profile"] = _profile(n_events, batch_size, params["profile_to"], info.get("vendor", "?"))
    result["projections"] = list(PROJECTIONS)
    return result


WORKERS = {"replay": worker_replay}


def worker_main(kind: str, params_json: str, out: str) -> int:
    try:
        result = WORKERS[kind](json.loads(params_json))
    except BaseException as exc:  # reported to the parent, which records it and goes on
        result = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    Path(out).write_text(json.dumps(result, default=str))
    return 0


# =========================================================================================
# Orchestration (parent process)
# =========================================================================================


def summarise(raw: dict[str, Any], n_events: int) -> dict[str, Any]:
    """Medians over the repeats, the floor, the ratios and the goals."""
    replay_total = statistics.median(r["seconds"] for r in raw["replay"])
    floors = {variant: {"seconds": statistics.median(r["seconds"] for r in runs)} for variant, runs in raw["floor"].items() if runs}
    best = min(floors, key=lambda v: floors[v]["seconds"])
    floor_total = floors[best]["seconds"]
    rows: list[dict[str, Any]] = [{"key": "total", "label": "replay, all projections, one pass", "seconds": replay_total, "events_per_s": n_events / replay_total,
                                   "x_floor": replay_total / floor_total if floor_total else None}]
    for variant, floor in floors.items():
        rows.append({"key": f"floor_{variant}", "label": f"floor: {variant.replace('_', ' ')}{' (best)' if variant == best else ''}",
                     "seconds": floor["seconds"], "events_per_s": n_events / floor["seconds"], "x_floor": floor["seconds"] / floor_total})
    vendor = raw["info"]["vendor"]
    total_rate = n_events / replay_total
    goals = [
        {"goal": f"replay >= {PG_RATE_GOAL:,.0f} events/s (PostgreSQL)", "value": round(total_rate, 1),
         "pass": (total_rate >= PG_RATE_GOAL) if vendor == "postgresql" else None},
        {"goal": f"replay time <= {FLOOR_FACTOR_GOAL:g} x floor ({best})", "value": round(replay_total / floor_total, 2),
         "pass": replay_total <= FLOOR_FACTOR_GOAL * floor_total},
    ]
    # Paired: each replay over the best floor variant's run of the same round (same load).
    paired = [r["seconds"] / f["seconds"] for r, f in zip(raw["replay"], raw["floor"][best], strict=False) if f["seconds"]]
    split = [r["phases"] for r in raw["replay"] if r.get("phases")]
    phases = {k: round(statistics.median(p[k] for p in split), 3) for k in split[0]} if split else None
    counted = [r["statements"] for r in raw["replay"] if r.get("statements")]
    statements = {k: statistics.median(c[k] for c in counted) for k in counted[0]} if counted else None
    return {"rows": rows, "floor_best": best, "floor_seconds": floor_total, "replay_seconds": replay_total, "goals": goals,
            "x_floor_same_round": {"median": round(statistics.median(paired), 2), "rounds": [round(x, 2) for x in paired]} if paired else None,
            "phases_median_seconds": phases, "statements_per_replay": statements}


def render(name: str, db: dict[str, Any], n_events: int, repeats: int) -> str:
    if not db.get("summary"):
        return f"{name}: {'UNAVAILABLE' if db.get('status') == 'unavailable' else 'FAILED'} - {'; '.join(db.get('errors', [])) or db.get('error')}\n"
    info, summary, raw = db["info"], db["summary"], db["raw"]
    if info["vendor"] == "postgresql":
        detail = f"PostgreSQL {info.get('server_version')}, fsync={info.get('fsync')}, synchronous_commit={info.get('synchronous_commit')}"
    else:
        detail = f"SQLite {info.get('server_version')}, journal_mode={info.get('journal_mode')}, synchronous={info.get('synchronous')}"
    lines = [f"{name}  ({detail}; {n_events:,} log events, batch_size={raw.get('batch_size') or db['batch_size']}, replay: {'median of ' + str(repeats) + ' repeats' if repeats != 1 else '1 run'}, floor: median of {db['floor_repeats']})"]
    header = f"  {'figure':<34} {'seconds':>8} {'events/s':>10} {'x floor':>8}"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for row in summary["rows"]:
        lines.append(f"  {row['label']:<34} {row['seconds']:>8.2f} {fmt(row['events_per_s']):>10} {fmt(row['x_floor'], '.2f'):>8}")
    lines.append("  floor rows: " + ", ".join(f"{t} {c:,}" for t, c in raw["floor_rows"].items()))
    lines.append("  events/s = N / the time of one rebuild of every projection (one pass over the N events, then the swap).")
    lines.append("  x floor = time / the fastest floor's time (floor events/s = N / floor time).")
    for goal in summary["goals"]:
        value = f"{goal['value']:,.0f}/s" if "events/s" in goal["goal"] else f"{goal['value']:.2f}x"
        lines.append(f"  goal: {goal['goal']:<48} {value:>12}  {verdict(goal['pass'])}")
    last = raw["replay"][-1]
    parts = last.get("breakdown") or {}
    if parts:
        text = ", ".join(f"{k.split(' (')[0]} {v['share']:.0%}" for k, v in list(parts.items())[:8])
        lines.append(f"  time of the replay: {text}")
        lines.append(f"  catch-up {last['catch_up_seconds']:.2f}s in {last['batches']} batches, swap {last['swap_seconds']:.2f}s")
    if summary.get("x_floor_same_round"):
        same = summary["x_floor_same_round"]
        lines.append(f"  x floor, round by round (each replay / the {summary['floor_best']} floor run right after it): "
                     + ", ".join(f"{x:.2f}" for x in same["rounds"]) + f"; median {same['median']:.2f}")
    if summary.get("phases_median_seconds"):
        phases = summary["phases_median_seconds"]
        lines.append("  time split, median (s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items())
                     + "  (read and decode run in the reader thread, overlapping fold and write)")
    if summary.get("statements_per_replay"):
        lines.append("  per replay: " + ", ".join(f"{k} {v:,.0f}" for k, v in summary["statements_per_replay"].items()))
    busy = [r["machine"]["busy_cores"] for r in raw["replay"] if r.get("machine", {}).get("busy_cores") is not None]
    if busy:
        lines.append(f"  machine: {max(busy):.2f} of {raw['replay'][0]['machine']['cores']} cores busy at most during the replay"
                     + ("  (MORE than this bench uses: other processes competed for the CPU)" if max(busy) > 1.6 else ""))
    check = raw.get("check", {})
    lines.append(f"  check: every read-model row equals the generator's expectation: {'yes' if check.get('ok') else 'NO'} ("
                 + ", ".join(f"{t} {v['actual']:,}" for t, v in check.get("tables", {}).items()) + ")")
    for note in db.get("notes", []):
        lines.append(f"  note: {note}")
    for error in db.get("errors", []):
        lines.append(f"  ERROR: {error}")
    return "\n".join(lines) + "\n"


def new_db(params: dict[str, Any]) -> dict[str, Any]:
    return {"status": "ok", "errors": [], "notes": [], "info": {}, "batch_size": params["batch_size"], "floor_repeats": params["floor_repeats"],
            "raw": None, "summary": None}


def run_db(kind: str, args: argparse.Namespace, tmp: Path, params: dict[str, Any]) -> dict[str, Any]:
    db = new_db(params)
    env = common.base_env()
    stack = None
    try:
        if kind == "sqlite":
            root = tmp / "sqlite"
            root.mkdir()
            broker = env.get("CELERY_BROKER_URL")
            if broker:
                db["notes"].append("cache/broker: CELERY_BROKER_URL from the environment")
            else:
                stack, broker = common.embedded_broker(root / "run")
                db["notes"].append("cache/broker: the embedded redis-server (config.launcher.Stack) on a unix socket")
                progress(f"sqlite: embedded broker ready at {broker}")
            env.update(CELERY_BROKER_URL=broker, VAR_DIR=str(root / "var"))
        else:
            progress(f"postgresql: bash scripts/services.sh start {PG_SERVICES_DIR}")
            services, error = common.services_start(PG_SERVICES_DIR)
            if services is None:
                progress(f"postgresql: UNAVAILABLE: {error}")
                return {**db, "status": "unavailable", "errors": [error]}
            env.update(services)
            db["notes"].append(f"PostgreSQL and Redis of scripts/services.sh in {PG_SERVICES_DIR}")
        progress(f"{kind}: manage.py migrate_all")
        common.manage(["migrate_all"], env)
        worker_params = dict(params)
        if args.profile in ("both", kind):
            worker_params["profile_to"] = str(RESULTS_DIR / f"profile-replay-{kind}.txt")
        raw = common.run_worker(SCRIPT, "replay", worker_params, env, tmp / f"worker-{kind}.json", timeout=WORKER_TIMEOUT)
        if "error" in raw:
            db["errors"].append(raw["error"])
            progress(f"{kind}: FAILED: {raw['error']}")
            if raw.get("traceback"):
                print(raw["traceback"], file=sys.stderr)
        else:
            db["raw"], db["info"] = raw, raw["info"]
            db["summary"] = summarise(raw, params["events"])
    except Exception as exc:
        db["errors"].append(f"{type(exc).__name__}: {exc}")
        progress(f"{kind}: FAILED: {exc}")
    finally:
        if stack is not None:
            stack.stop()
            progress("sqlite: embedded broker stopped")
        if kind == "postgresql":
            code = common.services_stop(PG_SERVICES_DIR)
            progress(f"postgresql: services stopped (exit {code})")
    return db


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 events and 1 repeat (unless given)")
    parser.add_argument("--events", type=int, default=None, help="events in the log (default 200,000; 20,000 with --quick)")
    parser.add_argument("-n", "--repeats", type=int, default=None, help="replay repeats (default 3; 1 with --quick)")
    parser.add_argument("--batch-size", type=int, default=None, help="projections_rebuild batch_size (default: the command's, readmodels.rebuild.DEFAULT_BATCH_SIZE)")
    parser.add_argument("--only", choices=("sqlite", "postgresql"), help="measure one database kind only")
    parser.add_argument("--profile", choices=("postgresql", "sqlite", "both", "none"), default="postgresql",
                        help="which database gets the extra cProfile'd replay (default postgresql: a profiled replay takes about 2x a plain one)")
    parser.add_argument("--floor-repeats", type=int, default=None, help="repeats of each floor variant (default 3; 1 with --quick)")
    parser.add_argument("--seed", type=int, default=20250101)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "replay.json")
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    parser.add_argument("--_params", help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        return worker_main(args._worker, args._params, args._out)

    n_events = args.events or (20_000 if args.quick else 200_000)
    repeats = args.repeats or (1 if args.quick else 3)
    floor_repeats = args.floor_repeats or (1 if args.quick else 3)
    params = {"events": n_events, "batch_size": args.batch_size, "repeats": repeats, "floor_repeats": floor_repeats, "seed": args.seed}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    progress(f"replay bench: {n_events:,} events, batch_size={args.batch_size or 'default'}, {repeats} replay repeat(s), {floor_repeats} floor repeat(s), profile: {args.profile}")
    results: dict[str, Any] = {
        "benchmark": "replay", "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": common.machine_info(),
        "config": {**params, "quick": args.quick, "floor_batch": FLOOR_BATCH, "log_insert_chunk": 10_000},
        "goals": [f"PostgreSQL: replay total >= {PG_RATE_GOAL:,.0f} events/s", f"replay total time <= {FLOOR_FACTOR_GOAL:g} x the fastest floor"],
        "databases": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        for kind in ("sqlite", "postgresql"):
            if args.only in (None, kind):
                results["databases"][kind] = run_db(kind, args, Path(tmp), params)
    results["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print()
    for key, name in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        if key in results["databases"]:
            print(render(name, results["databases"][key], n_events, repeats))
    progress(f"done in {results['elapsed_seconds']:.0f}s; results in {args.output}")
    failed = any(db.get("errors") for db in results["databases"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
