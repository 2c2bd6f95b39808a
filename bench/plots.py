"""Draw the benchmark plots from the results files only (no benchmark runs): ``make bench-plots``.

Run from the repository root::

    .venv/bin/python bench/plots.py                                   # bench/results/*.json -> docs/bench/*.png
    .venv/bin/python bench/plots.py --results bench/results/quick --out bench/results/quick/plots

Each plot names, in its title, the results file and the timestamp of the run it draws. A plot
whose results file is missing (or lacks a figure) says so in its panel instead of failing, so
the set can be redrawn after any subset of the benchmarks. matplotlib's Agg backend: no display.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
BASE_DIR = BENCH_DIR.parent
MODES = ("orchestration", "choreography", "2pc")
COLOURS = {"orchestration": "#4C72B0", "choreography": "#55A868", "2pc": "#C44E52", "floor": "#8C8C8C",
           "ours": "#4C72B0", "library": "#DD8452", "raw": "#8C8C8C", "raw2": "#B0B0B0"}


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / name
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def dig(data: Any, *keys: Any) -> Any:
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def source(results: Path, name: str, data: dict[str, Any] | None) -> str:
    when = (data or {}).get("timestamp") or (data or {}).get("when") or "?"
    quick = dig(data, "config", "quick")
    return f"{(results / name).relative_to(BASE_DIR) if (results / name).is_relative_to(BASE_DIR) else results / name}, {str(when)[:16]}" + (" (--quick)" if quick else "")


def missing(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#888888", wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def label_bars(ax: Any, bars: Any, spec: str = ",.0f") -> None:
    for bar in bars:
        height = bar.get_height()
        if height and height == height:
            ax.annotate(format(height, spec), (bar.get_x() + bar.get_width() / 2, height), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 1), textcoords="offset points")


def grouped(ax: Any, groups: list[str], series: list[tuple[str, list[float | None], str]], spec: str = ",.0f", *, log: bool = False) -> None:
    width = 0.8 / max(1, len(series))
    for index, (name, values, colour) in enumerate(series):
        xs = [g + (index - (len(series) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, [v if v is not None else 0 for v in values], width, label=name, color=colour)
        label_bars(ax, [b for b, v in zip(bars, values, strict=True) if v is not None], spec)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    if log:
        ax.set_yscale("log")
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom, top * 3)
    else:
        bottom, top = ax.get_ylim()
        ax.set_ylim(bottom, top * 1.2)  # room for the legend above the bars


# ------------------------------------------------------------------------------------------


def plot_sagas(results: Path, out: Path) -> Path:
    layouts = [("solo (2 workers)", "sagas.json"), ("prefork -c 2 (2 workers)", "sagas-prefork.json")]
    loaded = [(label, name, load(results, name)) for label, name in layouts]
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.4))
    groups = [*MODES, "floor"]
    shades = ["#4C72B0", "#93B5E1"]
    present = [(label, name, data) for label, name, data in loaded if data and data.get("summary")]
    if not present:
        for ax in axes:
            missing(ax, "no bench/results/sagas.json or sagas-prefork.json")
    else:
        def values(data: dict[str, Any], *path: str) -> list[float | None]:
            return [dig(data["summary"], g, *path) for g in groups]

        grouped(axes[0], groups, [(label, values(data, "sat", "throughput_per_s"), shades[i]) for i, (label, _, data) in enumerate(present)], ",.1f")
        axes[0].set_title("saturated throughput (sagas/s; floor: 6-hop chains/s)", fontsize=9)
        axes[0].set_ylabel("per second")
        series = []
        for i, (label, _, data) in enumerate(present):
            series.append((f"{label} p50", values(data, "unsat", "latency", "p50_ms"), shades[i]))
            series.append((f"{label} p99", values(data, "unsat", "latency", "p99_ms"), ["#DD8452", "#F2B482"][i]))
        grouped(axes[1], groups, series, ",.0f")
        axes[1].set_title("unsaturated latency, one order at a time (ms)", fontsize=9)
        series = []
        for i, (label, _, data) in enumerate(present):
            series.append((f"{label} p50", values(data, "sat", "latency", "p50_ms"), shades[i]))
            series.append((f"{label} p99", values(data, "sat", "latency", "p99_ms"), ["#DD8452", "#F2B482"][i]))
        grouped(axes[2], groups, series, ",.0f", log=True)
        axes[2].set_title("saturated latency, N orders from 8 clients (ms, log)", fontsize=9)
        for ax in axes:
            ax.legend(fontsize=7)
    notes = "; ".join(source(results, name, data) for _, name, data in loaded if data) or "no results"
    absent = [name for _, name, data in loaded if not data]
    fig.suptitle("Create-order sagas per mode next to bare Celery hops (bench/sagas.py)\n" + notes
                 + (f"; not measured: {', '.join(absent)}" if absent else ""), fontsize=9)
    return save(fig, out / "sagas.png")


def plot_replay(results: Path, out: Path) -> Path:
    data = load(results, "replay.json")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    dbs = [("PostgreSQL", "postgresql"), ("SQLite", "sqlite")]
    if not data:
        missing(axes[0], "no bench/results/replay.json")
        missing(axes[1], "")
    else:
        keys = [("total", "replay (all projections)", "#4C72B0"), ("floor_pg_copy", "floor: COPY", "#8C8C8C"),
                ("floor_raw_executemany", "floor: executemany", "#B0B0B0"), ("floor_orm_bulk_create", "floor: ORM bulk_create", "#D0D0D0")]
        series = []
        for key, label, colour in keys:
            row_values: list[float | None] = []
            for _, db in dbs:
                rows = {r["key"]: r for r in dig(data, "databases", db, "summary", "rows") or []}
                row_values.append(dig(rows, key, "events_per_s"))
            if any(v is not None for v in row_values):
                series.append((label, row_values, colour))
        grouped(axes[0], [name for name, _ in dbs], series, ",.0f")
        axes[0].set_ylabel("events/s")
        axes[0].set_title(f"replay of {dig(data, 'config', 'events') or 0:,} events vs writing the final rows in bulk", fontsize=9)
        axes[0].legend(fontsize=7)
        phases = ["read", "decode", "wait_for_read", "fold", "write", "swap", "other"]
        series = []
        for i, (name, db) in enumerate(dbs):
            split = dig(data, "databases", db, "summary", "phases_median_seconds") or {}
            series.append((name, [split.get(p) for p in phases], ["#4C72B0", "#93B5E1"][i]))
        grouped(axes[1], phases, series, ".2f")
        axes[1].set_ylabel("seconds (median replay)")
        axes[1].set_title("time split (read and decode run in a reader thread, overlapping the rest)", fontsize=9)
        axes[1].legend(fontsize=7)
    fig.suptitle("Read-model replay next to the COPY floor (bench/replay.py)\n" + source(results, "replay.json", data), fontsize=9)
    return save(fig, out / "replay.png")


def plot_append(results: Path, out: Path) -> Path:
    data = load(results, "append.json")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    dbs = [("PostgreSQL", "postgresql"), ("SQLite", "sqlite")]
    if not data:
        missing(axes[0], "no bench/results/append.json")
        missing(axes[1], "")
    else:
        def median(db: str, figure: str) -> float | None:
            return dig(data, "databases", db, "figures", figure, "median")

        one = [("ours, 1 event/txn", "ours_1", COLOURS["ours"]), ("eventsourcing 1/save", "es_1", COLOURS["library"]),
               ("raw insert 1 row/txn", "floor_1", COLOURS["raw"]), ("raw event+state/txn", "floor_2", COLOURS["raw2"])]
        grouped(axes[0], [n for n, _ in dbs], [(label, [median(db, key) for _, db in dbs], colour) for label, key, colour in one])
        axes[0].set_title("one event per transaction (events/s)", fontsize=9)
        axes[0].legend(fontsize=7)
        many = [("ours, 100 events/txn", "ours_100", COLOURS["ours"]), ("relay, batches of 1,000", "relay", "#55A868"),
                ("raw insert 100 rows/txn", "floor_100", COLOURS["raw"])]
        grouped(axes[1], [n for n, _ in dbs], [(label, [median(db, key) for _, db in dbs], colour) for label, key, colour in many])
        axes[1].set_title("batches (events/s)", fontsize=9)
        axes[1].legend(fontsize=7)
    fig.suptitle("Event append next to the eventsourcing library and the raw insert (bench/append.py)\n" + source(results, "append.json", data), fontsize=9)
    return save(fig, out / "append.png")


def plot_query(results: Path, out: Path) -> Path:
    data = load(results, "query.json")
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    if not data or not dig(data, "summary", "figures"):
        missing(axes[0], "no bench/results/query.json")
        missing(axes[1], "")
    else:
        figures = data["summary"]["figures"]
        rows = [("GET /api/orders/{id}/", "api", "#4C72B0"), ("bare view (1 pk select)", "bare", "#8C8C8C"),
                ("API, throttle off (diagnostic)", "api_no_throttle", "#93B5E1")]
        rows = [r for r in rows if r[1] in figures]
        bars = axes[0].bar([r[0] for r in rows], [figures[r[1]]["rps"] for r in rows], color=[r[2] for r in rows])
        label_bars(axes[0], bars)
        axes[0].set_title("requests/s (wrk, 16 connections)", fontsize=9)
        axes[0].tick_params(axis="x", labelsize=7)
        grouped(axes[1], [r[0] for r in rows], [("p50", [figures[r[1]]["p50_ms"] for r in rows], "#4C72B0"),
                                                ("p99", [figures[r[1]]["p99_ms"] for r in rows], "#DD8452")], ",.1f")
        axes[1].tick_params(axis="x", labelsize=7)
        axes[1].set_title("latency (ms)", fontsize=9)
        axes[1].legend(fontsize=7)
    fig.suptitle("Query API next to a bare Django view (bench/query.py)\n" + source(results, "query.json", data), fontsize=9)
    return save(fig, out / "query.png")


def plot_readyourwrites(results: Path, out: Path) -> Path:
    data = load(results, "readyourwrites.json")
    fig, ax = plt.subplots(figsize=(7, 4))
    summary = (data or {}).get("summary")
    if not summary:
        missing(ax, "no bench/results/readyourwrites.json")
    else:
        rows = list(summary)
        grouped(ax, rows, [("p50", [summary[r].get("plain_p50_ms") for r in rows], "#4C72B0"),
                           ("p99", [summary[r].get("plain_p99_ms") for r in rows], "#DD8452")], ",.1f", log=True)
        ax.set_ylabel("plain read latency (ms, log)")
        ax.legend(fontsize=7)
    fig.suptitle("Plain reads while ?min_version= waits flood the server (bench/readyourwrites.py)\n"
                 + source(results, "readyourwrites.json", data), fontsize=9)
    return save(fig, out / "readyourwrites.png")


def plot_scaling(results: Path, out: Path) -> Path:
    data = load(results, "scaling.json")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
    if not data:
        for ax in axes:
            missing(ax, "no bench/results/scaling.json")
    else:
        writers = data.get("writers") or []
        if writers:
            ks = [r["writers"] for r in writers]
            axes[0].plot(ks, [r["write_events_per_s"] for r in writers], "o-", label="writers: customer_create, events/s", color="#4C72B0")
            axes[0].plot(ks, [r["relay_events_per_s"] for r in writers], "s--", label="one relay into the log, events/s", color="#55A868")
            ax2 = axes[0].twinx()
            ax2.plot(ks, [r["lag_p99_ms"] for r in writers], "^:", color="#C44E52", label="relay lag p99 (ms, right)")
            ax2.set_ylabel("ms", fontsize=8)
            ax2.set_ylim(bottom=0)
            ax2.legend(fontsize=7, loc="lower right")
            axes[0].set_xscale("log", base=2)
            axes[0].set_xticks(ks, [str(k) for k in ks])
            axes[0].set_ylim(bottom=0)
            axes[0].set_xlabel("concurrent writer processes")
            axes[0].legend(fontsize=7, loc="upper left")
        else:
            missing(axes[0], "no writer figures")
        axes[0].set_title("outbox writers + one relay", fontsize=9)
        appenders = data.get("appenders") or []
        if appenders:
            ks = [r["appenders"] for r in appenders]
            axes[1].plot(ks, [r["events_per_s"] for r in appenders], "o-", color="#4C72B0", label="log events/s")
            ax3 = axes[1].twinx()
            ax3.plot(ks, [r["append_p99_ms"] for r in appenders], "^:", color="#C44E52", label="append p99 (ms, right)")
            ax3.set_ylim(bottom=0)
            ax3.legend(fontsize=7, loc="lower right")
            axes[1].set_xscale("log", base=2)
            axes[1].set_xticks(ks, [str(k) for k in ks])
            axes[1].set_ylim(bottom=0)
            axes[1].set_xlabel("concurrent log_append processes")
            axes[1].legend(fontsize=7, loc="upper left")
        else:
            missing(axes[1], "no appender figures")
        axes[1].set_title(f"the serialised log append (batches of {dig(data, 'config', 'append_batch')})", fontsize=9)
        sagas = [r for r in data.get("sagas") or [] if "error" not in r]
        if sagas:
            ws = [r["workers"] for r in sagas]
            for mode in [*(dig(data, "config", "sagas_modes") or "").split(","), "floor"]:
                ys = [dig(r, mode, "sagas_per_s") for r in sagas]
                if any(y is not None for y in ys):
                    axes[2].plot(ws, ys, "o-", label=mode + (" (chains/s)" if mode == "floor" else ""), color=COLOURS.get(mode))
            axes[2].set_xticks(ws, [str(w) for w in ws])
            axes[2].set_ylim(bottom=0)
            axes[2].set_xlabel("Celery worker processes (solo pool, all queues each)")
            axes[2].legend(fontsize=7)
        else:
            missing(axes[2], "no saga figures")
        axes[2].set_title("saturated sagas/s per worker count", fontsize=9)
    loads = [dig(row, "machine", "loadavg_1m_after") for row in [*(data or {}).get("writers", []), *(data or {}).get("appenders", [])]]
    loads += [row.get("loadavg_1m") for row in (data or {}).get("sagas", [])]
    loads = [x for x in loads if x is not None]
    busy = f"; load average up to {max(loads):.1f} on {dig(data, 'machine', 'cpus')} cores during the run" if loads else ""
    fig.suptitle("Ceilings on this machine as the load grows (bench/scaling.py)\n" + source(results, "scaling.json", data) + busy, fontsize=9)
    return save(fig, out / "scaling.png")


def save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Fixed metadata, so redrawing the same results files gives the same bytes.
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path


PLOTS = (plot_sagas, plot_replay, plot_append, plot_query, plot_readyourwrites, plot_scaling)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results", help="where the results files are (default bench/results)")
    parser.add_argument("--out", type=Path, default=BASE_DIR / "docs" / "bench", help="where the PNGs go (default docs/bench)")
    args = parser.parse_args(argv)
    for plot in PLOTS:
        path = plot(args.results.resolve(), args.out.resolve())
        print(f"wrote {path.relative_to(BASE_DIR) if path.is_relative_to(BASE_DIR) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
