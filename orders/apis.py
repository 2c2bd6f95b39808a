"""HTTP commands of the orders context (queries live in readmodels.apis).

Placing and cancelling orders are saga work (the saga issues); until they land these answer
501 with the standard error shape, so clients can already code against the contract.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import NotImplementedYet


class OrderCreateApi(APIView):
    @extend_schema(operation_id="orders_create", request=None, responses={501: None}, tags=["orders"])
    def post(self, request: Request) -> Response:
        raise NotImplementedYet("Placing orders arrives with the orchestrated saga.", {"modes": ["orchestration", "choreography", "2pc"]})


class OrderCancelApi(APIView):
    @extend_schema(operation_id="orders_cancel", request=None, responses={501: None}, tags=["orders"])
    def post(self, request: Request, order_id: str) -> Response:
        raise NotImplementedYet("Cancelling orders arrives with the cancel-order saga.")
