"""The query API: every answer comes from a read-model table, through the cache."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from eventlog.errors import NotFound
from eventlog.http import MoneyField, Pagination, PositiveMoneyField, error_responses, int_query, page_body, parse_choice, parse_int, parse_uuid, uuid_path
from readmodels import selectors

ORDER_STATES = ("PENDING", "APPROVED", "REJECTED", "CANCEL_PENDING", "CANCELLED")
MIN_VERSION_MAX = 2**31
MIN_VERSION = int_query(
    "min_version", minimum=1, maximum=MIN_VERSION_MAX,
    description=(
        "Wait briefly until the read model has reached this version (read your own write). The answer's "
        "`X-Read-Your-Writes` header says how it went: `reached`, `timed-out` (answered what there is after "
        "the wait), or `not-waited` (too many reads already wait: answered at once with what there is; retry)."
    ),
)
#: The response header that says what became of a ``min_version`` wait.
WAIT_HEADER = "X-Read-Your-Writes"
WAIT_HEADER_DOC = OpenApiParameter(WAIT_HEADER, str, OpenApiParameter.HEADER, response=[200], enum=["reached", "timed-out", "not-waited"], description="With min_version: how the wait went.")


def _answer(body: Any, wait: str | None) -> Response:
    response = Response(body)
    if wait is not None:
        response[WAIT_HEADER] = wait
    return response


def _min_version(request: Request) -> int | None:
    value = request.query_params.get("min_version")
    if value is None:
        return None
    return parse_int(value, name="min_version", default=0, minimum=1, maximum=MIN_VERSION_MAX)


class OrderOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    customer_id = serializers.UUIDField()
    total = PositiveMoneyField()
    state = serializers.ChoiceField(choices=ORDER_STATES)
    rejection_reason = serializers.ChoiceField(choices=["INSUFFICIENT_CREDIT", "UNKNOWN_CUSTOMER"], allow_null=True)
    mode = serializers.ChoiceField(choices=["orchestration", "choreography", "2pc"])
    saga_id = serializers.UUIDField(allow_null=True)
    version = serializers.IntegerField()
    customer_name = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


#: One instance for every request: a serializer's fields are deep-copied on each instantiation,
#: which was a fifth of a cached read's time. ``to_representation`` keeps no state.
ORDER_OUTPUT = OrderOutputSerializer()


class OrderDetailApi(APIView):
    def dispatch(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        # The rate limit's round trip to the cache (before get() runs) also fetches the cached
        # order, so a cached read costs one round trip in all.
        with selectors.order_summary_read_ahead(kwargs.get("order_id", "")):
            return super().dispatch(request, *args, **kwargs)

    @extend_schema(
        operation_id="orders_retrieve",
        parameters=[uuid_path("order_id", "order"), MIN_VERSION, WAIT_HEADER_DOC],
        responses={200: OrderOutputSerializer, **error_responses(e400="order_id is not a UUID, or min_version is out of bounds.", e404="No such order in the read model (yet: reads are eventually consistent; pass min_version to wait for your own write).")},
        tags=["orders"],
    )
    def get(self, request: Request, order_id: str) -> Response:
        order_uuid = parse_uuid(order_id, name="order_id")
        row, wait = selectors.order_summary_read(order_id=order_uuid, min_version=_min_version(request))
        if row is None:
            raise NotFound("Order not found.", {"order_id": str(order_uuid)})
        return _answer(ORDER_OUTPUT.to_representation(row), wait)


class OrderListApi(APIView):
    #: Documents the page shape and the page parameters; the view slices its pages itself.
    pagination_class = Pagination

    @extend_schema(
        operation_id="orders_list",
        parameters=[
            OpenApiParameter("customer_id", OpenApiTypes.UUID, description="Only this customer's orders."),
            OpenApiParameter("state", str, enum=list(ORDER_STATES)),
        ],
        responses={200: OrderOutputSerializer(many=True), **error_responses(e400="A parameter out of its bounds or enum, or customer_id not a UUID.", e404="A page past the last one.")},
        tags=["orders"],
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        customer_id = parse_uuid(params["customer_id"], name="customer_id") if "customer_id" in params else None
        state = parse_choice(params.get("state"), name="state", choices=ORDER_STATES)
        page, page_size = Pagination().bounds(request)
        count, rows = selectors.order_summary_list(customer_id=customer_id, state=state, offset=(page - 1) * page_size, limit=page_size)
        if page > 1 and not rows:
            raise NotFound("Invalid page.", {"page": page, "count": count})
        return Response(page_body(request, count=count, page=page, page_size=page_size, results=[ORDER_OUTPUT.to_representation(row) for row in rows]))


class CustomerDetailApi(APIView):
    @extend_schema_serializer(component_name="CustomerCredit")
    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        name = serializers.CharField()
        credit_limit = MoneyField()
        credit_reserved = MoneyField()
        available_credit = MoneyField()
        version = serializers.IntegerField()
        orders = serializers.DictField(child=serializers.IntegerField(), help_text="Number of orders by state.")

    @extend_schema(
        operation_id="customers_retrieve",
        parameters=[uuid_path("customer_id", "customer"), MIN_VERSION, WAIT_HEADER_DOC],
        responses={200: OutputSerializer, **error_responses(e400="customer_id is not a UUID, or min_version is out of bounds.", e404="No such customer in the read model (yet: pass min_version to wait for your own write).")},
        tags=["customers"],
    )
    def get(self, request: Request, customer_id: str) -> Response:
        customer_uuid = parse_uuid(customer_id, name="customer_id")
        row, wait = selectors.customer_credit_read(customer_id=customer_uuid, min_version=_min_version(request))
        if row is None:
            raise NotFound("Customer not found.", {"customer_id": str(customer_uuid)})
        row = {**row, "orders": {state: row[f"orders_{state.lower()}"] for state in ORDER_STATES}}
        return _answer(CUSTOMER_OUTPUT.to_representation(row), wait)


CUSTOMER_OUTPUT = CustomerDetailApi.OutputSerializer()


class ProjectionListApi(APIView):
    @extend_schema_serializer(component_name="ProjectionStatus")
    class OutputSerializer(serializers.Serializer):
        name = serializers.CharField()
        position = serializers.IntegerField()
        head = serializers.IntegerField()
        lag = serializers.IntegerField(help_text="Events in the log that the projection has not applied yet.")
        updated_at = serializers.DateTimeField(allow_null=True)
        rebuilding = serializers.BooleanField()

    @extend_schema(operation_id="projections_list", responses={200: OutputSerializer(many=True)}, tags=["operations"])
    def get(self, request: Request) -> Response:
        return Response(ProjectionListApi.OutputSerializer(selectors.projection_status(), many=True).data)
