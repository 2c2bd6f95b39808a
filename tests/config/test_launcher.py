"""``make run``'s launcher never leaves the system running behind a person's back, and its
console stays quiet.

The launcher (``python -m config.launcher``) is run for real, as a new user would run it: on
the embedded default in a fresh ``VAR_DIR``, with the broker, a worker and beat (the web server
and the other four workers are the same kind of child, so one worker is enough to show it).
SIGINT (Ctrl-C), SIGTERM and SIGHUP (the terminal closed) stop every process it started, in
order, and the launcher exits 0; a launcher killed with SIGKILL has its children follow it
(Linux's parent-death signal). Once running, the console shows no line per periodic sweep,
while the log file keeps every one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.launcher import BASE_DIR
from tests.conftest import eventually

pytestmark = pytest.mark.e2e


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def survivors(children: dict[int, str | None]) -> str:
    """What is still running among ``children``, for a failure's message."""
    found = []
    for pid, since in sorted(children.items()):
        if alive(pid, since):
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            found.append(f"{pid}: {command[:200]}")
    return "; ".join(found)


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def started_at(pid: int) -> str | None:
    """The process's start time (in clock ticks since boot): with the pid, it names one process
    even if the pid is reused later."""
    fields = _stat(pid)
    return fields[19] if fields else None


def alive(pid: int, since: str | None = None) -> bool:
    """Running (not a zombie), and the same process as the one that started at ``since``."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z" and (since is None or fields[19] == since)


def wait_gone(children: dict[int, str | None], *, timeout: float) -> None:
    try:
        eventually(lambda: not any(alive(pid, since) for pid, since in children.items()), timeout=timeout, interval=0.2, message="every child to be gone")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; still running: {survivors(children)}") from None


@pytest.fixture(scope="module")
def var_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("launcher-var")


class Launched:
    def __init__(self, var_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.endswith("DATABASE_URL") and k not in ("CELERY_BROKER_URL", "CACHE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")}
        env.update({"VAR_DIR": str(var_dir), "SWEEP_INTERVAL_SECONDS": "0.5", "PYTHONUNBUFFERED": "1"})
        self.console = var_dir / "console.txt"
        self.console.write_text("")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "config.launcher", "--no-web", "--queues", "eventlog"],
            cwd=BASE_DIR, env=env, stdout=self.console.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.log = var_dir / "log" / "worker-eventlog.log"
        eventually(lambda: "Running:" in self.console.read_text() or self.process.poll() is not None, timeout=180, interval=0.2, message="the launcher's banner")
        assert self.process.poll() is None, self.console.read_text()[-3000:]
        self.children = {pid: started_at(pid) for pid in descendants(self.process.pid)}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@pytest.fixture
def launched(var_dir: Path) -> Iterator[Launched]:
    running = Launched(var_dir)
    try:
        yield running
    finally:
        running.stop()
        for pid, since in {**{pid: started_at(pid) for pid in descendants(running.process.pid)}, **running.children}.items():
            if alive(pid, since):
                os.kill(pid, signal.SIGKILL)


def test_the_console_shows_no_line_per_sweep_while_the_log_keeps_them(launched: Launched) -> None:
    # The children: the broker, the worker (and its pool child) and beat.
    assert len(launched.children) >= 4, launched.children
    eventually(lambda: launched.log.read_text().count("Task eventlog.sweep[") >= 6, timeout=60, message="beat's sweeps to run in the worker")
    console = launched.console.read_text()
    after_banner = console.split("=" * 72)[-1]
    assert "Dashboard: http://127.0.0.1:8000/dashboard/" in console and "Log in as" in console
    assert "eventlog.sweep" not in after_banner and "Sending due task" not in after_banner, after_banner[-2000:]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stop_signal_stops_every_process_in_order(launched: Launched, signum: int) -> None:
    os.kill(launched.process.pid, signum)
    assert launched.process.wait(60) == 0
    console = launched.console.read_text()
    assert "== stopped; no process left running" in console, console[-2000:]
    wait_gone(launched.children, timeout=30)


def test_a_launcher_killed_with_sigkill_takes_its_children_with_it(launched: Launched) -> None:
    assert all(alive(pid, since) for pid, since in launched.children.items())
    os.kill(launched.process.pid, signal.SIGKILL)
    launched.process.wait(10)
    wait_gone(launched.children, timeout=60)
