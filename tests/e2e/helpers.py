"""What the end-to-end tests share: an API client on the real gunicorn, and the final checks."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from io import StringIO
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from tests.conftest import eventually

TERMINAL_SAGA = ("COMPLETED", "COMPENSATED", "FAILED")


class Api:
    def __init__(self, base_url: str) -> None:
        user = get_user_model().objects.create_user("saga-tester", password="x" * 16)
        self.token = Token.objects.create(user=user).key
        self.base_url = base_url

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.base_url + path, method=method, data=json.dumps(body).encode() if body is not None else None)
        request.add_header("Authorization", f"Token {self.token}")
        request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as error:
            return error.code, _json(error.read())

    def customer(self, limit: str) -> str:
        status, body = self.call("POST", "/api/customers/", {"name": "Ada", "credit_limit": limit})
        assert status == 201, body
        return str(body["id"])

    def order(self, customer_id: str, total: str, **headers: str) -> dict[str, Any]:
        status, body = self.call("POST", "/api/orders/", {"customer_id": customer_id, "total": total}, headers)
        assert status == 202, body
        return body  # type: ignore[no-any-return]

    def settled_order(self, order_id: str, *, states: tuple[str, ...] = ("APPROVED", "REJECTED", "CANCELLED"), timeout: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status, body = self.call("GET", f"/api/orders/{order_id}/")
            return body if status == 200 and body["state"] in states else None

        return eventually(probe, timeout=timeout, interval=0.2, message=f"order {order_id} to reach {states}")

    def settled_saga(self, saga_id: str, timeout: float = 60) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            status, body = self.call("GET", f"/api/sagas/{saga_id}/")
            return body if status == 200 and body["state"] in TERMINAL_SAGA else None

        return eventually(probe, timeout=timeout, interval=0.2, message=f"saga {saga_id} to settle")


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return {"unparsed": raw[:2000].decode(errors="replace")}


def assert_verify_passes() -> None:
    out = StringIO()
    # Projections catch up within the sweep; verify compares them with a replay at their position.
    call_command("relay_outbox", "--advance", stdout=StringIO())
    call_command("verify", stdout=out)
    assert "All 7 invariant checks passed." in out.getvalue(), out.getvalue()


def credit(api: Api, customer_id: str, *, reserved: str) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status, body = api.call("GET", f"/api/customers/{customer_id}/")
        return body if status == 200 and body["credit_reserved"] == reserved else None

    return eventually(probe, timeout=30, interval=0.2, message=f"customer {customer_id} to show {reserved} reserved")
