"""The query API: every answer comes from a read-model table, through the cache."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from eventlog.errors import ApplicationError, NotFound
from eventlog.http import MoneyField, page_body, parse_int, parse_uuid
from readmodels import selectors

ORDER_STATES = ("PENDING", "APPROVED", "REJECTED", "CANCEL_PENDING", "CANCELLED")
MIN_VERSION = OpenApiParameter(
    "min_version", int,
    description=(
        "Wait briefly until the read model has reached this version (read your own write). The answer's "
        "`X-Read-Your-Writes` header says how it went: `reached`, `timed-out` (answered what there is after "
        "the wait), or `not-waited` (too many reads already wait: answered at once with what there is; retry)."
    ),
)
#: The response header that says what became of a ``min_version`` wait.
WAIT_HEADER = "X-Read-Your-Writes"


def _answer(body: Any, wait: str | None) -> Response:
    response = Response(body)
    if wait is not None:
        response[WAIT_HEADER] = wait
    return response


def _min_version(request: Request) -> int | None:
    value = request.query_params.get("min_version")
    if value in (None, ""):
        return None
    return parse_int(value, name="min_version", default=0, minimum=1, maximum=2**31)


class OrderOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    customer_id = serializers.UUIDField()
    total = MoneyField()
    state = serializers.ChoiceField(choices=ORDER_STATES)
    rejection_reason = serializers.CharField(allow_null=True)
    mode = serializers.CharField()
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

    @extend_schema(operation_id="orders_retrieve", parameters=[MIN_VERSION], responses={200: OrderOutputSerializer}, tags=["orders"])
    def get(self, request: Request, order_id: str) -> Response:
        order_uuid = parse_uuid(order_id, name="order_id")
        row, wait = selectors.order_summary_read(order_id=order_uuid, min_version=_min_version(request))
        if row is None:
            raise NotFound("Order not found.", {"order_id": str(order_uuid)})
        return _answer(ORDER_OUTPUT.to_representation(row), wait)


class OrderPagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


class OrderListApi(APIView):
    @extend_schema(
        operation_id="orders_list",
        parameters=[
            OpenApiParameter("customer_id", str, description="Only this customer's orders (UUID)."),
            OpenApiParameter("state", str, enum=list(ORDER_STATES)),
            OpenApiParameter("page", int),
            OpenApiParameter("page_size", int, description="1..500, default 50."),
        ],
        responses={200: OrderOutputSerializer(many=True)},
        tags=["orders"],
    )
    def get(self, request: Request) -> Response:
        params = request.query_params
        customer_id = parse_uuid(params["customer_id"], name="customer_id") if params.get("customer_id") else None
        state = params.get("state") or None
        if state is not None and state not in ORDER_STATES:
            raise ApplicationError("state must be one of " + ", ".join(ORDER_STATES) + ".", {"field": "state"})
        page_size = parse_int(params.get("page_size"), name="page_size", default=OrderPagination.page_size, minimum=1, maximum=OrderPagination.max_page_size)
        page = parse_int(params.get("page"), name="page", default=1, minimum=1, maximum=10**9)
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

    @extend_schema(operation_id="customers_retrieve", parameters=[MIN_VERSION], responses={200: OutputSerializer}, tags=["customers"])
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
