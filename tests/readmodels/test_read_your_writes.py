"""``?min_version=`` waits cannot stall the sync web tier: beyond ``READ_YOUR_WRITES_MAX_WAITERS``
waiting reads on a machine, a read answers at once with what there is, and its header says so.
Run against real gunicorn workers; how much it protects the other requests' latency is measured
in bench/readyourwrites.py, not here."""

from __future__ import annotations

import fcntl
import json
import os
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connections
from rest_framework.authtoken.models import Token

from config.launcher import Stack
from eventlog.domain import MessageContext
from orders.services import order_create
from tests.conftest import _answers, eventually, free_port, worker_env
from tests.readmodels.helpers import relay_and_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
WAIT_SECONDS = 8  # long enough that the second read surely arrives while the first still waits


@pytest.fixture
def web(broker_url: str, tmp_path: Path) -> Iterator[str]:
    """gunicorn with two sync workers, as ``make run`` starts it, on the test databases."""
    env = worker_env(broker_url)
    env.update({"DJANGO_ALLOWED_HOSTS": "127.0.0.1", "READ_YOUR_WRITES_WAIT_SECONDS": str(WAIT_SECONDS), "READ_YOUR_WRITES_MAX_WAITERS": "1"})
    stack = Stack(env=env, run_dir=tmp_path / "run", log_dir=tmp_path / "log", echo=False)
    port = free_port()
    try:
        stack.start_web(host="127.0.0.1", port=port, workers=2)
        stack.wait_ready(timeout=60)
        base = f"http://127.0.0.1:{port}"
        eventually(lambda: _answers(base + "/healthz"), message="gunicorn to answer")
        yield base
    finally:
        stack.stop()
        connections.close_all()


def get(url: str, token: str) -> tuple[int, dict[str, Any], str | None]:
    request = urllib.request.Request(url, headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.status, json.loads(response.read()), response.headers.get("X-Read-Your-Writes")


def slot_taken() -> bool:
    """Whether some process holds the machine's one wait slot (the file lock the reads take)."""
    path = Path(settings.RUN_DIR) / "read-your-writes" / "slot-0"
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # releases it if we took it
    return False


def test_beyond_the_waiters_limit_a_read_answers_at_once_and_says_it_did_not_wait(web: str) -> None:
    token = str(Token.objects.create(user=get_user_model().objects.create_user("reader")).key)
    order = order_create(customer_id=uuid.uuid4(), total="5.00", mode="orchestration", context=MessageContext())
    relay_and_project()
    never = f"{web}/api/orders/{order.id}/?min_version=999999"
    waiting: dict[str, Any] = {}
    first = threading.Thread(target=lambda: waiting.update(answer=get(never, token)))
    first.start()
    try:
        eventually(slot_taken, timeout=20, message="the first read to wait")
        # The other worker is free: a second wait for a version that never comes does not wait...
        status, body, wait = get(never, token)
        assert (status, body["version"], wait) == (200, 1, "not-waited")
        assert slot_taken()  # ...it was answered while the first one still waits
        # ...a plain read is served as ever, and a satisfiable min_version needs no wait.
        assert get(f"{web}/api/orders/{order.id}/", token)[::2] == (200, None)
        assert get(f"{web}/api/orders/{order.id}/?min_version=1", token)[2] == "reached"
    finally:
        first.join()
    status, body, wait = waiting["answer"]
    assert (status, body["version"], wait) == (200, 1, "timed-out")  # waited, then answered what there is
