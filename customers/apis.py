"""HTTP commands of the customers context (queries live in readmodels.apis).

The ``Location`` of a new customer names its version (``?min_version=1``): a client that
follows it waits for the read model to show the customer instead of getting a 404.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from customers.domain import NAME_MAX_LENGTH
from customers.services import customer_create
from eventlog.http import MoneyField, StrictSerializer, TextField, error_responses

#: What Python's ``str.strip()`` strips, spelt out: the name is trimmed of these, so the schema
#: must not count them as the "something" a name needs (``\s`` differs between Python and the
#: ECMA regexes a schema's ``pattern`` is read with).
_SPACE = r"\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_CONTROL = r"\x00-\x1f\x7f-\x9f"
#: No control characters, and at least one character that is not a space.
NAME_PATTERN = rf"^[^{_CONTROL}]*[^{_CONTROL}{_SPACE}][^{_CONTROL}]*$"


class CustomerCreateApi(APIView):
    @extend_schema_serializer(component_name="CustomerCreateInput")
    class InputSerializer(StrictSerializer):
        """A new customer: a name and a credit limit; no other field."""

        # Validated as sent (the schema's maxLength and pattern), then trimmed.
        name = TextField(
            max_length=NAME_MAX_LENGTH, trim_whitespace=False,
            validators=[RegexValidator(NAME_PATTERN, message="A name needs a character that is not a space, and no control characters.")],
            help_text=f"At most {NAME_MAX_LENGTH} characters as sent; leading and trailing spaces are trimmed.",
        )
        credit_limit = MoneyField()

        def validate_name(self, value: str) -> str:
            return value.strip()

    @extend_schema_serializer(component_name="CustomerCreated")
    class OutputSerializer(serializers.Serializer):
        id = serializers.UUIDField()
        name = serializers.CharField()
        credit_limit = MoneyField()
        version = serializers.IntegerField(help_text="Pass as ?min_version= to read your own write.")

    @extend_schema(
        operation_id="customers_create",
        request=InputSerializer,
        responses={201: OutputSerializer, **error_responses(e400="Invalid input: malformed JSON, a body that is not an object, unknown or missing fields, a bad name or credit limit (details in extra.fields).")},
        parameters=[OpenApiParameter("Location", str, OpenApiParameter.HEADER, response=[201], required=True, description="The new customer, at the version that shows it (follow it to read your own write).")],
        tags=["customers"],
    )
    def post(self, request: Request) -> Response:
        serializer = CustomerCreateApi.InputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        customer = customer_create(**serializer.validated_data)
        body = CustomerCreateApi.OutputSerializer(customer).data
        return Response(body, status=status.HTTP_201_CREATED, headers={"Location": f"/api/customers/{customer.id}/?min_version={customer.version}"})
