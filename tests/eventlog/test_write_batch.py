"""``eventlog.sql.WriteBatch``: the writes of a transaction held back and sent together at its
end. Real databases: on PostgreSQL one statement for all of them, elsewhere one per table and
kind; every value stored as the ORM stores it; a row inserted and changed in one batch is
inserted with its final values; two updates of one row are one UPDATE; nothing of a rolled-back
transaction is written."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import IntegrityError, connections, transaction
from django.utils import timezone

from eventlog.sql import WriteBatch
from sagas.models import SagaInstance, SagaLogEntry, SagaStep

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")
ALIAS = "sagas"


@contextmanager
def statements() -> Iterator[list[str]]:
    sent: list[str] = []

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent.append(sql)
        return execute(sql, params, many, context)

    with connections[ALIAS].execute_wrapper(wrapper):
        yield sent


def new_saga() -> SagaInstance:
    now = timezone.now()
    saga_id = uuid.uuid4()
    return SagaInstance(
        id=saga_id, type="create_order", definition_version=1, state="RUNNING", subject_id=uuid.uuid4(), data={"total": "10.00", "note": "Zoë ☃"},
        correlation_id=saga_id, version=1, last_error="", created_at=now, updated_at=now,
    )


def new_step(saga: SagaInstance, index: int) -> SagaStep:
    now = timezone.now()
    return SagaStep(
        saga=saga, index=index, name=f"step{index}", kind="forward", command="orders.order_create", command_id=uuid.uuid4(),
        payload={"order_id": str(saga.subject_id), "n": index}, status="WAITING", attempts=1, due_at=now + dt.timedelta(seconds=5), started_at=now,
    )


def test_inserts_and_updates_are_stored_as_the_orm_stores_them() -> None:
    saga = new_saga()
    with transaction.atomic(using=ALIAS), statements() as sent:
        batch = WriteBatch(ALIAS)
        batch.insert(saga)
        step = new_step(saga, 0)
        batch.insert(step)
        batch.insert(SagaLogEntry(saga=saga, at=timezone.now(), step="step0", kind="forward", event="sent", detail="attempt 1"))
        step.status = "SUCCEEDED"  # changed after it was queued: inserted with its final value
        batch.update(step, ["status"])
        assert not sent, "nothing is sent before flush"
        batch.flush()
    expected = 1 if connections[ALIAS].vendor == "postgresql" else 3
    assert len(sent) == expected, sent
    stored = SagaInstance.objects.using(ALIAS).get(id=saga.id)
    assert (stored.data, stored.state, stored.created_at, stored.subject_id) == (saga.data, "RUNNING", saga.created_at, saga.subject_id)
    (row,) = SagaStep.objects.using(ALIAS).filter(saga_id=saga.id)
    assert (row.status, row.payload, row.command_id, row.due_at) == ("SUCCEEDED", step.payload, step.command_id, step.due_at)
    assert SagaLogEntry.objects.using(ALIAS).filter(saga_id=saga.id).values_list("event", flat=True).get() == "sent"


def test_two_updates_of_one_row_are_one_update_with_both_fields() -> None:
    saga = new_saga()
    saga.save(using=ALIAS)
    steps = [new_step(saga, 0), new_step(saga, 1)]
    for step in steps:
        step.save(using=ALIAS)
    with transaction.atomic(using=ALIAS), statements() as sent:
        batch = WriteBatch(ALIAS)
        saga.state = "COMPENSATING"
        batch.update(saga, ["state"])
        saga.last_error = "step1 refused"
        batch.update(saga, ["last_error"])
        steps[1].status, steps[0].status = "REFUSED", "COMPENSATED"
        batch.update(steps[1], ["status"])
        batch.update(steps[0], ["status"])
        batch.flush()
        batch.flush()  # nothing left: sends nothing
    if connections[ALIAS].vendor == "postgresql":
        assert len(sent) == 1 and sent[0].count("UPDATE") == 3, sent
    else:
        assert len(sent) == 3 and all(sql.startswith("UPDATE") for sql in sent), sent
    stored = SagaInstance.objects.using(ALIAS).get(id=saga.id)
    assert (stored.state, stored.last_error) == ("COMPENSATING", "step1 refused")
    assert dict(SagaStep.objects.using(ALIAS).filter(saga=saga).values_list("index", "status")) == {0: "COMPENSATED", 1: "REFUSED"}


def test_a_rolled_back_transaction_writes_nothing_and_a_constraint_still_holds() -> None:
    saga = new_saga()
    with pytest.raises(RuntimeError), transaction.atomic(using=ALIAS):
        batch = WriteBatch(ALIAS)
        batch.insert(saga)
        batch.flush()
        raise RuntimeError("the caller gives up")
    assert not SagaInstance.objects.using(ALIAS).filter(id=saga.id).exists()
    saga.save(using=ALIAS)
    twin = new_saga()
    twin.id = saga.id  # the same primary key: the batch's statement fails whole
    with pytest.raises(IntegrityError), transaction.atomic(using=ALIAS):
        batch = WriteBatch(ALIAS)
        batch.insert(new_step(saga, 0))
        batch.insert(twin)
        batch.flush()
    assert not SagaStep.objects.using(ALIAS).filter(saga_id=saga.id).exists()
