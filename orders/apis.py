"""HTTP commands of the orders context: placing an order (in any mode) and cancelling one.

Both are this context's use cases, so they have one entry point here, whatever the mode: the
mode only decides who carries the order through (``orders.workflows``). Queries live in
``readmodels.apis``. The cancel decides on the order's own state row (the write side), never on
the eventually consistent read model. Every answer's ``Location`` names the version a read must
reach to show this write (``?min_version=N``), so a client that follows it reads its own write.
"""

from __future__ import annotations

import uuid

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from eventlog.errors import Conflict, NotFound
from eventlog.http import IDEMPOTENCY_HEADER, PositiveMoneyField, StrictSerializer, error_responses, idempotency_key, parse_uuid, uuid_path
from orders.domain import OrderMode, OrderState
from orders.selectors import order_state_get
from orders.workflows import order_admission_check, order_being_placed, order_canceller, order_placer

#: The version of a new order: ``OrderCreated``, PENDING.
CREATED_VERSION = 1


def order_location(order_id: uuid.UUID, *, min_version: int) -> str:
    return f"/api/orders/{order_id}/?min_version={min_version}"


class ModeField(serializers.ChoiceField):
    """The mode of an order. Its schema lists the modes this deployment runs: ``2pc`` only where
    the orders and customers databases can prepare transactions (the composition root's schema
    class asks); elsewhere ``2pc`` is refused with 400, as documented."""


LOCATION = OpenApiParameter("Location", str, OpenApiParameter.HEADER, response=[201, 202], required=True, description="The order at the version that shows this write (follow it to read your own write).")
RETRY_AFTER_503 = OpenApiParameter("Retry-After", int, OpenApiParameter.HEADER, response=[503], description="Seconds to wait before trying again.")
REPLAYED = OpenApiParameter("Idempotent-Replayed", str, OpenApiParameter.HEADER, response=[201, 202], enum=["true"], description="Present on the first answer given again to a repeat with the same Idempotency-Key.")


class OrderPlaceApi(APIView):
    @extend_schema_serializer(component_name="OrderPlaceInput")
    class InputSerializer(StrictSerializer):
        """An order to place: the customer, the total and the mode; no other field."""

        customer_id = serializers.UUIDField()
        total = PositiveMoneyField()
        mode = ModeField(choices=[m.value for m in OrderMode], default=OrderMode.ORCHESTRATION.value)

    @extend_schema_serializer(component_name="OrderPlaced")
    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        state = serializers.ChoiceField(choices=[OrderState.PENDING.value])
        mode = serializers.ChoiceField(choices=[OrderMode.ORCHESTRATION.value, OrderMode.CHOREOGRAPHY.value])
        saga_id = serializers.UUIDField()
        version = serializers.IntegerField(help_text="Pass as ?min_version= to read the order once it exists (the Location does).")

    @extend_schema_serializer(component_name="OrderDecided")
    class DecidedSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        state = serializers.ChoiceField(choices=[OrderState.APPROVED.value, OrderState.REJECTED.value], help_text="The final state.")
        rejection_reason = serializers.CharField(allow_null=True)
        mode = serializers.ChoiceField(choices=[OrderMode.TWO_PHASE_COMMIT.value])
        saga_id = serializers.UUIDField(help_text="The two-phase transaction (GET /api/sagas/{id}/ shows its phases).")
        version = serializers.IntegerField(help_text="Pass as ?min_version= to read the order as decided (the Location does).")

    @extend_schema(
        operation_id="orders_create",
        request=InputSerializer,
        responses={
            202: OpenApiResponse(OutputSerializer, description="orchestration, choreography: the order is taken on, PENDING."),
            201: OpenApiResponse(DecidedSerializer, description="2pc: the order's final state, decided in one two-phase commit."),
            **error_responses(
                e400="Invalid input (details in extra.fields), an Idempotency-Key longer than 200 characters, or mode 2pc where the orders and customers databases cannot prepare transactions (SQLite, or PostgreSQL with max_prepared_transactions = 0); nothing is written.",
                e409="The Idempotency-Key was used with another request, or a request with it is still in progress.",
                e501="A mode this deployment does not run.",
                e503="Too many transactions of this mode on their way (admission control; Retry-After says when to try again), or a 2PC transaction that could not be finished now (resolve_in_doubt finishes what was decided).",
            ),
        },
        parameters=[
            OpenApiParameter(IDEMPOTENCY_HEADER, {"type": "string", "maxLength": 200}, location=OpenApiParameter.HEADER, description="A retry with the same key gets the first answer; the same key with another request is a 409."),
            LOCATION, REPLAYED, RETRY_AFTER_503,
        ],
        tags=["orders"],
    )
    def post(self, request: Request) -> Response:
        serializer = OrderPlaceApi.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        mode = OrderMode(data["mode"])
        place = order_placer(mode)  # 501 for a mode nobody runs yet, before anything is written
        order_admission_check(mode)  # 503 + Retry-After while too many are on their way
        started = place(order_id=uuid.uuid4(), customer_id=data["customer_id"], total=data["total"], mode=mode.value, idempotency=idempotency_key(request))
        outcome = started.outcome
        version = outcome["version"] if outcome else CREATED_VERSION
        headers = {"Location": order_location(started.order_id, min_version=version)}
        if started.replayed:
            headers["Idempotent-Replayed"] = "true"
        if outcome is not None:  # a mode that decides before it answers (2PC): the final state
            body = {"id": started.order_id, "state": outcome["state"], "rejection_reason": outcome["rejection_reason"], "mode": mode.value, "saga_id": started.saga_id, "version": version}
            return Response(OrderPlaceApi.DecidedSerializer(body).data, status=status.HTTP_201_CREATED, headers=headers)
        body = {"id": started.order_id, "state": OrderState.PENDING.value, "mode": mode.value, "saga_id": started.saga_id, "version": version}
        return Response(OrderPlaceApi.OutputSerializer(body).data, status=status.HTTP_202_ACCEPTED, headers=headers)


class OrderCancelApi(APIView):
    @extend_schema_serializer(component_name="OrderCancelAccepted")
    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        state = serializers.ChoiceField(choices=[OrderState.CANCEL_PENDING.value, OrderState.CANCELLED.value], help_text="CANCELLED for a 2PC order (cancelled before the answer).")
        saga_id = serializers.UUIDField()
        version = serializers.IntegerField(help_text="The order's version once the cancel request is recorded: pass as ?min_version= (the Location does).")

    @extend_schema(
        operation_id="orders_cancel",
        request=None,
        parameters=[uuid_path("order_id", "order"), OpenApiParameter("Location", str, OpenApiParameter.HEADER, response=[202], required=True, description="The order at the version that shows the cancel."), RETRY_AFTER_503],
        responses={
            202: OutputSerializer,
            **error_responses(
                e400="order_id is not a UUID.",
                e404="No such order.",
                e409="The order is not APPROVED (PENDING and CANCEL_PENDING are semantic locks), or another saga holds it.",
                e501="A mode this deployment does not run.",
                e503="A 2PC cancel that could not be finished now.",
            ),
        },
        tags=["orders"],
    )
    def post(self, request: Request, order_id: str) -> Response:
        order_uuid = parse_uuid(order_id, name="order_id")
        order = order_state_get(order_id=order_uuid)
        if order is None:
            if order_being_placed(order_uuid):  # taken on, not recorded here yet: PENDING, a lock
                raise Conflict(f"Order is {OrderState.PENDING.value}; only an APPROVED order can be cancelled.", {"state": OrderState.PENDING.value})
            raise NotFound("Order not found.", {"order_id": str(order_uuid)})
        # A clear 409 from the facts of the write side; the authoritative semantic lock is the
        # saga's (one active saga per order) and the aggregate's (it refuses unless APPROVED).
        if order.state != OrderState.APPROVED:
            raise Conflict(f"Order is {order.state}; only an APPROVED order can be cancelled.", {"state": order.state})
        cancel = order_canceller(OrderMode(order.mode))
        try:
            started = cancel(order_id=order.id, customer_id=order.customer_id, total=order.total)
        except Conflict as exc:
            raise Conflict(exc.message, {**exc.extra, "state": order.state}) from None
        if started.outcome is not None:  # cancelled before the answer (2PC): its final state
            state, version = started.outcome["state"], started.outcome["version"]
        else:
            # Nothing but this cancel can move an APPROVED order (the locks above), so its first
            # step, recording OrderCancelRequested, makes the order's next version.
            state, version = OrderState.CANCEL_PENDING.value, order.version + 1
        body = {"id": order.id, "state": state, "saga_id": started.saga_id, "version": version}
        return Response(OrderCancelApi.OutputSerializer(body).data, status=status.HTTP_202_ACCEPTED, headers={"Location": order_location(order.id, min_version=version)})
