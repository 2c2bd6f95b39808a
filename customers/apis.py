"""HTTP commands of the customers context (queries live in readmodels.apis).

The ``Location`` of a new customer names its version (``?min_version=1``): a client that
follows it waits for the read model to show the customer instead of getting a 404.
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.domain import NAME_MAX_LENGTH
from customers.services import customer_create
from eventlog.http import MoneyField, StrictSerializer


class CustomerCreateApi(APIView):
    @extend_schema_serializer(component_name="CustomerCreateInput")
    class InputSerializer(StrictSerializer):
        name = serializers.CharField(max_length=NAME_MAX_LENGTH, trim_whitespace=True)
        credit_limit = MoneyField(positive=False)

    @extend_schema_serializer(component_name="CustomerCreated")
    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        name = serializers.CharField()
        credit_limit = MoneyField()
        version = serializers.IntegerField(help_text="Pass as ?min_version= to read your own write.")

    @extend_schema(operation_id="customers_create", request=InputSerializer, responses={201: OutputSerializer}, tags=["customers"])
    def post(self, request: Request) -> Response:
        serializer = CustomerCreateApi.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        customer = customer_create(**serializer.validated_data)
        body = CustomerCreateApi.OutputSerializer(customer).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": f"/api/customers/{customer.id}/?min_version={customer.version}"})
