"""Faults of the infrastructure, injected for real while sagas are in flight: the broker
restarted (its queued messages lost in the PostgreSQL + Redis tier, where Redis keeps nothing)
and the database briefly unreachable (PostgreSQL restarted, every connection broken).

The database is the source of truth and the broker only wakes things up, so afterwards every
saga finishes, credit is exact and ``manage.py verify`` passes: the sweep re-sends what the
lost messages carried, with the same command ids, and participants answer from their records.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from customers.models import Customer as CustomerRow
from tests.conftest import requires_postgres, restart_broker, restart_postgres
from tests.e2e.helpers import Api, assert_verify_passes

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases="__all__")]


def settle_all(api: Api, placed: list[dict[str, str]], *, customer: str, limit: Decimal, total: Decimal) -> None:
    """Every saga ends; as many orders as fit the limit are APPROVED, and exactly their credit is held."""
    sagas = [api.settled_saga(p["saga_id"], timeout=120) for p in placed]
    assert {s["state"] for s in sagas} <= {"COMPLETED", "COMPENSATED"}, [s["state"] for s in sagas]
    states = [api.settled_order(p["id"], timeout=60)["state"] for p in placed]
    approved = states.count("APPROVED")
    assert approved + states.count("REJECTED") == len(placed)
    assert approved == min(len(placed), int(limit // total))
    assert CustomerRow.objects.using("customers").get(id=customer).credit_reserved == total * approved
    assert_verify_passes()


def test_the_broker_restarted_mid_flight_loses_no_saga(api: Api) -> None:
    customer = api.customer("100.00")
    placed = [api.order(customer, "7.00") for _ in range(10)]  # commands, replies and wake-ups queued
    restart_broker(down_for=1.0)
    placed += [api.order(customer, "7.00") for _ in range(6)]  # right after: sends may fail, the sweep covers
    settle_all(api, placed, customer=customer, limit=Decimal("100.00"), total=Decimal("7.00"))


@requires_postgres
def test_the_database_briefly_unreachable_loses_nothing(api: Api) -> None:
    customer = api.customer("100.00")
    placed = [api.order(customer, "7.00") for _ in range(10)]
    restart_postgres()  # steps in flight fail: error replies, failed replies, failed relays
    placed += [api.order(customer, "7.00") for _ in range(6)]
    settle_all(api, placed, customer=customer, limit=Decimal("100.00"), total=Decimal("7.00"))
