"""The gap problem, on PostgreSQL: a reader following positions never skips a late commit.

Writers append concurrently, one of them holding its transaction open after taking positions;
a reader follows ``position > last_seen`` the whole time. With appends serialised the reader
sees every event exactly once; the control test shows the same reader skipping events when
the serialisation is switched off, so the main test can fail.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
from django.db import connections, transaction

from eventlog import relay
from eventlog.domain import RecordedEvent
from eventlog.selectors import log_read
from tests.conftest import requires_postgres

pytestmark = [requires_postgres, pytest.mark.django_db(transaction=True, databases="__all__")]


def new_events(count: int) -> list[RecordedEvent]:
    now = dt.datetime.now(dt.UTC)
    return [
        RecordedEvent(
            event_id=uuid.uuid4(), stream_id=uuid.uuid4(), stream_type="Probe", version=1, type="Probed",
            data={}, occurred_at=now, correlation_id=uuid.uuid4(), causation_id=None, saga_id=None,
        )
        for _ in range(count)
    ]


def run_race(*, writers: int = 4, batches: int = 60, slow_holds: int = 6) -> tuple[list[uuid.UUID], list[uuid.UUID]]:
    written: list[uuid.UUID] = []
    seen: list[uuid.UUID] = []
    lock = threading.Lock()
    done = threading.Event()
    errors: list[BaseException] = []

    def fast_writer() -> None:
        try:
            for i in range(batches):
                events = new_events(1 + i % 3)
                relay.log_append(events)
                with lock:
                    written.extend(e.event_id for e in events)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    def slow_writer() -> None:
        """Takes positions, then keeps its transaction open while the others go on."""
        try:
            for _ in range(slow_holds):
                events = new_events(2)
                with transaction.atomic(using="eventlog"):
                    relay.log_append(events)
                    time.sleep(0.15)
                with lock:
                    written.extend(e.event_id for e in events)
                time.sleep(0.02)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    def reader() -> None:
        try:
            position = 0
            idle_after_done = 0
            while idle_after_done < 3:
                events = log_read(after=position, limit=50)
                for event in events:
                    assert event.position is not None and event.position > position
                    seen.append(event.event_id)
                    position = event.position
                if not events:
                    if done.is_set():
                        idle_after_done += 1
                    time.sleep(0.005)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=fast_writer) for _ in range(writers)] + [threading.Thread(target=slow_writer)]
    reading = threading.Thread(target=reader)
    reading.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reading.join(60)
    assert errors == []
    return written, seen


def test_a_reader_following_positions_sees_every_event_exactly_once() -> None:
    written, seen = run_race()
    assert len(written) == 492  # 4 writers x 60 batches of 1-3 events, plus 6 slow pairs
    assert len(seen) == len(set(seen)), "an event was read twice"
    assert set(seen) == set(written), f"{len(set(written) - set(seen))} events were skipped"


def test_control_without_serialised_appends_the_reader_skips_late_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "_serialise_appends", lambda: None)
    written, seen = run_race()
    assert set(seen) < set(written), "expected the unserialised log to show the gap problem"
