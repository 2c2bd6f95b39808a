"""``purge_broker`` (tests/conftest.py), run before each end-to-end system starts and after it
is killed, leaves nothing behind on the session's real broker: no queued message, and no
message a killed worker had taken without acknowledging it, which kombu would otherwise put
back on its queue once the visibility timeout has passed, in the middle of a later test."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from config.celery_app import app as celery_app
from config.launcher import BASE_DIR
from tests.conftest import purge_broker

#: A consumer that takes one message as a worker does (acknowledged late), says so, and hangs
#: until it is killed: it never acknowledges it, nor gives it back as a clean close would.
TAKE_AND_HANG = """
import sys, time
from config.celery_app import app
connection = app.connection_for_write()
message = connection.default_channel.basic_get("eventlog", no_ack=False)
print("taken" if message is not None else "nothing", flush=True)
time.sleep(120)
"""


def unacked() -> int:
    with celery_app.connection_for_write() as connection:
        channel: Any = connection.default_channel  # kombu's Redis channel: its keys are not in the stubs
        return int(channel.client.hlen(channel.unacked_key))


def test_a_message_a_killed_consumer_had_taken_is_forgotten_with_the_queues(broker_url: str) -> None:
    purge_broker()
    celery_app.send_task("eventlog.sweep", queue="eventlog")
    celery_app.send_task("eventlog.sweep", queue="eventlog")
    env = {**os.environ, "CELERY_BROKER_URL": broker_url, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    consumer = subprocess.Popen([sys.executable, "-c", TAKE_AND_HANG], cwd=BASE_DIR, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert consumer.stdout is not None and consumer.stdout.readline().strip() == "taken"
    finally:
        consumer.kill()
        consumer.wait(10)
    assert unacked() == 1  # what a killed worker leaves: kombu would restore it after 900 s
    with celery_app.connection_for_write() as connection:
        redis_channel: Any = connection.default_channel
        assert redis_channel.client.llen("eventlog") == 1

    purge_broker()

    assert unacked() == 0
    with celery_app.connection_for_write() as connection:
        channel: Any = connection.default_channel  # kombu's Redis channel: its keys are not in the stubs
        assert channel.client.llen("eventlog") == 0 and channel.client.zcard(channel.unacked_index_key) == 0
