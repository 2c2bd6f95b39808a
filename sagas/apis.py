"""HTTP API of the orchestrator: sagas and their step timelines (reads of the sagas database).

Placing and cancelling an order are the orders context's use cases (``orders.apis``); in
orchestration mode they reach this context through ``sagas.services``, wired by config.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from eventlog.errors import ApplicationError, NotFound
from eventlog.http import Pagination, error_responses, page_body, parse_choice, parse_uuid, uuid_path
from sagas import selectors
from sagas.models import SagaState

MODES = ("orchestration", "choreography", "2pc")
SAGA_TYPES = ("create_order", "cancel_order")


class AwaitingSerializer(serializers.Serializer):
    step = serializers.CharField()
    kind = serializers.ChoiceField(choices=["forward", "compensation"])
    from_context = serializers.CharField(help_text="The context whose reply the saga waits for.")
    since = serializers.DateTimeField(help_text="When the step's command was first sent.")
    deadline = serializers.DateTimeField(allow_null=True, help_text="When the current attempt times out, or the next retry is sent (choreography: when the flow counts as stuck).")
    subscriber = serializers.CharField(required=False, help_text="Choreography: the subscriber that owes the awaited event.")
    subscriber_lag = serializers.IntegerField(required=False, help_text="Choreography, when stuck: how many events that subscriber is behind the log.")
    error = serializers.CharField(required=False, help_text="Choreography: the error the subscriber failed (or parked the event) with.")
    parked = serializers.BooleanField(required=False, help_text="Choreography: the event was parked; retry it with manage.py retry_parked_events.")


class StepSerializer(serializers.Serializer):
    name = serializers.CharField()
    kind = serializers.ChoiceField(choices=["forward", "compensation"])
    status = serializers.CharField()
    attempts = serializers.IntegerField()
    started_at = serializers.DateTimeField()
    ended_at = serializers.DateTimeField(allow_null=True)
    error = serializers.CharField(allow_blank=True)
    context = serializers.CharField(required=False, help_text="Choreography: the context that recorded the event (or owes it).")  # type: ignore[assignment]  # DRF's metaclass moves a declared field out of the class; the stubs see the base attribute
    event_id = serializers.UUIDField(required=False, allow_null=True)
    causation_id = serializers.UUIDField(required=False, allow_null=True)
    position = serializers.IntegerField(required=False, allow_null=True, help_text="Choreography: the event's position in the log.")
    outcome = serializers.CharField(required=False, help_text="2PC: the phase's outcome (ok, failed, already done; COMMIT or ABORT for the decision).")
    actor = serializers.CharField(required=False, help_text="2PC: who did it (coordinator, resolve_in_doubt, sweep).")
    detail = serializers.CharField(required=False, allow_blank=True, help_text="2PC: the branch's global transaction id, or what happened.")


class PreparedBranchSerializer(serializers.Serializer):
    branch = serializers.CharField(help_text="The database whose prepared transaction holds its locks.")
    gid = serializers.CharField()
    prepared_at = serializers.DateTimeField()
    age_seconds = serializers.FloatField()


class InDoubtSerializer(serializers.Serializer):
    decision = serializers.CharField(allow_null=True, help_text="COMMIT or ABORT once logged; null while undecided.")
    age_seconds = serializers.FloatField(help_text="Since the transaction began.")
    prepared = PreparedBranchSerializer(many=True, allow_null=True, help_text="Its branches prepared right now (null if the databases could not be asked).")


@extend_schema_serializer(component_name="Saga")
class SagaSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    type = serializers.ChoiceField(choices=SAGA_TYPES)
    mode = serializers.ChoiceField(choices=MODES)
    state = serializers.ChoiceField(choices=SagaState.values)
    definition_version = serializers.IntegerField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    data = serializers.JSONField()  # type: ignore[assignment]  # DRF's metaclass moves a declared field out of the class; the stubs see the base attribute
    last_error = serializers.CharField(allow_blank=True)
    stuck = serializers.BooleanField(help_text="Running, and the awaited step has failed at least once or is overdue (2PC: in doubt longer than the safety interval).")
    awaiting = AwaitingSerializer(allow_null=True)
    steps = StepSerializer(many=True)
    in_doubt = InDoubtSerializer(allow_null=True, help_text="2PC, until the transaction ends: how long it has been in doubt and what it holds.")


class SagaListApi(APIView):
    #: Documents the page shape and the page parameters; the view slices its pages itself.
    pagination_class = Pagination

    @extend_schema(
        operation_id="sagas_list",
        parameters=[
            OpenApiParameter("state", str, enum=list(SagaState.values)),
            OpenApiParameter("type", str, enum=list(SAGA_TYPES)),
            OpenApiParameter("mode", str, enum=list(MODES)),
            OpenApiParameter("stuck", bool, description="true: running sagas whose awaited step has failed or is overdue, stalest first."),
        ],
        responses={200: SagaSerializer(many=True), **error_responses(e400="A parameter outside its enum or bounds (an empty value too).", e404="A page past the last one.")},
        tags=["sagas"],
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        state = parse_choice(params.get("state"), name="state", choices=SagaState.values)
        saga_type = parse_choice(params.get("type"), name="type", choices=SAGA_TYPES)
        mode = parse_choice(params.get("mode"), name="mode", choices=MODES)
        stuck = {"true": True, "false": False, None: None}.get(params.get("stuck"), "bad")
        if stuck == "bad":
            raise ApplicationError("stuck must be true or false.", {"field": "stuck"})
        page, page_size = Pagination().bounds(request)
        count, sagas = selectors.saga_list(state=state, saga_type=saga_type, mode=mode, stuck=stuck, offset=(page - 1) * page_size, limit=page_size)  # type: ignore[arg-type]
        if page > 1 and not sagas:
            raise NotFound("Invalid page.", {"page": page, "count": count})
        return Response(page_body(request, count=count, page=page, page_size=page_size, results=SagaSerializer(sagas, many=True).data))


class SagaDetailApi(APIView):
    @extend_schema(
        operation_id="sagas_retrieve",
        parameters=[uuid_path("saga_id", "saga")],
        responses={200: SagaSerializer, **error_responses(e400="saga_id is not a UUID.", e404="No such saga (a choreographed flow appears once the trace has seen its first event).")},
        tags=["sagas"],
    )
    def get(self, request: Request, saga_id: str) -> Response:
        saga = selectors.saga_get(saga_id=parse_uuid(saga_id, name="saga_id"))
        if saga is None:
            raise NotFound("Saga not found.", {"saga_id": saga_id})
        return Response(SagaSerializer(saga).data)
