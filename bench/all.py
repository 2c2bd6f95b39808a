"""Every benchmark in one command, then the plots and the generated tables: ``make bench``.

Run from the repository root::

    .venv/bin/python bench/all.py            # full runs into bench/results/, plots into docs/bench/, tables into the docs
    .venv/bin/python bench/all.py --quick    # every script's --quick form into bench/results/quick/ (plumbing check);
                                             # plots into bench/results/quick/plots/, tables printed, no doc rewritten
    .venv/bin/python bench/all.py --only sagas,sagas-prefork   # some of them (names below)

The runs, in order (each a child process; one failing does not stop the others, but the exit
status says so):

=============== ======================================================================
append          bench/append.py
replay          bench/replay.py
query           bench/query.py
readyourwrites  bench/readyourwrites.py
sagas           bench/sagas.py                         (2 solo workers: results/sagas.json)
sagas-prefork   bench/sagas.py --pool prefork --concurrency 2   (the README's production layout)
scaling         bench/scaling.py                       (writers, log appenders, sagas per worker count)
=============== ======================================================================

Each script keeps its private PostgreSQL + Redis under ``$BENCH_SERVICES_DIR`` (default
``/tmp/bench-services``) plus its own suffix. ``bench/results/run.json`` (or ``quick/run.json``)
records each command, its exit status and how long it took.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
BASE_DIR = BENCH_DIR.parent


def runs(results: Path, quick: bool) -> list[tuple[str, list[str]]]:
    def out(name: str) -> list[str]:
        return ["--output", str((results / name).relative_to(BASE_DIR))]

    q = ["--quick"] if quick else []
    # --quick runs write beside the full results, never over them, and skip the profiles that
    # would overwrite bench/results/profile-*.txt.
    return [
        ("append", ["bench/append.py", *q, *out("append.json")]),
        ("replay", ["bench/replay.py", *q, *(["--profile", "none"] if quick else []), *out("replay.json")]),
        ("query", ["bench/query.py", *q, *(["--no-profile"] if quick else []), *out("query.json")]),
        ("readyourwrites", ["bench/readyourwrites.py", *q, *out("readyourwrites.json")]),
        ("sagas", ["bench/sagas.py", *q, *out("sagas.json")]),
        ("sagas-prefork", ["bench/sagas.py", *q, "--pool", "prefork", "--concurrency", "2", *out("sagas-prefork.json")]),
        ("scaling", ["bench/scaling.py", *q, *out("scaling.json")]),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every script's --quick form, into bench/results/quick/")
    parser.add_argument("--only", help="comma-separated names of the runs to do (default: all)")
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="do not draw the plots or rewrite the tables")
    args = parser.parse_args(argv)
    results = BENCH_DIR / "results" / ("quick" if args.quick else "")
    results = results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    todo = runs(results, args.quick)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",")}
        unknown = wanted - {name for name, _ in todo}
        if unknown:
            parser.error(f"--only: unknown {sorted(unknown)}; choose from {', '.join(name for name, _ in todo)}")
        todo = [(name, cmd) for name, cmd in todo if name in wanted]
    record = {"benchmark": "all", "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "quick": args.quick, "runs": []}
    started = time.perf_counter()
    for name, cmd in todo:
        print(f"[bench/all {time.strftime('%H:%M:%S')}] {name}: {' '.join(cmd)}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        code = subprocess.run([sys.executable, *cmd], cwd=BASE_DIR, check=False).returncode
        seconds = round(time.perf_counter() - t0, 1)
        record["runs"].append({"name": name, "command": " ".join(cmd), "exit": code, "seconds": seconds})
        print(f"[bench/all {time.strftime('%H:%M:%S')}] {name}: exit {code} after {seconds:.0f} s", file=sys.stderr, flush=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    run_file = results / "run.json"
    if args.only and run_file.exists():
        # A partial run keeps the other runs' records.
        previous = json.loads(run_file.read_text())
        names = {r["name"] for r in record["runs"]}
        record["runs"] = [r for r in previous.get("runs", []) if r["name"] not in names] + record["runs"]
    run_file.write_text(json.dumps(record, indent=2) + "\n")
    failed = [r["name"] for r in record["runs"] if r["exit"] != 0 and r["name"] in {n for n, _ in todo}]
    if args.plots:
        plots_out = results / "plots" if args.quick else BASE_DIR / "docs" / "bench"
        subprocess.run([sys.executable, "bench/plots.py", "--results", str(results), "--out", str(plots_out)], cwd=BASE_DIR, check=True)
        report = [sys.executable, "bench/report.py", "--results", str(results)] + (["--print"] if args.quick else [])
        subprocess.run(report, cwd=BASE_DIR, check=True, stdout=subprocess.DEVNULL if args.quick else None)
    print(f"[bench/all] {len(todo)} run(s) in {record['seconds'] / 60:.1f} min; failed: {', '.join(failed) or 'none'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
