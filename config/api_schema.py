"""The OpenAPI schema of /api/: what every operation answers besides its own answers, the
request bodies that refuse unknown fields, the modes this deployment runs, and the links a
client (or schemathesis) follows from a write to what it wrote.

drf-spectacular builds the schema from the views; this module holds what is common to all of
them, so each view declares only its own answers and errors (``eventlog.http.error_responses``).
"""

from __future__ import annotations

from typing import Any

from django.db import DatabaseError
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter

from eventlog.http import StrictSerializer, error_responses

#: What any operation may answer: the permission class, the throttles and the CSRF check of a
#: session answer these before the view runs.
COMMON = error_responses(
    e401="Not authenticated: no credentials, or a token that is not valid.",
    e403="Refused: a session's write without its CSRF token.",
    e429="Throttled (API_THROTTLE_ANON, API_THROTTLE_USER); Retry-After says when to try again.",
)
#: What an operation that takes a body may answer before its view reads it.
WITH_BODY = error_responses(
    e400="Invalid input: malformed JSON or a body that is not an object; details in extra.",
    e413="A body over API_MAX_BODY_BYTES.",
    e415="A Content-Type other than application/json.",
)
RETRY_AFTER_429 = OpenApiParameter("Retry-After", int, OpenApiParameter.HEADER, response=[429], description="Seconds until the window ends.")


class ApiSchema(AutoSchema):
    def get_response_serializers(self) -> Any:
        declared = super().get_response_serializers()
        # Every view here declares its answers by status code (extend_schema(responses={...})).
        responses: dict[Any, Any] = dict(declared) if isinstance(declared, dict) else {200: declared}
        common = {**COMMON, **(WITH_BODY if self.method in ("POST", "PUT", "PATCH") else {})}
        for code, response in common.items():
            responses.setdefault(code, response)
        return responses

    def get_override_parameters(self) -> list[Any]:
        return [*super().get_override_parameters(), RETRY_AFTER_429]

    def _map_basic_serializer(self, serializer: Any, direction: str) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictSerializer):
            schema["additionalProperties"] = False  # it refuses unknown fields with 400
        return schema


class ModeFieldExtension(OpenApiSerializerFieldExtension):
    """The modes of ``POST /api/orders/`` that this deployment runs: ``2pc`` only where the
    orders and customers databases can prepare transactions; elsewhere it is a documented 400."""

    target_class = "orders.apis.ModeField"

    def map_serializer_field(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        from orders.domain import OrderMode
        from sagas.coordinator import two_phase_problems

        try:
            two_phase = not two_phase_problems()
        except DatabaseError:  # no database to ask (``check --deploy`` at build time): list it, as where it runs
            two_phase = True
        modes = [mode.value for mode in OrderMode if mode != OrderMode.TWO_PHASE_COMMIT or two_phase]
        return {
            "type": "string",
            "enum": modes,
            "default": OrderMode.ORCHESTRATION.value,
            "description": "orchestration (default), choreography, or 2pc, which this schema lists only where the orders and customers databases can prepare transactions (PostgreSQL with max_prepared_transactions above 0), or where the schema is generated without a database to ask; elsewhere 2pc is a 400.",
        }


def _follow(operation_id: str, description: str, **parameters: str) -> dict[str, Any]:
    return {"operationId": operation_id, "parameters": parameters, "description": description}


#: Where each write's answer leads, as OpenAPI links (drf-spectacular has no declaration for
#: them, so this postprocessing hook adds them by operationId). The read links say what the
#: ``Location`` header says: the resource at the version that shows the write.
LINKS: dict[tuple[str, str], dict[str, dict[str, Any]]] = {
    ("customers_create", "201"): {
        "ReadCustomer": _follow("customers_retrieve", "The Location: the customer once the read model has it.", customer_id="$response.body#/id", min_version="$response.body#/version"),
        "ListCustomerOrders": _follow("orders_list", "The customer's orders.", customer_id="$response.body#/id"),
    },
    **{
        ("orders_create", code): {
            "ReadOrder": _follow("orders_retrieve", "The Location: the order at the version this answer names.", order_id="$response.body#/id", min_version="$response.body#/version"),
            "CancelOrder": _follow("orders_cancel", "Cancel it (409 until it is APPROVED).", order_id="$response.body#/id"),
            "ReadSaga": _follow("sagas_retrieve", "The saga, flow or 2PC transaction that carries it.", saga_id="$response.body#/saga_id"),
        }
        for code in ("201", "202")
    },
    ("orders_cancel", "202"): {
        "ReadOrder": _follow("orders_retrieve", "The Location: the order once the cancel shows.", order_id="$response.body#/id", min_version="$response.body#/version"),
        "ReadSaga": _follow("sagas_retrieve", "The cancel's saga.", saga_id="$response.body#/saga_id"),
    },
}


def add_links(result: dict[str, Any], generator: Any, request: Any, public: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: put ``LINKS`` on the responses they start from."""
    for path in result.get("paths", {}).values():
        for operation in path.values():
            if not isinstance(operation, dict):
                continue
            for code, response in operation.get("responses", {}).items():
                links = LINKS.get((operation.get("operationId", ""), str(code)))
                if links:
                    response["links"] = links
    return result
