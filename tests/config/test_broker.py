"""config/broker.py: kombu's Redis transport with one client per connection pool. Real broker
(the session's: embedded redis-server, or the tier's Redis)."""

from __future__ import annotations

import uuid

from kombu import Connection

from config.broker import Channel, Transport
from config.celery_app import app


def test_every_redis_url_form_uses_the_transport() -> None:
    assert isinstance(Connection(app.conf.broker_url).transport, Transport)
    for url in ("redis://127.0.0.1:6379/0", "redis+socket:///tmp/redis.sock"):
        assert isinstance(Connection(url).transport, Transport), url


def test_a_channel_reuses_one_client_and_messages_still_go_through() -> None:
    queue = f"test-broker-{uuid.uuid4().hex[:8]}"
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, Channel)
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        with connection.SimpleQueue(queue) as simple:
            for n in range(20):
                simple.put({"n": n})
            received = []
            for _ in range(20):
                message = simple.get(timeout=5)
                received.append(message.payload["n"])
                message.ack()
            assert received == list(range(20))
            simple.clear()
        with channel.conn_or_acquire() as third:
            assert third is first  # the same pool: the same client, after every publish and ack
        channel._pool = None  # type: ignore[attr-defined]  # what a reconnect does: a new pool...
        with channel.conn_or_acquire() as fourth:
            assert fourth is not first and fourth.connection_pool is channel.pool  # ...gets a client of its own
