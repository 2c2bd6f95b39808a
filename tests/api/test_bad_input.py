"""Bad input (brief, section 6): a clear 4xx in the error shape, and nothing changes.

"Nothing changes" is checked on the customers' aggregate rows, their outbox and the central log.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from customers.services import customer_create
from tests.api.helpers import all_counts, assert_error, counts, make_orders, nothing_changes, project

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

CUSTOMERS = "/api/customers/"
VALID = {"name": "Ada", "credit_limit": "125.00"}


def post_raw(client: APIClient, body: str | bytes, content_type: str = "application/json", path: str = CUSTOMERS, **extra: Any) -> Any:
    return client.post(path, data=body, content_type=content_type, **extra)


def post_json(client: APIClient, body: Any) -> Any:
    return post_raw(client, json.dumps(body))


def refused(response: Any, status: int = 400) -> dict[str, Any]:
    """The answer is ``status`` in the error shape; returns the body."""
    return assert_error(response, status)


def refused_field(response: Any, field: str) -> list[str]:
    """A 400 validation error that names ``field``; returns its messages."""
    body = refused(response, 400)
    assert body["message"] == "Validation failed.", body
    fields = body["extra"]["fields"]
    assert field in fields, body
    messages = fields[field]
    assert isinstance(messages, list) and messages and all(isinstance(m, str) and m for m in messages), body
    return messages


def each(cases: dict[str, Any], check: Any) -> None:
    """Run ``check`` on every case (one database set-up for the lot), then report every failure."""
    failures = []
    for label, case in cases.items():
        try:
            check(case)
        except AssertionError as exc:
            failures.append(f"{label!r}: {exc}")
    assert not failures, f"{len(failures)} of {len(cases)} cases failed:\n" + "\n".join(failures)


# --- the positive control: the same endpoint, with good input, works --------------------------


def test_a_valid_body_is_accepted(api: APIClient) -> None:
    before = counts()
    assert post_json(api, VALID).status_code == 201
    assert counts()["customers"] == before["customers"] + 1


def test_a_zero_credit_limit_is_allowed_for_customers(api: APIClient) -> None:
    response = post_json(api, {"name": "Ada", "credit_limit": "0.00"})
    assert response.status_code == 201
    assert response.json()["credit_limit"] == "0.00"


# --- the body is not JSON, or not a JSON object ----------------------------------------------

MALFORMED = {
    "truncated": '{"name": "Ada", "credit_limit": "1.00"',
    "unquoted keys": '{name: "Ada", credit_limit: "1.00"}',
    "single quotes": "{'name': 'Ada', 'credit_limit': '1.00'}",
    "trailing comma": '{"name": "Ada", "credit_limit": "1.00",}',
    "two documents": '{"name": "Ada", "credit_limit": "1.00"}{}',
    "bare NaN": '{"name": "Ada", "credit_limit": NaN}',
    "bare Infinity": '{"name": "Ada", "credit_limit": Infinity}',
    "not utf-8": b'{"name": "\xff\xfe", "credit_limit": "1.00"}',
    "garbage": "hello",
    "nested too deeply": "[" * 20000,
    "object nested too deeply": '{"a":' * 10000 + "1" + "}" * 10000,
}


def test_malformed_json_is_400(api: APIClient) -> None:
    def check(body: str | bytes) -> None:
        with nothing_changes():
            parsed = refused(post_raw(api, body))
        assert parsed["extra"] == {"code": "parse_error"}, parsed
        assert "JSON parse error" in parsed["message"], parsed

    each(MALFORMED, check)


NOT_AN_OBJECT = {
    "empty list": "[]",
    "list of a valid object": json.dumps([VALID]),
    "string": '"Ada"',
    "integer": "125",
    "float": "125.5",
    "true": "true",
    "null": "null",
}


def test_a_body_that_is_not_a_json_object_is_400(api: APIClient) -> None:
    def check(body: str) -> None:
        with nothing_changes():
            refused_field(post_raw(api, body), "non_field_errors")

    each(NOT_AN_OBJECT, check)


def test_an_empty_body_is_400_naming_the_missing_fields(api: APIClient) -> None:
    with nothing_changes():
        body = refused(post_raw(api, ""))
    assert set(body["extra"]["fields"]) == {"name", "credit_limit"}


# --- unknown and missing fields --------------------------------------------------------------


def test_unknown_fields_are_400_naming_them(api: APIClient) -> None:
    def check(field: str) -> None:
        with nothing_changes():
            messages = refused_field(post_json(api, {**VALID, field: str(uuid.uuid4())}), field)
        assert messages == ["Unknown field."], messages

    each({field: field for field in ("id", "credit_reserved", "version", "Name", "extra")}, check)


def test_missing_fields_are_400_naming_them(api: APIClient) -> None:
    def check(case: tuple[dict[str, Any], set[str]]) -> None:
        body, missing = case
        with nothing_changes():
            response = refused(post_json(api, body))
        assert set(response["extra"]["fields"]) == missing, response

    each(
        {
            "both": ({}, {"name", "credit_limit"}),
            "credit_limit": ({"name": "Ada"}, {"credit_limit"}),
            "name": ({"credit_limit": "1.00"}, {"name"}),
        },
        check,
    )


# --- the name ---------------------------------------------------------------------------------

BAD_NAMES = {
    "empty": "",
    "spaces": "   ",
    "whitespace": "\t\n \r",
    "201 characters": "n" * 201,
    "201 characters after trimming": "  " + "n" * 201 + "  ",
    "null": None,
    "list": ["Ada"],
    "object": {"first": "Ada"},
    "boolean": True,
    "NUL character": "Ada\u0000Lovelace",
    "lone surrogate": "Ada\ud800",
}


def test_a_bad_name_is_400(api: APIClient) -> None:
    def check(name: Any) -> None:
        with nothing_changes():
            refused_field(post_json(api, {"name": name, "credit_limit": "1.00"}), "name")

    each(BAD_NAMES, check)


# --- the credit limit ------------------------------------------------------------------------

BAD_AMOUNTS = {
    "negative": "-1.00",
    "negative cent": "-0.01",
    "negative zero": "-0.00",
    "negative zero, short": "-0",
    "three places": "1.001",
    "three places, below a cent": "0.001",
    "many places": "3.14159",
    "1e30": "1e30",
    "1E30": "1E30",
    "twenty digits": "99999999999999999999.00",
    "just above the maximum": "1000000000000.00",
    "exponent within range": "1e2",
    "underscores": "1_000.00",
    "comma": "12,50",
    "hex": "0x10",
    "non-ASCII digits": "\u0661\u0662\u0663",
    "NaN": "NaN",
    "nan": "nan",
    "sNaN": "sNaN",
    "Infinity": "Infinity",
    "-Infinity": "-Infinity",
    "inf": "inf",
    "empty": "",
    "spaces": "   ",
    "words": "a lot",
    "currency sign": "$125.00",
    "two points": "1.2.3",
    "JSON integer": 125,
    "JSON float": 125.5,
    "JSON zero": 0,
    "JSON huge float": 1e30,
    "JSON null": None,
    "JSON true": True,
    "JSON list": ["125.00"],
    "JSON object": {"amount": "125.00"},
}


def test_a_bad_credit_limit_is_400(api: APIClient) -> None:
    def check(amount: Any) -> None:
        with nothing_changes():
            refused_field(post_json(api, {"name": "Ada", "credit_limit": amount}), "credit_limit")

    each(BAD_AMOUNTS, check)


def test_a_json_number_is_refused_with_a_message_that_says_so(api: APIClient) -> None:
    messages = refused_field(post_json(api, {"name": "Ada", "credit_limit": 125}), "credit_limit")
    assert "decimal string" in messages[0] and "int" in messages[0]


def test_every_problem_of_a_body_is_reported_at_once(api: APIClient) -> None:
    with nothing_changes():
        body = refused(post_json(api, {"name": " ", "credit_limit": "-5", "colour": "red"}))
    assert set(body["extra"]["fields"]) >= {"colour"}
    body = refused(post_json(api, {"name": " ", "credit_limit": "-5"}))
    assert set(body["extra"]["fields"]) == {"name", "credit_limit"}


# --- size and media type ---------------------------------------------------------------------


def test_a_body_over_64_kib_is_413(api: APIClient) -> None:
    body = json.dumps({"name": "n" * (64 * 1024), "credit_limit": "1.00"})
    assert len(body) > django_settings.API_MAX_BODY_BYTES == 64 * 1024
    with nothing_changes():
        response = refused(post_raw(api, body), 413)
    assert response["extra"] == {"max_bytes": 64 * 1024, "got_bytes": len(body)}


def test_a_body_of_exactly_64_kib_is_read_and_then_judged(api: APIClient) -> None:
    skeleton = json.dumps({"name": "", "credit_limit": "1.00"})
    body = json.dumps({"name": "n" * (64 * 1024 - len(skeleton)), "credit_limit": "1.00"})
    assert len(body) == 64 * 1024
    with nothing_changes():
        refused_field(post_raw(api, body), "name")  # too long a name, not too large a body


def test_an_invalid_content_length_is_400(api: APIClient) -> None:
    with nothing_changes():
        refused(post_raw(api, json.dumps(VALID), CONTENT_LENGTH="lots"))


def test_a_body_that_is_not_json_is_415(api: APIClient) -> None:
    def check(content_type: str) -> None:
        with nothing_changes():
            body = refused(post_raw(api, "name=Ada&credit_limit=1.00", content_type=content_type), 415)
        assert body["extra"] == {"code": "unsupported_media_type"}, body

    types = ["application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "text/plain", "application/xml"]
    each({t: t for t in types}, check)


def test_a_form_post_is_415(api: APIClient) -> None:
    with nothing_changes():
        refused(api.post(CUSTOMERS, VALID), 415)  # APIClient's default: multipart form data
        refused(api.post(CUSTOMERS, VALID, format="multipart"), 415)


# --- unauthenticated bad input: 401 first, before the body is even looked at ------------------


def test_unauthenticated_bad_input_is_401(anon: APIClient) -> None:
    with nothing_changes():
        refused(post_raw(anon, "{not json"), 401)
        refused(post_json(anon, {"name": "", "credit_limit": "-1"}), 401)
        refused(post_raw(anon, "name=Ada", content_type="application/x-www-form-urlencoded"), 401)
        refused(post_json(anon, VALID), 401)


# --- ids in paths ----------------------------------------------------------------------------

BAD_IDS = {
    "words": "not-a-uuid",
    "number": "123",
    "bad hex digit": "00000000-0000-0000-0000-00000000000g",
    "too short": "00000000-0000-0000-0000-00000000000",
    "too long": "00000000-0000-0000-0000-0000000000000",
    "very long": "x" * 500,
    "injection": "%27%20OR%20%271%27%3D%271",
    "NUL": "%00",
}
ID_PATHS = {"customer": "/api/customers/{}/", "order": "/api/orders/{}/", "stream": "/api/streams/{}/"}


@pytest.mark.parametrize("path", list(ID_PATHS.values()), ids=list(ID_PATHS))
def test_a_non_uuid_id_in_a_path_is_400(api: APIClient, path: str) -> None:
    field = {"customer": "customer_id", "order": "order_id", "stream": "stream_id"}[path.split("/")[2].rstrip("s")]

    def check(bad_id: str) -> None:
        body = refused(api.get(path.format(bad_id)))
        assert body["message"] == f"{field} must be a UUID.", body
        assert body["extra"]["field"] == field, body
        assert len(body["extra"]["value"]) <= 100, body  # an echo of the input, but a bounded one

    each(BAD_IDS, check)


@pytest.mark.parametrize("path", list(ID_PATHS.values()), ids=list(ID_PATHS))
def test_an_unknown_id_is_404(api: APIClient, path: str, settings: Any) -> None:
    settings.READ_YOUR_WRITES_WAIT_SECONDS = 0.2  # ?min_version on an unknown id waits, then 404
    customer = customer_create(name="Ada", credit_limit="10.00")
    make_orders(customer.id, pending=1)
    project()
    refused(api.get(path.format(uuid.uuid4())), 404)
    refused(api.get(path.format(uuid.uuid4()) + "?min_version=1"), 404)


# --- query parameters ------------------------------------------------------------------------

BAD_QUERIES = [
    ("/api/orders/", {"customer_id": "not-a-uuid"}),
    ("/api/orders/", {"customer_id": "123"}),
    ("/api/orders/", {"state": "BOGUS"}),
    ("/api/orders/", {"state": "approved"}),
    ("/api/orders/", {"state": "APPROVED,REJECTED"}),
    ("/api/orders/", {"page": "0"}),
    ("/api/orders/", {"page": "-1"}),
    ("/api/orders/", {"page": "abc"}),
    ("/api/orders/", {"page": "1.5"}),
    ("/api/orders/", {"page": "9" * 40}),
    ("/api/orders/", {"page_size": "0"}),
    ("/api/orders/", {"page_size": "-5"}),
    ("/api/orders/", {"page_size": "501"}),
    ("/api/orders/", {"page_size": "abc"}),
    ("/api/events/", {"after": "-1"}),
    ("/api/events/", {"after": "abc"}),
    ("/api/events/", {"after": "1.5"}),
    ("/api/events/", {"after": "1e3"}),
    ("/api/events/", {"after": "9" * 40}),
    ("/api/events/", {"limit": "0"}),
    ("/api/events/", {"limit": "-1"}),
    ("/api/events/", {"limit": "1001"}),
    ("/api/events/", {"limit": "abc"}),
    ("/api/customers/{customer}/", {"min_version": "0"}),
    ("/api/customers/{customer}/", {"min_version": "-1"}),
    ("/api/customers/{customer}/", {"min_version": "abc"}),
    ("/api/customers/{customer}/", {"min_version": "1.5"}),
    ("/api/customers/{customer}/", {"min_version": "9" * 40}),
    ("/api/orders/{order}/", {"min_version": "0"}),
    ("/api/orders/{order}/", {"min_version": "abc"}),
]


def test_a_bad_query_parameter_is_400_naming_it(api: APIClient) -> None:
    customer = customer_create(name="Ada", credit_limit="10.00")
    order = make_orders(customer.id, pending=1)["PENDING"][0]
    project()

    def check(case: tuple[str, dict[str, str]]) -> None:
        path, query = case
        body = refused(api.get(path.format(customer=customer.id, order=order), query))
        (name,) = query
        assert body["extra"]["field"] == name, body
        assert name in body["message"], body

    each({f"{path} {query}": (path, query) for path, query in BAD_QUERIES}, check)


def test_a_page_beyond_the_last_is_404(api: APIClient) -> None:
    customer = customer_create(name="Ada", credit_limit="10.00")
    make_orders(customer.id, pending=3)
    project()
    assert api.get("/api/orders/", {"page_size": 2, "page": 2}).status_code == 200
    refused(api.get("/api/orders/", {"page_size": 2, "page": 3}), 404)


@pytest.mark.parametrize(
    ("path", "parameter"),
    [("/api/orders/", "customer_id"), ("/api/orders/", "state"), ("/api/orders/", "page"), ("/api/orders/", "page_size"),
     ("/api/sagas/", "state"), ("/api/sagas/", "type"), ("/api/sagas/", "mode"), ("/api/sagas/", "stuck"), ("/api/sagas/", "page_size"),
     ("/api/events/", "after"), ("/api/events/", "limit")],
)
def test_an_empty_query_parameter_is_400_not_its_default(api: APIClient, path: str, parameter: str) -> None:
    # The schema says what each is (an integer, a UUID, one of an enum); "" is none of them, so
    # it is refused like any other value outside the schema. Leaving the parameter out is how a
    # client asks for the default.
    body = refused(api.get(path, {parameter: ""}))
    assert body["extra"]["field"] == parameter
    assert api.get(path).status_code == 200


# --- the body of POST /api/orders/ (a zero total is bad input here, unlike a zero credit limit) --

ORDER: dict[str, Any] = {"customer_id": "7a1d5a4e-8a33-4a4e-9d1c-2f5f0c1d7e10", "total": "10.00", "mode": "orchestration"}
BAD_ORDERS: dict[str, tuple[Any, str | None]] = {
    "malformed JSON": ('{"customer_id": ', None),
    "a list": ([ORDER], "non_field_errors"),
    "unknown field state": ({**ORDER, "state": "APPROVED"}, "state"),
    "unknown field saga_id": ({**ORDER, "saga_id": str(uuid.uuid4())}, "saga_id"),
    "missing customer_id": ({"total": "10.00"}, "customer_id"),
    "missing total": ({"customer_id": ORDER["customer_id"]}, "total"),
    "non-UUID customer_id": ({**ORDER, "customer_id": "not-a-uuid"}, "customer_id"),
    "numeric customer_id": ({**ORDER, "customer_id": 123}, "customer_id"),
    "null customer_id": ({**ORDER, "customer_id": None}, "customer_id"),
    "zero total": ({**ORDER, "total": "0.00"}, "total"),
    "zero total, short": ({**ORDER, "total": "0"}, "total"),
    "negative total": ({**ORDER, "total": "-10.00"}, "total"),
    "negative zero total": ({**ORDER, "total": "-0.00"}, "total"),
    "three places": ({**ORDER, "total": "10.001"}, "total"),
    "absurdly large": ({**ORDER, "total": "1e30"}, "total"),
    "twenty digits": ({**ORDER, "total": "99999999999999999999.00"}, "total"),
    "NaN": ({**ORDER, "total": "NaN"}, "total"),
    "Infinity": ({**ORDER, "total": "Infinity"}, "total"),
    "JSON number": ({**ORDER, "total": 10}, "total"),
    "JSON float": ({**ORDER, "total": 10.5}, "total"),
    "null total": ({**ORDER, "total": None}, "total"),
    "unknown mode": ({**ORDER, "mode": "bogus"}, "mode"),
    "upper-case mode": ({**ORDER, "mode": "ORCHESTRATION"}, "mode"),
    "null mode": ({**ORDER, "mode": None}, "mode"),
}


def test_a_bad_order_body_is_400_and_starts_nothing(api: APIClient) -> None:
    def check(case: tuple[Any, str | None]) -> None:
        body, field = case
        before = all_counts()
        raw = body if isinstance(body, str) else json.dumps(body)
        if field is None:
            assert refused(post_raw(api, raw, path="/api/orders/"))["extra"] == {"code": "parse_error"}
        else:
            refused_field(post_raw(api, raw, path="/api/orders/"), field)
        assert all_counts() == before

    each(BAD_ORDERS, check)


def test_an_order_body_that_is_not_json_or_too_large_is_refused_and_starts_nothing(api: APIClient) -> None:
    before = all_counts()
    refused(api.post("/api/orders/", ORDER), 415)
    refused(post_raw(api, "customer_id=x&total=1", content_type="application/x-www-form-urlencoded", path="/api/orders/"), 415)
    refused(post_raw(api, json.dumps({**ORDER, "pad": "x" * 70000}), path="/api/orders/"), 413)
    assert all_counts() == before


def test_a_non_uuid_order_id_to_cancel_is_400(api: APIClient) -> None:
    before = all_counts()
    refused(api.post("/api/orders/not-a-uuid/cancel/"), 400)
    assert all_counts() == before


# --- what the client asks for --------------------------------------------------------------


def test_an_answer_in_a_media_type_the_api_does_not_speak_is_406_in_the_error_shape(api: APIClient) -> None:
    body = refused(api.get("/api/projections/", HTTP_ACCEPT="application/xml"), 406)
    assert body["extra"] == {"code": "not_acceptable"}


@pytest.mark.parametrize("path", ["/api/nope/", "/api/customers/7a1d5a4e-8a33-4a4e-9d1c-2f5f0c1d7e10/extra/", "/api/streams/7a1d5a4e-8a33-4a4e-9d1c-2f5f0c1d7e10/events/"])
def test_an_unknown_api_path_is_404_in_the_error_shape(api: APIClient, path: str) -> None:
    refused(api.get(path), 404)
