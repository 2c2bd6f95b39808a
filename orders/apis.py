"""HTTP commands of the orders context: placing an order (in any mode) and cancelling one.

Both are this context's use cases, so they have one entry point here, whatever the mode: the
mode only decides who carries the order through (``orders.workflows``). Queries live in
``readmodels.apis``. The cancel decides on the order's own state row (the write side), never on
the eventually consistent read model. Every answer's ``Location`` names the version a read must
reach to show this write (``?min_version=N``), so a client that follows it reads its own write.
"""

from __future__ import annotations

import uuid

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from eventlog.errors import Conflict, NotFound
from eventlog.http import IDEMPOTENCY_HEADER, MoneyField, StrictSerializer, idempotency_key, parse_uuid
from orders.domain import OrderMode, OrderState
from orders.selectors import order_state_get
from orders.workflows import order_admission_check, order_canceller, order_placer

#: The version of a new order: ``OrderCreated``, PENDING.
CREATED_VERSION = 1


def order_location(order_id: uuid.UUID, *, min_version: int) -> str:
    return f"/api/orders/{order_id}/?min_version={min_version}"


class OrderPlaceApi(APIView):
    @extend_schema_serializer(component_name="OrderPlaceInput")
    class InputSerializer(StrictSerializer):
        customer_id = serializers.UUIDField()
        total = MoneyField()
        mode = serializers.ChoiceField(choices=[m.value for m in OrderMode], default=OrderMode.ORCHESTRATION.value)

    @extend_schema_serializer(component_name="OrderPlaced")
    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        state = serializers.CharField()
        mode = serializers.CharField()
        saga_id = serializers.UUIDField()
        version = serializers.IntegerField(help_text="Pass as ?min_version= to read the order once it exists (the Location does).")

    @extend_schema_serializer(component_name="OrderDecided")
    class DecidedSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        state = serializers.CharField(help_text="The final state: APPROVED or REJECTED.")
        rejection_reason = serializers.CharField(allow_null=True)
        mode = serializers.CharField()
        saga_id = serializers.UUIDField(help_text="The two-phase transaction (GET /api/sagas/{id}/ shows its phases).")
        version = serializers.IntegerField(help_text="Pass as ?min_version= to read the order as decided (the Location does).")

    @extend_schema(
        operation_id="orders_create",
        request=InputSerializer,
        responses={202: OutputSerializer, 201: DecidedSerializer},
        parameters=[OpenApiParameter(IDEMPOTENCY_HEADER, str, location=OpenApiParameter.HEADER, description="A retry with the same key gets the first answer.")],
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
        state = serializers.CharField()
        saga_id = serializers.UUIDField()
        version = serializers.IntegerField(help_text="The order's version once the cancel request is recorded: pass as ?min_version= (the Location does).")

    @extend_schema(operation_id="orders_cancel", request=None, responses={202: OutputSerializer}, tags=["orders"])
    def post(self, request: Request, order_id: str) -> Response:
        order_uuid = parse_uuid(order_id, name="order_id")
        order = order_state_get(order_id=order_uuid)
        if order is None:
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
