"""Queries go through the cache, and never serve an answer older than the projection."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core.cache import cache as django_cache
from django.db import connections, transaction
from django.test.utils import CaptureQueriesContext, override_settings

from config import fastcache
from eventlog.domain import MessageContext
from eventlog.relay import outbox_relay
from eventlog.subscriptions import subscriber_advance
from orders.services import order_approve, order_create
from readmodels import cache, selectors
from readmodels.projections import PROJECTIONS, subscriber_name
from readmodels.rebuild import projection_rebuild
from tests.conftest import eventually
from tests.readmodels.helpers import relay_and_project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
LOCMEM = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture(autouse=True, params=["redis", "locmem"])
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test runs on the project's Redis (config/fastcache.py's direct path) and on a
    cache that is not Redis (the same functions through Django's cache API)."""
    if request.param == "redis":
        assert fastcache._redis() is not None
        yield request.param
        return
    with override_settings(CACHES=LOCMEM):
        assert fastcache._redis() is None
        yield request.param


def pending_order() -> uuid.UUID:
    order = order_create(customer_id=uuid.uuid4(), total="12.00", mode="orchestration", context=MessageContext())
    relay_and_project()
    return order.id


def test_a_repeated_read_is_served_from_the_cache() -> None:
    order_id = pending_order()
    assert selectors.order_summary_get(order_id=order_id)["state"] == "PENDING"  # type: ignore[index]  # the order exists: its summary is there
    with CaptureQueriesContext(connections["readmodels"]) as queries:
        assert selectors.order_summary_get(order_id=order_id)["state"] == "PENDING"  # type: ignore[index]  # the order exists: its summary is there
    assert len(queries) == 0


def test_a_read_after_the_projection_applied_an_update_is_fresh() -> None:
    order_id = pending_order()
    assert selectors.order_summary_get(order_id=order_id)["version"] == 1  # type: ignore[index]  # the order exists: its summary is there
    listed = selectors.order_summary_list(customer_id=None, state="PENDING", offset=0, limit=10)
    assert listed[0] == 1
    order_approve(order_id=order_id, context=MessageContext())
    relay_and_project()
    row = selectors.order_summary_get(order_id=order_id)
    assert row is not None and (row["state"], row["version"]) == ("APPROVED", 2)
    assert selectors.order_summary_list(customer_id=None, state="PENDING", offset=0, limit=10)[0] == 0


def test_a_reader_that_loaded_before_the_update_cannot_cache_a_stale_answer() -> None:
    """The race: a reader reads the old row, the projection commits, then the reader stores."""
    order_id = pending_order()
    order_approve(order_id=order_id, context=MessageContext())

    def project_in_another_process_like_thread() -> None:
        try:
            relay_and_project()
        finally:
            connections.close_all()

    def slow_load(key: Any) -> dict[str, Any] | None:
        row = selectors._order_row(key)  # the old row, read before the projection commits
        worker = threading.Thread(target=project_in_another_process_like_thread)
        worker.start()
        worker.join()
        return row

    stale = cache.cached("order", order_id, "row", lambda: slow_load(order_id))
    assert stale is not None and stale["state"] == "PENDING"
    fresh = selectors.order_summary_get(order_id=order_id)
    assert fresh is not None and fresh["state"] == "APPROVED"


def test_the_same_race_with_the_read_fetched_ahead_by_the_throttle(backend: str) -> None:
    """The request's first round trip (the rate limit's counter) fetched the cached answer;
    the projection commits while the view loads: the next read is still fresh."""
    order_id = pending_order()
    order_approve(order_id=order_id, context=MessageContext())

    def project_meanwhile(key: Any) -> dict[str, Any] | None:
        row = selectors._order_row(key)
        worker = threading.Thread(target=lambda: (relay_and_project(), connections.close_all()))  # type: ignore[func-returns-value]  # the tuple only runs both calls in one lambda
        worker.start()
        worker.join()
        return row

    with cache.read_ahead("order", order_id, "row"):
        fastcache.window_hit(f"throttle:test:{uuid.uuid4()}", timeout=5)  # fetches ahead on Redis
        assert fastcache._read_ahead.get().fetched == (backend == "redis")  # type: ignore[union-attr]  # the read above set it
        first = cache.cached("order", order_id, "row", lambda: project_meanwhile(order_id))  # a miss
        assert first is not None and first["state"] == "PENDING"  # loaded before the commit
    fresh = selectors.order_summary_get(order_id=order_id)
    assert fresh is not None and fresh["state"] == "APPROVED"


def test_a_replay_swap_invalidates_every_cached_answer() -> None:
    order_id = pending_order()
    assert selectors.order_summary_get(order_id=order_id) is not None
    from readmodels.models import OrderSummary

    OrderSummary.objects.using("readmodels").filter(id=order_id).update(total="99.00")  # damage
    django_cache.clear()
    assert str(selectors.order_summary_get(order_id=order_id)["total"]) == "99.00"  # type: ignore[index]  # the order exists: its summary is there
    projection_rebuild("order_summary")
    assert str(selectors.order_summary_get(order_id=order_id)["total"]) == "12.00"  # type: ignore[index]  # the order exists: its summary is there


def test_a_lost_generation_key_starts_a_fresh_namespace() -> None:
    order_id = pending_order()
    selectors.order_summary_get(order_id=order_id)
    order_approve(order_id=order_id, context=MessageContext())
    relay_and_project()
    django_cache.delete(f"{cache.PREFIX}gen:order:{order_id}")  # evicted
    assert selectors.order_summary_get(order_id=order_id)["state"] == "APPROVED"  # type: ignore[index]  # the order exists: its summary is there


def redis_commands() -> int:
    """Commands the cache's Redis has run so far (every client, every command)."""
    client = fastcache._redis().client  # type: ignore[union-attr]  # this test runs on the Redis cache
    return sum(int(stats["calls"]) for stats in client.info("commandstats").values())


def test_a_cached_read_is_one_redis_command_and_no_query(backend: str) -> None:
    if backend != "redis":
        pytest.skip("counts Redis commands")
    order_id = pending_order()
    selectors.order_summary_get(order_id=order_id)  # miss: loads and stores
    counted = []
    for _ in range(5):  # other clients (the broker's wake-ups) only add: the least is ours
        before = redis_commands()
        with CaptureQueriesContext(connections["readmodels"]) as queries:
            row = selectors.order_summary_get(order_id=order_id)
        counted.append(redis_commands() - before)
        assert row is not None and row["id"] == order_id and len(queries) == 0
    assert min(counted) == 1 + 1  # our MGET, and the INFO that counted it


def test_a_change_never_creates_a_generation(backend: str) -> None:
    order_id = uuid.uuid4()
    with transaction.atomic(using="readmodels"):
        cache.invalidate_at_commit("order", [order_id])
    assert django_cache.get(f"{cache.PREFIX}gen:order:{order_id}") is None


def test_an_answer_stored_under_an_older_generation_is_not_served() -> None:
    order_id = pending_order()
    selectors.order_summary_get(order_id=order_id)
    with transaction.atomic(using="readmodels"):
        cache.invalidate_at_commit("order", [order_id])  # as a projection does, before it commits
        with CaptureQueriesContext(connections["readmodels"]) as queries:
            assert selectors.order_summary_get(order_id=order_id) is not None
        assert len(queries) == 1  # marked as changing: read from the table
    with CaptureQueriesContext(connections["readmodels"]) as queries:
        assert selectors.order_summary_get(order_id=order_id) is not None
    assert len(queries) == 1  # a miss: read from the table, stored under the new generation
    with CaptureQueriesContext(connections["readmodels"]) as queries:
        assert selectors.order_summary_get(order_id=order_id) is not None
    assert len(queries) == 0


def test_a_mark_left_by_a_rolled_back_transaction_expires_into_a_fresh_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    order_id = pending_order()
    selectors.order_summary_get(order_id=order_id)
    monkeypatch.setattr(cache, "CHANGING_TTL_SECONDS", 0.2)
    with pytest.raises(RuntimeError), transaction.atomic(using="readmodels"):
        cache.invalidate_at_commit("order", [order_id])
        raise RuntimeError("rolled back")
    with CaptureQueriesContext(connections["readmodels"]) as queries:
        selectors.order_summary_get(order_id=order_id)
    assert len(queries) == 1  # still marked: the table
    eventually(lambda: django_cache.get(f"{cache.PREFIX}gen:order:{order_id}") is None, timeout=5, message="the mark to expire")
    selectors.order_summary_get(order_id=order_id)  # a fresh namespace, then cached again
    with CaptureQueriesContext(connections["readmodels"]) as queries:
        selectors.order_summary_get(order_id=order_id)
    assert len(queries) == 0


def test_an_unreachable_cache_reads_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import free_port

    order_id = pending_order()
    monkeypatch.setattr(cache, "_unavailable_until", 0.0)  # restored after the test
    dead = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}
    with override_settings(CACHES=dead):
        row = selectors.order_summary_get(order_id=order_id)
        assert row is not None and row["state"] == "PENDING"
        assert cache._unavailable_until > 0  # the next reads go straight to the tables for a while
        assert selectors.order_summary_get(order_id=order_id) is not None


@contextmanager
def cache_refusing(*, at_once: bool = True) -> Iterator[Callable[[], None]]:
    """The cache's Redis refuses every command of the cache's user (a real ``ACL SETUSER
    default -@all``, issued through a second user) until the block ends: from the start, or
    from when the yielded ``refuse`` is called (a test hands it to ``on_commit`` to fail the
    projection's post-commit step, which comes right after). Readers get the cache back after."""
    import redis

    client = fastcache._redis().client  # type: ignore[union-attr]  # this test runs on the Redis cache
    pool = client.connection_pool
    client.execute_command("ACL", "SETUSER", "test-admin", "on", ">admin", "~*", "&*", "+@all")
    admin = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **{**pool.connection_kwargs, "username": "test-admin", "password": "admin"}))

    def refuse() -> None:
        admin.execute_command("ACL", "SETUSER", "default", "-@all")

    if at_once:
        refuse()
    try:
        yield refuse
    finally:
        admin.execute_command("ACL", "SETUSER", "default", "+@all")
        client.execute_command("ACL", "DELUSER", "test-admin")
        admin.close()


def approved_but_cached_as_pending() -> uuid.UUID:
    order_id = pending_order()
    assert selectors.order_summary_get(order_id=order_id)["state"] == "PENDING"  # type: ignore[index]  # the order exists: its summary is there
    order_approve(order_id=order_id, context=MessageContext())
    outbox_relay("orders")
    return order_id


def test_a_bump_that_fails_after_the_projection_committed_never_leaves_the_old_answer_servable(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if backend != "redis":
        pytest.skip("makes the real Redis refuse")
    order_id = approved_but_cached_as_pending()
    with cache_refusing(at_once=False) as refuse, transaction.atomic(using="readmodels"):
        transaction.on_commit(refuse, using="readmodels")  # runs before the projection's own callbacks
        subscriber_advance(subscriber_name(PROJECTIONS["order_summary"]))  # commits, then cannot bump
    # Read as another process would, one that never saw the error (this one stops using the
    # cache for a while when it sees one), with the cache reachable again.
    monkeypatch.setattr(cache, "_unavailable_until", 0.0)
    for _ in range(2):
        row = selectors.order_summary_get(order_id=order_id)
        assert row is not None and row["state"] == "APPROVED"


def test_a_projection_that_cannot_reach_the_cache_before_it_commits_does_not_commit(backend: str) -> None:
    if backend != "redis":
        pytest.skip("makes the real Redis refuse")
    order_id = approved_but_cached_as_pending()
    name = subscriber_name(PROJECTIONS["order_summary"])
    with cache_refusing(), pytest.raises(cache.CacheUnavailable):
        subscriber_advance(name)
    assert selectors.order_summary_get(order_id=order_id)["state"] == "PENDING"  # type: ignore[index]  # the order exists: its summary is there
    subscriber_advance(name)  # the retry (the sweep's) once the cache answers
    assert selectors.order_summary_get(order_id=order_id)["state"] == "APPROVED"  # type: ignore[index]  # the order exists: its summary is there
