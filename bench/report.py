"""Rewrite the benchmark tables in README.md, docs/modes.md and docs/scaling.md from the results
files, so a number in the docs is always the one in its file: ``make bench-report``.

Run from the repository root::

    .venv/bin/python bench/report.py            # rewrite every generated section in place
    .venv/bin/python bench/report.py --check    # exit 1 if a section differs from what the files say
    .venv/bin/python bench/report.py --print    # print the sections, change nothing
    .venv/bin/python bench/report.py --results bench/results/quick --print

A generated section sits between two markers, and everything between them is replaced::

    <!-- bench-report:NAME -->
    ...
    <!-- /bench-report:NAME -->

Every table says which results file each figure comes from and when that run was made. A
figure missing from its file shows as "n/a"; a missing file says "not measured yet" and the
command that makes it. ``modes-faults`` is rendered from ``bench/results/faults.json`` (written
by ``make faults``) when that file exists.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
BASE_DIR = BENCH_DIR.parent
DOCS = (BASE_DIR / "README.md", BASE_DIR / "docs" / "modes.md", BASE_DIR / "docs" / "scaling.md")
MODES = ("orchestration", "choreography", "2pc")
#: Events an approved create-order flow puts in the central log, in every mode.
EVENTS_PER_ORDER = 3
MARKER = re.compile(r"(<!-- bench-report:(?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- /bench-report:(?P=name) -->)", re.S)

COMMANDS = {
    "append.json": ".venv/bin/python bench/append.py",
    "replay.json": ".venv/bin/python bench/replay.py",
    "query.json": ".venv/bin/python bench/query.py",
    "readyourwrites.json": ".venv/bin/python bench/readyourwrites.py",
    "sagas.json": ".venv/bin/python bench/sagas.py",
    "sagas-prefork.json": ".venv/bin/python bench/sagas.py --pool prefork --concurrency 2 --output bench/results/sagas-prefork.json",
    "scaling.json": ".venv/bin/python bench/scaling.py",
    "faults.json": "make faults",
}


class Results:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.cache: dict[str, dict[str, Any] | None] = {}

    def get(self, name: str) -> dict[str, Any] | None:
        if name not in self.cache:
            try:
                self.cache[name] = json.loads((self.dir / name).read_text())
            except (OSError, ValueError):
                self.cache[name] = None
        return self.cache[name]

    def rel(self, name: str) -> str:
        path = self.dir / name
        return str(path.relative_to(BASE_DIR)) if path.is_relative_to(BASE_DIR) else str(path)

    def cite(self, name: str) -> str:
        data = self.get(name) or {}
        when = str(data.get("timestamp") or data.get("when") or data.get("started_at") or "?")[:16].replace("T", " ")
        quick = " `--quick`," if dig(data, "config", "quick") or data.get("quick") else ""
        command = data.get("command") or COMMANDS.get(name, "?")
        if command.startswith("python "):
            command = command.removeprefix("python ")
        if not command.startswith((".venv/", "make ")):
            command = ".venv/bin/python " + command
        return f"`{self.rel(name)}` ({when} UTC,{quick} `{command}`)"

    def absent(self, name: str) -> str:
        return f"*Not measured yet: `{self.rel(name)}` does not exist. `{COMMANDS.get(name, '?')}` writes it.*\n"


def dig(data: Any, *keys: Any) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def f(value: Any, spec: str = ",.0f", suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    if isinstance(value, float) and -0.1 < value < 0:
        value = 0.0  # a per-order count less the idle background's estimate: noise around zero
    return format(value, spec) + suffix


def ratio(a: Any, b: Any) -> float | None:
    return a / b if isinstance(a, int | float) and isinstance(b, int | float) and b else None


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def cpu_ms(part: dict[str, Any] | None) -> float | None:
    values = dig(part, "sat", "cpu_ms_per_item")
    return sum(v for k, v in values.items() if k != "bench client") if values else None


# =========================================================================================
# README.md
# =========================================================================================


def section_summary(r: Results) -> str:
    rows = []
    a = r.get("append.json")
    if a:
        for db, name in (("postgresql", "PostgreSQL"), ("sqlite", "SQLite")):
            figs = dig(a, "databases", db, "figures") or {}
            ours, lib, raw = (dig(figs, k, "median") for k in ("ours_1", "es_1", "floor_1"))
            rows.append([f"`bench/append.py`, {name}", "append, 1 event per transaction", f(ours, ",.0f", "/s"),
                         f"`eventsourcing` {f(lib, ',.0f', '/s')}; raw insert {f(raw, ',.0f', '/s')}",
                         f"{f(ratio(ours, lib), '.2f')} x lib; {f(ratio(ours, raw), '.2f')} x raw", r.rel("append.json")])
            relay, raw100 = dig(figs, "relay", "median"), dig(figs, "floor_100", "median")
            rows.append([f"`bench/append.py`, {name}", "relay into the log, batches of 1,000", f(relay, ",.0f", "/s"),
                         f"raw insert 100 rows/txn {f(raw100, ',.0f', '/s')}", f"{f(ratio(relay, raw100), '.2f')} x raw", r.rel("append.json")])
    else:
        rows.append(["`bench/append.py`", "append", "not measured yet", "", "", r.rel("append.json")])
    p = r.get("replay.json")
    if p:
        for db, name in (("postgresql", "PostgreSQL"), ("sqlite", "SQLite")):
            s = dig(p, "databases", db, "summary") or {}
            total = next((row for row in s.get("rows", []) if row["key"] == "total"), {})
            rows.append([f"`bench/replay.py`, {name}", f"replay of {f(dig(p, 'config', 'events'))} events",
                         f"{f(total.get('events_per_s'), ',.0f', '/s')} ({f(s.get('replay_seconds'), '.2f', ' s')})",
                         f"{s.get('floor_best', '?')} of the final rows: {f(s.get('floor_seconds'), '.2f', ' s')}",
                         f"{f(ratio(s.get('replay_seconds'), s.get('floor_seconds')), '.2f')} x the floor's time", r.rel("replay.json")])
    else:
        rows.append(["`bench/replay.py`", "replay", "not measured yet", "", "", r.rel("replay.json")])
    q = r.get("query.json")
    if q:
        api, bare = dig(q, "summary", "figures", "api") or {}, dig(q, "summary", "figures", "bare") or {}
        rows.append(["`bench/query.py`", "`GET /api/orders/{id}/` (wrk, gunicorn x2)",
                     f"{f(api.get('rps'), ',.0f', ' req/s')}, p99 {f(api.get('p99_ms'), '.1f', ' ms')}",
                     f"bare view {f(bare.get('rps'), ',.0f', ' req/s')}, p99 {f(bare.get('p99_ms'), '.1f', ' ms')}",
                     f"{f(api.get('rps_vs_bare'), '.2f')} x req/s; {f(api.get('p99_vs_bare'), '.2f')} x p99", r.rel("query.json")])
    else:
        rows.append(["`bench/query.py`", "query", "not measured yet", "", "", r.rel("query.json")])
    y = r.get("readyourwrites.json")
    if y and y.get("summary"):
        base, bounded = y["summary"].get("baseline", {}), y["summary"].get("flood, bounded", {})
        rows.append(["`bench/readyourwrites.py`", "plain reads' p99 under a `?min_version=` flood",
                     f(bounded.get("plain_p99_ms"), ".1f", " ms"), f"no flood: {f(base.get('plain_p99_ms'), '.1f', ' ms')}",
                     f"{f(bounded.get('p99_x_baseline'), '.2f')} x", r.rel("readyourwrites.json")])
    for name, layout in (("sagas.json", "2 solo workers"), ("sagas-prefork.json", "2 prefork workers -c 2")):
        s = dig(r.get(name), "summary")
        if not s:
            rows.append([f"`bench/sagas.py` ({layout})", "sagas per mode", "not measured yet", "", "", r.rel(name)])
            continue
        floor = dig(s, "floor", "sat", "throughput_per_s")
        for mode in MODES:
            if mode not in s:
                continue
            tput = dig(s, mode, "sat", "throughput_per_s")
            rows.append([f"`bench/sagas.py` ({layout})", f"{mode}: sagas/s; unsaturated p50",
                         f"{f(tput, ',.1f', '/s')}; {f(dig(s, mode, 'unsat', 'latency', 'p50_ms'), '.1f', ' ms')}",
                         f"6-hop Celery chains {f(floor, ',.1f', '/s')}; {f(dig(s, 'floor', 'unsat', 'latency', 'p50_ms'), '.1f', ' ms')}",
                         f"{f(ratio(tput, floor), '.2f')} x", r.rel(name)])
    sc = r.get("scaling.json")
    if sc and sc.get("writers"):
        top = max(sc["writers"], key=lambda row: row.get("write_events_per_s") or 0)
        app = max(sc.get("appenders") or [{}], key=lambda row: row.get("events_per_s") or 0)
        rows.append(["`bench/scaling.py`", "most appends/s over 1-8 writers; log appends/s",
                     f"{f(top.get('write_events_per_s'), ',.0f', '/s')} ({top.get('writers')} writers); log {f(app.get('events_per_s'), ',.0f', '/s')}",
                     "", "", r.rel("scaling.json")])
    else:
        rows.append(["`bench/scaling.py`", "ceilings", "not measured yet", "", "", r.rel("scaling.json")])
    out = table(["script", "figure", "ours", "floor or anchor, same run", "ratio", "results file"], rows)
    out += "\n" + section_counts(r)
    stamps = [r.cite(name) for name in ("append.json", "replay.json", "query.json", "readyourwrites.json", "sagas.json",
                                                       "sagas-prefork.json", "scaling.json") if r.get(name)]
    return out + "\nRuns: " + "; ".join(stamps) + ".\n"


def section_counts(r: Results) -> str:
    """Statements and round trips per operation: the same on any machine, so a regression shows
    as a changed count even when the rates are noise."""
    rows = []
    a = r.get("append.json")
    for db, name, trips in (("postgresql", "PostgreSQL", "round trips"), ("sqlite", "SQLite", "engine calls")):
        counts = dig(a, "databases", db, "counts") or {}
        for key, label in (("ours_1", "append, 1 event/txn"), ("ours_100", "append, 100 events/txn"), ("relay", "relay")):
            first = (counts.get(key) or [{}])[0]
            if first:
                rows.append([f"{label}, {name}", "per event", f(first.get("statements_per_event"), ".2f"),
                             f"{f(first.get('round_trips_per_event'), '.2f')} {trips}", r.rel("append.json")])
    for key, label in (("api", "`GET /api/orders/{id}/`"), ("bare", "bare view")):
        c = dig(r.get("query.json"), "profile", key, "counts")
        if c:
            rows.append([label, "per request", f(c.get("statements_per_request"), ".2f"),
                         f"{f(c.get('pg_round_trips_per_request'), '.2f')} PostgreSQL, {f(c.get('redis_round_trips_per_request'), '.2f')} Redis",
                         r.rel("query.json")])
    for name, layout in (("sagas.json", "solo"), ("sagas-prefork.json", "prefork")):
        s = dig(r.get(name), "summary") or {}
        for mode in MODES:
            if mode in s:
                rows.append([f"{mode} saga ({layout})", "per order, saturated", f(dig(s, mode, "sat", "postgres", "per_order", "statements"), ".1f"),
                             f"{f(dig(s, mode, 'sat', 'postgres', 'per_order', 'xact_commit'), '.1f')} commits; "
                             f"{f(dig(s, mode, 'sat', 'celery_per_order', 'total'), '.2f')} Celery task runs", r.rel(name)])
    p = dig(r.get("replay.json"), "databases", "postgresql", "summary", "statements_per_replay")
    if p:
        rows.append(["replay, PostgreSQL", "per replay", f(p.get("statements")), f"{f(p.get('copy'))} COPY, {f(p.get('commits'))} commits", r.rel("replay.json")])
    if not rows:
        return ""
    return ("Counted per operation: the same on any machine, but for the saturated sagas' figures, which fall as the runs batch "
            "more orders:\n\n" + table(["operation", "unit", "SQL statements", "round trips and the rest", "results file"], rows))


# =========================================================================================
# docs/modes.md
# =========================================================================================


def layouts(r: Results) -> list[tuple[str, str, dict[str, Any]]]:
    found = []
    for name, label in (("sagas.json", "2 workers, `--pool solo`"), ("sagas-prefork.json", "2 workers, `--pool prefork --concurrency 2`")):
        s = dig(r.get(name), "summary")
        if s:
            found.append((name, label, s))
    return found


def section_modes_throughput(r: Results) -> str:
    found = layouts(r)
    if not found:
        return r.absent("sagas.json")
    out = []
    for name, label, s in found:
        cfg = (r.get(name) or {}).get("config", {})
        out.append(f"**{label}**: N={cfg.get('n')} saturated orders per mode from {cfg.get('threads')} client threads, "
                   f"{cfg.get('unsat')} unsaturated (one at a time); from {r.cite(name)}.\n")
        rows = []
        for mode in [*MODES, "floor"]:
            if mode not in s:
                continue
            part = s[mode]
            rows.append([mode if mode != "floor" else "floor: 6 bare Celery hops", f(dig(part, "sat", "throughput_per_s"), ",.1f"),
                         f(dig(part, "unsat", "latency", "p50_ms"), ",.1f"), f(dig(part, "unsat", "latency", "p99_ms"), ",.1f"),
                         f(dig(part, "sat", "latency", "p50_ms"), ",.0f"), f(dig(part, "sat", "latency", "p99_ms"), ",.0f"),
                         f(ratio(dig(part, "sat", "throughput_per_s"), dig(s, "floor", "sat", "throughput_per_s")), ".2f"),
                         f(cpu_ms(part), ".1f")])
        out.append(table(["mode", "sagas/s (saturated)", "unsat p50 ms", "unsat p99 ms", "sat p50 ms", "sat p99 ms", "x floor sagas/s",
                          "CPU ms per order"], rows))
        out.append("")
    return "\n".join(out)


def section_modes_costs(r: Results) -> str:
    found = layouts(r)
    if not found:
        return r.absent("sagas.json")
    name, label, s = found[0]
    rows = []
    dbs = ("saga_orders", "saga_customers", "saga_sagas", "saga_eventlog", "saga_readmodels")
    for mode in [*MODES, "floor"]:
        if mode not in s:
            continue
        sat = s[mode]["sat"]
        per_db = dig(sat, "postgres", "per_db") or {}
        split = ", ".join(f"{db.removeprefix('saga_')} {f(dig(per_db, db, 'per_order', 'xact_commit'), '.1f')}" for db in dbs if db in per_db)
        rows.append([mode if mode != "floor" else "floor", f(dig(sat, "postgres", "per_order", "xact_commit"), ".2f") + (f" ({split})" if split else ""),
                     f(dig(sat, "postgres", "per_order", "statements"), ".1f"),
                     f(dig(s, mode, "unsat", "celery_per_order", "saga_hops"), ".0f"),
                     f(dig(s, mode, "unsat", "celery_per_order", "total"), ".1f"),
                     f(dig(sat, "celery_per_order", "total"), ".2f"),
                     f(dig(s, mode, "unsat", "hop_sum_p50_ms"), ".1f")])
    return (f"From {r.cite(name)} ({label}); PostgreSQL's own counters (`pg_stat_database`, `pg_stat_statements`) "
            "over the saturated run, less the idle background, divided by the orders:\n\n"
            + table(["mode", "commits per order (by database)", "statements per order (`pg_stat_statements`; each a round trip, as none of these paths pipelines)",
                     "saga Celery hops per order", "Celery task runs per order, unsaturated", "Celery task runs per order, saturated",
                     "unsat: sum of hop p50s, ms"], rows))


def section_modes_faults(r: Results) -> str:
    data = r.get("faults.json")
    if not data:
        return ("*Placeholder: this section is rendered from `bench/results/faults.json`, which the fault run "
                "(`make faults`, tests/faults/) writes; that file does not exist yet. "
                "Rerun `make bench-report` once it does.*\n")
    config = data.get("config", {})
    out = [f"From {r.cite('faults.json')}: {config.get('orders', '?')} orders, outages of {config.get('outage_seconds', '?'):g} s, "
           f"{config.get('processes', '')}; {config.get('timings', '')}. "
           f"Violations: {len(data.get('violations') or [])}; passed: {'yes' if data.get('passed') else 'NO'}.\n"]
    costs = data.get("costs") or {}

    def median(stats: Any) -> str:
        return f(stats.get("median"), ".1f") if isinstance(stats, dict) and stats.get("n") else "n/a"

    rows = []
    for mode, stats in (costs.get("baseline_latency_s") or {}).items():
        rows.append([mode, "none (baseline)", "order decided", median(stats), "", ""])
    for kind, figures in (costs.get("orchestration") or {}).items():
        rows.append(["orchestration", kind, "saga resumed / finished after the kill", f"{median(figures.get('resumed_after_kill_s'))} / {median(figures.get('finished_after_kill_s'))}", "", ""])
    chor = costs.get("choreography") or {}
    if chor:
        rows.append(["choreography", "the handler's worker SIGKILLed mid-handler", "order decided / trace ended after the kill",
                     f"{median(chor.get('decided_after_kill_s'))} / {median(chor.get('trace_ended_after_kill_s'))}", "", ""])
    for point, figures in (costs.get("2pc") or {}).items():
        rows.append(["2pc", f"coordinator SIGKILLed at `{point}`", "prepared branches held (their row locks) until finished",
                     median(figures.get("prepared_held_after_kill_s")), median(figures.get("row_lock_waited_s")),
                     ", ".join(sorted(set(figures.get("decision") or []))) + " by " + ", ".join(sorted(set(figures.get("finished_by") or [])))])
    if rows:
        out.append("Medians, in seconds, measured in that run:\n")
        out.append(table(["mode", "fault", "what is measured", "seconds", "a writer on the customer's row waited, s", "decision, finished by"], rows))
    injected = data.get("faults_injected") or {}
    if injected:
        out.append("Faults injected (each proven, see tests/faults/run.py):\n")
        out.append(table(["fault", "count"], [[kind, str(n)] for kind, n in injected.items()]))
    orders = data.get("orders") or {}
    if orders:
        states = list(dict.fromkeys(state for by_state in orders.values() for state in by_state))
        out.append("Orders per mode and final state:\n")
        out.append(table(["mode", *states], [[mode, *[str(by_state.get(state, 0)) for state in states]] for mode, by_state in orders.items()]))
    return "\n".join(out)


# =========================================================================================
# docs/scaling.md
# =========================================================================================


def section_scaling_writers(r: Results) -> str:
    sc = r.get("scaling.json")
    if not sc or not sc.get("writers"):
        return r.absent("scaling.json")
    rows = [[str(w["writers"]), f(w.get("write_events_per_s")), f(w.get("write_p50_ms"), ".2f"), f(w.get("write_p99_ms"), ".1f"),
             f(w.get("relay_events_per_s")), f(dig(w, "relay", "mean_batch"), ".1f"), f(dig(w, "relay", "drain_seconds"), ".2f"),
             f(w.get("lag_p50_ms"), ".0f"), f(w.get("lag_p99_ms"), ".0f"), "yes" if w.get("all_relayed") else "NO",
             f(dig(w, "machine", "busy_cores"), ".2f"), f(dig(w, "machine", "loadavg_1m_after"), ".1f")] for w in sc["writers"]]
    return (f"From {r.cite('scaling.json')}, {sc['config']['duration']:g} s per row:\n\n"
            + table(["writers", "appends/s (all writers)", "append p50 ms", "append p99 ms", "relay events/s", "relay batch (mean)",
                     "drain after, s", "relay lag p50 ms", "relay lag p99 ms", "all relayed", "busy cores", "load average"], rows))


def section_scaling_appenders(r: Results) -> str:
    sc = r.get("scaling.json")
    if not sc or not sc.get("appenders"):
        return r.absent("scaling.json")
    first = sc["appenders"][0].get("events_per_s")
    rows = [[str(a["appenders"]), str(a["batch"]), f(a.get("events_per_s")), f(ratio(a.get("events_per_s"), first), ".2f"),
             f(a.get("append_p50_ms"), ".2f"), f(a.get("append_p99_ms"), ".1f"), f(dig(a, "machine", "busy_cores"), ".2f"),
             f(dig(a, "machine", "loadavg_1m_after"), ".1f")] for a in sc["appenders"]]
    return (f"From {r.cite('scaling.json')}:\n\n"
            + table(["appenders", "events per append", "log events/s", "x 1 appender", "append p50 ms", "append p99 ms", "busy cores", "load average"], rows))


def section_scaling_sagas(r: Results) -> str:
    sc = r.get("scaling.json")
    rows_in = [row for row in (sc or {}).get("sagas") or [] if "error" not in row]
    if not sc:
        return r.absent("scaling.json")
    if not rows_in:
        return f"*Not measured: {r.cite('scaling.json')} has no saga runs (it was run with `--no-sagas`, or they failed: see its `errors`).*\n"
    modes = [*sc["config"]["sagas_modes"].split(","), "floor"]
    rows = []
    for row in rows_in:
        cells = [str(row["workers"])]
        for mode in modes:
            part = row.get(mode) or {}
            retried = f"; {part['steps_retried']} steps retried" if part.get("steps_retried") else ""
            cells.append(f"{f(part.get('sagas_per_s'), ',.1f')} ({f(part.get('unsat_p50_ms'), ',.0f')} ms; {f(part.get('cpu_ms_per_order'), '.1f')} ms CPU{retried})")
        cells.append(f"{f(row.get('busy_cores_before'), '.2f')}; {f(row.get('loadavg_1m'), '.1f')}")
        cells.append(f"`{row.get('file')}`")
        rows.append(cells)
    return (f"From {r.cite('scaling.json')} (each row one `bench/sagas.py` run, its command in the file; "
            f"N={sc['config']['sagas_n']} saturated orders per mode):\n\n"
            + table(["workers", *[f"{m} /s (unsat p50; CPU per order)" for m in modes], "machine: busy cores before; load average", "results file"], rows))


def section_scaling_headroom(r: Results) -> str:
    """Orders/s at which each shared resource of one machine runs out, from the measured
    ceilings and the measured cost per order."""
    sc, sagas, append = r.get("scaling.json"), dig(r.get("sagas.json"), "summary"), r.get("append.json")
    if not sc or not sagas:
        return r.absent("scaling.json" if not sc else "sagas.json")
    writers_ceiling = max((w.get("write_events_per_s") or 0 for w in sc.get("writers") or []), default=0) or None
    raw_ceiling = dig(append, "databases", "postgresql", "figures", "floor_1", "median")
    commit_ceiling = max((x for x in (writers_ceiling, raw_ceiling) if x), default=None)
    log_ceiling = max((a.get("events_per_s") or 0 for a in sc.get("appenders") or []), default=0) or None
    writers_relay = max((w.get("relay_events_per_s") or 0 for w in sc.get("writers") or []), default=0) or None
    backlog_relay = dig(append, "databases", "postgresql", "figures", "relay", "median")
    relay_ceiling = max((x for x in (writers_relay, backlog_relay) if x), default=None)
    floor_hops = dig(sagas, "floor", "sat", "throughput_per_s")
    rows = []
    for mode in MODES:
        if mode not in sagas:
            continue
        sat = sagas[mode]["sat"]
        commits = dig(sat, "postgres", "per_order", "xact_commit")
        per_db = dig(sat, "postgres", "per_db") or {}
        busiest = max(per_db.items(), key=lambda kv: dig(kv[1], "per_order", "xact_commit") or 0, default=(None, {}))
        busiest_commits = dig(busiest[1], "per_order", "xact_commit")
        cpu = cpu_ms(sagas[mode])
        hops = dig(sat, "celery_per_order", "total")
        rows.append([mode, f(dig(sat, "throughput_per_s"), ",.1f"),
                     f(ratio(2000.0, cpu), ",.0f"),
                     f(ratio(commit_ceiling, commits), ",.0f"),
                     f"{f(ratio(commit_ceiling, busiest_commits), ',.0f')} ({(busiest[0] or '?').removeprefix('saga_')})",
                     f(ratio(log_ceiling, EVENTS_PER_ORDER), ",.0f"),
                     f(ratio(relay_ceiling, 2), ",.0f"),
                     f(ratio(floor_hops * 6 if floor_hops else None, hops), ",.0f")])
    notes = [
        "- CPU: 2 cores = 2,000 ms of CPU per second, over the CPU per order of the saturated run (`sagas.json`).",
        f"- one PostgreSQL server: the higher of the most commits/s the writers reached (`scaling.json`, {f(writers_ceiling)}/s) and the raw "
        f"1-row insert of `append.json` ({f(raw_ceiling)}/s), over the commits per order; then the same ceiling over the busiest "
        "database's share, i.e. the rate at which that context's database alone would need a server of its own. Both are measured with "
        "the clients on the same 2 cores, so a server of its own does more.",
        f"- the central log: the most log events/s of the appenders (`scaling.json`, {f(log_ceiling)}/s), over {EVENTS_PER_ORDER} events "
        "per approved order (OrderCreated, CreditReserved, OrderApproved).",
        f"- one relay per outbox: the higher of the relay over a backlog in `append.json` ({f(backlog_relay)}/s, batches of 1,000) and the "
        f"relay that kept up with the writers in `scaling.json` ({f(writers_relay)}/s), over the 2 events per order of the busiest "
        "outbox (orders: OrderCreated, OrderApproved).",
        f"- the broker and the workers' task handling: the floor's hops per second (`sagas.json`: {f(floor_hops, ',.1f')} chains/s x 6 hops), "
        "over the Celery task runs per order of the saturated run (every saga hop and every relay/subscriber run, which batch many orders "
        "there): what dispatching costs, not what the tasks do (that is in the CPU column).",
    ]
    return ("Orders per second at which each shared resource of this machine would run out, each the ceiling measured above "
            "over what one order costs in the saturated three-mode run (a ceiling for that resource alone; the first one hit is the limit):\n\n"
            + table(["mode", "measured sagas/s", "CPU (2 cores)", "one PostgreSQL server, all contexts", "one context's database (busiest)",
                     "the central log", "one relay", "broker + task handling"], rows)
            + "\n" + "\n".join(notes) + "\n")


SECTIONS: dict[str, Callable[[Results], str]] = {
    "summary": section_summary,
    "modes-throughput": section_modes_throughput,
    "modes-costs": section_modes_costs,
    "modes-faults": section_modes_faults,
    "scaling-writers": section_scaling_writers,
    "scaling-appenders": section_scaling_appenders,
    "scaling-sagas": section_scaling_sagas,
    "scaling-headroom": section_scaling_headroom,
}


def rewrite(text: str, results: Results, seen: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in SECTIONS:
            raise SystemExit(f"unknown generated section {name!r}; known: {', '.join(SECTIONS)}")
        seen.append(name)
        return match.group(1) + SECTIONS[name](results) + match.group(4)

    return MARKER.sub(replace, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated section is out of date")
    parser.add_argument("--print", dest="print_only", action="store_true", help="print every section, change nothing")
    args = parser.parse_args(argv)
    results = Results(args.results.resolve())
    if args.print_only:
        for name, render in SECTIONS.items():
            print(f"<!-- bench-report:{name} -->\n{render(results)}<!-- /bench-report:{name} -->\n")
        return 0
    stale = []
    for doc in DOCS:
        if not doc.exists():
            continue
        seen: list[str] = []
        before = doc.read_text()
        after = rewrite(before, results, seen)
        if after != before:
            stale.append(doc.relative_to(BASE_DIR))
            if not args.check:
                doc.write_text(after)
        print(f"{doc.relative_to(BASE_DIR)}: {len(seen)} section(s){' rewritten' if after != before and not args.check else ''}"
              f"{' OUT OF DATE' if after != before and args.check else ''}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
