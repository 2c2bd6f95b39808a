"""The benchmark docs and plots come from the results files, and stay in step with them.

``bench/report.py --check`` fails when a generated table in README.md, docs/modes.md or
docs/scaling.md differs from what bench/results/ says (someone reran a bench, or edited a
figure by hand, without ``make bench-report``). The plots are redrawn from the same files
into a temporary directory, and a section is rendered from a results file made for the test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=BASE_DIR, capture_output=True, text=True, timeout=240, check=False)


def test_the_generated_tables_match_the_results_files() -> None:
    done = run("bench/report.py", "--check")
    assert done.returncode == 0, f"out of date (run make bench-report):\n{done.stdout}{done.stderr}"
    assert "README.md: 1 section(s)" in done.stdout
    assert "docs/modes.md: 3 section(s)" in done.stdout
    assert "docs/scaling.md: 4 section(s)" in done.stdout


def test_every_plot_is_drawn_from_the_results_files(tmp_path: Path) -> None:
    done = run("bench/plots.py", "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr
    for name in ("sagas", "replay", "append", "query", "readyourwrites", "scaling"):
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_a_section_shows_the_figures_of_its_file_and_names_it(tmp_path: Path) -> None:
    scaling = {"timestamp": "2030-01-02T03:04:05+00:00", "command": "bench/scaling.py --writers 1,3", "machine": {"cpus": 2},
               "config": {"duration": 10.0, "append_batch": 100, "sagas_modes": "orchestration", "quick": False},
               "writers": [{"writers": 3, "write_events_per_s": 4321.0, "write_p50_ms": 1.5, "write_p99_ms": 9.0, "relay_events_per_s": 4300.0,
                            "relay": {"mean_batch": 12.5, "drain_seconds": 0.1}, "lag_p50_ms": 7.0, "lag_p99_ms": 30.0, "all_relayed": True,
                            "machine": {"busy_cores": 1.9}}],
               "appenders": [], "sagas": []}
    (tmp_path / "scaling.json").write_text(json.dumps(scaling))
    done = run("bench/report.py", "--results", str(tmp_path), "--print")
    assert done.returncode == 0, done.stderr
    section = done.stdout.split("<!-- bench-report:scaling-writers -->")[1].split("<!-- /bench-report:scaling-writers -->")[0]
    assert "| 3 | 4,321 | 1.50 | 9.0 | 4,300 | 12.5 | 0.10 | 7 | 30 | yes | 1.90 |" in section
    assert "scaling.json` (2030-01-02 03:04 UTC, `.venv/bin/python bench/scaling.py --writers 1,3`)" in section
    # A file that does not exist is said to be missing, with the command that writes it.
    faults = done.stdout.split("<!-- bench-report:modes-faults -->")[1]
    assert "faults.json" in faults.split("<!-- /bench-report")[0]
