"""The one exception handler knows no context: each domain error says whether it is a conflict."""

from __future__ import annotations

from typing import ClassVar

from django.db import InterfaceError, OperationalError

from config.api import exception_handler
from eventlog.domain import ConcurrencyError, DomainError
from eventlog.errors import Conflict, NotFound, NotImplementedYet


class Refused(DomainError):
    pass


class Locked(DomainError):
    conflict: ClassVar[bool] = True


def answer(exc: Exception) -> tuple[int, dict[str, object]]:
    response = exception_handler(exc, {})
    assert response is not None
    return response.status_code, response.data


def test_a_domain_error_is_400_unless_it_declares_a_conflict() -> None:
    assert answer(Refused("amount must be positive")) == (400, {"message": "amount must be positive", "extra": {}})
    assert answer(Locked("order is PENDING; cannot cancel")) == (409, {"message": "order is PENDING; cannot cancel", "extra": {}})


def test_the_order_state_error_declares_itself_a_conflict() -> None:
    from orders.domain import InvalidOrderState

    assert InvalidOrderState.conflict is True and DomainError.conflict is False


def test_a_lost_concurrency_race_is_409() -> None:
    assert answer(ConcurrencyError("Order x was changed by another writer"))[0] == 409


def test_application_errors_carry_their_status_and_extra() -> None:
    assert answer(NotFound("Order not found.", {"order_id": "x"})) == (404, {"message": "Order not found.", "extra": {"order_id": "x"}})
    assert answer(Conflict("locked"))[0] == 409
    assert answer(NotImplementedYet("later"))[0] == 501


def test_a_database_unreachable_is_503_with_retry_after_not_a_500() -> None:
    """Found by the fault run (tests/faults): during a context database outage the API answered
    500 with Django's HTML page. The outage is transient: 503, the error shape, Retry-After."""
    for exc in (OperationalError('database "saga_sagas" is not currently accepting connections'), InterfaceError("connection already closed")):
        response = exception_handler(exc, {})
        assert response is not None
        assert response.status_code == 503
        assert set(response.data) == {"message", "extra"} and response.data["extra"] == {"retry_after_seconds": 2}
        assert response["Retry-After"] == "2"
