"""HTTP API of the orchestrator: placing and cancelling orders (each starts a saga), and sagas.

Placing an order is the create-order saga's job, so the orchestrator receives the request: it
writes the saga (and the idempotency record) in one transaction of its own database and sends
the first command after commit. The answer is 202: the order exists a moment later, PENDING.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from eventlog.errors import ApplicationError, Conflict, NotFound, NotImplementedYet
from eventlog.http import MoneyField, StrictSerializer, page_body, parse_int, parse_uuid
from readmodels.selectors import order_summary_fresh
from sagas import selectors
from sagas.engine import ALIAS, SagaConflict, saga_start
from sagas.models import IdempotencyRecord, SagaState

MODES = ("orchestration", "choreography", "2pc")
SAGA_TYPES = ("create_order", "cancel_order")
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Order states that are semantic locks: a saga is (or was just) working on the order.
LOCKED_STATES = ("PENDING", "CANCEL_PENDING")


class AwaitingSerializer(serializers.Serializer):  # type: ignore[type-arg]
    step = serializers.CharField()
    kind = serializers.ChoiceField(choices=["forward", "compensation"])
    from_context = serializers.CharField(help_text="The context whose reply the saga waits for.")
    since = serializers.DateTimeField(help_text="When the step's command was first sent.")
    deadline = serializers.DateTimeField(allow_null=True, help_text="When the current attempt times out, or the next retry is sent.")


class StepSerializer(serializers.Serializer):  # type: ignore[type-arg]
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["forward", "compensation"])
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


@extend_schema_serializer(component_name="Saga")
class SagaSerializer(serializers.Serializer):  # type: ignore[type-arg]
    id = serializers.UUIDField()
    type = serializers.CharField()
    mode = serializers.CharField()
    state = serializers.ChoiceField(choices=SagaState.values)
    definition_version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    data = serializers.JSONField()
    last_error = serializers.CharField(allow_blank=True)
    stuck = serializers.BooleanField(help_text="Running, and the awaited step has failed at least once or is overdue.")
    awaiting = AwaitingSerializer(allow_null=True)
    steps = StepSerializer(many=True)


def _idempotent(request: Request, produce: Any) -> Response:
    """Answer a repeat of a request with the same ``Idempotency-Key`` with the first answer.

    The record is written in the same transaction as the saga, so a crash cannot leave a saga
    without its record or a record without its saga.
    """
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if not key:
        return produce()  # type: ignore[no-any-return]
    if len(key) > 200:
        raise ApplicationError(f"{IDEMPOTENCY_HEADER} must be at most 200 characters.")
    fingerprint = hashlib.sha256(json.dumps([request.path, request.data], sort_keys=True, default=str).encode()).hexdigest()
    records = IdempotencyRecord.objects.using(ALIAS)
    for _ in range(2):
        existing = records.filter(user_id=request.user.pk, key=key).first()
        if existing is not None:
            if existing.fingerprint != fingerprint:
                raise ApplicationError(f"This {IDEMPOTENCY_HEADER} was used with a different request.", {"key": key})
            return Response(existing.body, status=existing.status_code, headers={**existing.headers, "Idempotent-Replayed": "true"})
        try:
            with transaction.atomic(using=ALIAS):
                response: Response = produce()
                records.create(user_id=request.user.pk, key=key, fingerprint=fingerprint, status_code=response.status_code, body=response.data, headers={"Location": response.headers.get("Location", "")}, created_at=timezone.now())
                return response
        except IntegrityError:
            continue  # a concurrent request with the same key won: answer with its record
    raise Conflict("A request with this Idempotency-Key is in progress; try again.", {"key": key})


class OrderPlaceApi(APIView):
    @extend_schema_serializer(component_name="OrderPlaceInput")
    class InputSerializer(StrictSerializer):
        customer_id = serializers.UUIDField()
        total = MoneyField()
        mode = serializers.ChoiceField(choices=MODES, default="orchestration")

    @extend_schema_serializer(component_name="OrderPlaced")
    class OutputSerializer(serializers.Serializer):  # type: ignore[type-arg]
        id = serializers.UUIDField()
        state = serializers.CharField()
        mode = serializers.CharField()
        saga_id = serializers.UUIDField()
        version = serializers.IntegerField(help_text="Pass as ?min_version= to read the order once it exists.")

    @extend_schema(
        operation_id="orders_create",
        request=InputSerializer,
        responses={202: OutputSerializer},
        parameters=[OpenApiParameter(IDEMPOTENCY_HEADER, str, location=OpenApiParameter.HEADER, description="A retry with the same key gets the first answer.")],
        tags=["orders"],
    )
    def post(self, request: Request) -> Response:
        serializer = OrderPlaceApi.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        if data["mode"] != "orchestration":
            raise NotImplementedYet(f"mode {data['mode']!r} arrives with its own issue; use 'orchestration'.", {"mode": data["mode"]})

        def place() -> Response:
            order_id = uuid.uuid4()
            saga = saga_start(
                saga_type="create_order",
                subject_id=order_id,
                data={"order_id": str(order_id), "customer_id": str(data["customer_id"]), "total": f"{data['total']:.2f}", "mode": data["mode"]},
            )
            body = {"id": order_id, "state": "PENDING", "mode": data["mode"], "saga_id": saga.id, "version": 1}
            return Response(OrderPlaceApi.OutputSerializer(body).data, status=status.HTTP_202_ACCEPTED, headers={"Location": f"/api/orders/{order_id}/"})

        return _idempotent(request, place)


class OrderCancelApi(APIView):
    @extend_schema_serializer(component_name="OrderCancelAccepted")
    class OutputSerializer(serializers.Serializer):  # type: ignore[type-arg]
        id = serializers.UUIDField()
        state = serializers.CharField()
        saga_id = serializers.UUIDField()

    @extend_schema(operation_id="orders_cancel", request=None, responses={202: OutputSerializer}, tags=["orders"])
    def post(self, request: Request, order_id: str) -> Response:
        order_uuid = parse_uuid(order_id, name="order_id")
        # A pre-check on the read model for a clear 409; the authoritative semantic lock is the
        # saga's first step, which the Order aggregate refuses unless the order is APPROVED.
        order = order_summary_fresh(order_id=order_uuid)
        if (order is None or order["state"] in LOCKED_STATES) and selectors.saga_ended_for(subject_id=order_uuid):
            # The read model lags behind a saga that has just ended (a client that saw its saga
            # COMPLETED and cancels at once): wait briefly for it instead of a wrong 404 or 409.
            order = order_summary_fresh(order_id=order_uuid, until=lambda row: row["state"] not in LOCKED_STATES)
        if order is None:
            raise NotFound("Order not found.", {"order_id": str(order_uuid)})
        if order["state"] != "APPROVED":
            raise Conflict(f"Order is {order['state']}; only an APPROVED order can be cancelled.", {"state": order["state"]})
        try:
            saga = saga_start(
                saga_type="cancel_order",
                subject_id=order_uuid,
                data={"order_id": str(order_uuid), "customer_id": str(order["customer_id"]), "total": f"{order['total']:.2f}"},
            )
        except SagaConflict as exc:
            raise Conflict(str(exc), {"state": order["state"]}) from None
        body = {"id": order_uuid, "state": "CANCEL_PENDING", "saga_id": saga.id}
        return Response(OrderCancelApi.OutputSerializer(body).data, status=status.HTTP_202_ACCEPTED, headers={"Location": f"/api/orders/{order_uuid}/"})


class SagaListApi(APIView):
    @extend_schema(
        operation_id="sagas_list",
        parameters=[
            OpenApiParameter("state", str, enum=list(SagaState.values)),
            OpenApiParameter("type", str, enum=list(SAGA_TYPES)),
            OpenApiParameter("mode", str, enum=list(MODES)),
            OpenApiParameter("stuck", bool, description="true: running sagas whose awaited step has failed or is overdue, stalest first."),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int),
        ],
        responses={200: SagaSerializer(many=True)},
        tags=["sagas"],
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        state = params.get("state") or None
        if state is not None and state not in SagaState.values:
            raise ApplicationError("state must be one of " + ", ".join(SagaState.values) + ".", {"field": "state"})
        saga_type = params.get("type") or None
        if saga_type is not None and saga_type not in SAGA_TYPES:
            raise ApplicationError("type must be one of " + ", ".join(SAGA_TYPES) + ".", {"field": "type"})
        mode = params.get("mode") or None
        if mode is not None and mode not in MODES:
            raise ApplicationError("mode must be one of " + ", ".join(MODES) + ".", {"field": "mode"})
        stuck = {"true": True, "false": False, None: None, "": None}.get(params.get("stuck"), "bad")
        if stuck == "bad":
            raise ApplicationError("stuck must be true or false.", {"field": "stuck"})
        page_size = parse_int(params.get("page_size"), name="page_size", default=50, minimum=1, maximum=500)
        page = parse_int(params.get("page"), name="page", default=1, minimum=1, maximum=10**9)
        count, sagas = selectors.saga_list(state=state, saga_type=saga_type, mode=mode, stuck=stuck, offset=(page - 1) * page_size, limit=page_size)  # type: ignore[arg-type]
        return Response(page_body(request, count=count, page=page, page_size=page_size, results=SagaSerializer(sagas, many=True).data))


class SagaDetailApi(APIView):
    @extend_schema(operation_id="sagas_retrieve", responses={200: SagaSerializer}, tags=["sagas"])
    def get(self, request: Request, saga_id: str) -> Response:
        saga = selectors.saga_get(saga_id=parse_uuid(saga_id, name="saga_id"))
        if saga is None:
            raise NotFound("Saga not found.", {"saga_id": saga_id})
        return Response(SagaSerializer(saga).data)
