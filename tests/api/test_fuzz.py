"""Schemathesis against the running system: every check, every phase, no failure.

The system is the real one (gunicorn with 2 workers, a Celery worker per queue, beat; the test
databases of this tier: SQLite files on the embedded default, PostgreSQL on the PostgreSQL
tier). Schemathesis loads ``/api/schema/`` with a DRF token, and runs its four phases with every
check (``--checks all``): examples, coverage (boundary and invalid values of each parameter),
fuzzing, and stateful scenarios that follow the schema's links and the ``Location`` of each
write (POST customer -> GET customer; POST order -> GET order, cancel). It finds a 5xx, an
answer or a status the schema does not document, a bad input accepted, a valid input refused,
a resource just created that a GET cannot find, a missing authentication check.

Bounds (tests/api/schemathesis.toml): seed 20261202, 10 cases per operation in the fuzzing phase
(plus the coverage phase's), 20 stateful scenarios of at most 6 steps: about 650 requests, of
which the ~70 reads with a ``min_version`` that never comes each wait the 3 s read-your-writes
limit. Measured on the shared 2-core machine (load average 8 to 12): schemathesis 80 s on the
embedded default and 57 s on PostgreSQL; the test 94 s and 65 s, 123 s and 78 s with the
system's start and stop. The
cases are the same every run (fixed seed, no example database). The answers depend on how far
the workers got, and each one they can give is documented; what timing can still fail is a
link's read not seeing its write within READ_YOUR_WRITES_WAIT_SECONDS, a real failure.

The schema differs by tier, as the deployment does: on PostgreSQL (prepared transactions on)
it lists mode ``2pc`` and its 201; on SQLite it does not list ``2pc``, so a ``2pc`` order is
invalid input there, and its documented 400 is what the fuzzer must get.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True, databases="__all__")]

CONFIG = Path(__file__).with_name("schemathesis.toml")


def interactions(cassette: Path) -> list[dict[str, Any]]:
    """The requests schemathesis sent and what each got, in order, from its VCR cassette."""
    recorded = yaml.safe_load(cassette.read_text())["http_interactions"]
    out = []
    for item in recorded:
        request, response = item["request"], item.get("response") or {}
        headers = {name.lower(): value[0] if isinstance(value, list) else value for name, value in (response.get("headers") or {}).items()}
        out.append({
            "method": request["method"], "path": urlsplit(request["uri"]).path, "query": urlsplit(request["uri"]).query,
            "status": int(response.get("status", {}).get("code", 0)), "location": headers.get("location"), "elapsed": float(response.get("elapsed") or 0),
        })
    return out


def followed(recorded: list[dict[str, Any]], *, write: str, status: set[int], then: str, then_method: str = "GET") -> list[str]:
    """Ids created by ``write`` whose ``Location`` (or link) a later request followed to ``then``
    (``{id}`` in it) and got a 2xx or a documented 409: random UUIDs never meet by chance."""
    created = {}
    for index, item in enumerate(recorded):
        if item["method"] == "POST" and item["path"] == write and item["status"] in status and item["location"]:
            created[urlsplit(item["location"]).path.rstrip("/").split("/")[-1]] = index
    hits = []
    for index, item in enumerate(recorded):
        for resource, at in created.items():
            if index > at and item["method"] == then_method and item["path"] == then.format(id=resource) and (200 <= item["status"] < 300 or item["status"] == 409):
                hits.append(resource)
    return hits


@pytest.mark.timeout(400)
@pytest.mark.saga_env(
    # The run's unauthenticated probes (is every operation's authentication enforced?) come
    # from one address; the anonymous rate limit has its own tests (test_throttling.py).
    API_THROTTLE_ANON="100000/minute",
    # READ_YOUR_WRITES_WAIT_SECONDS stays at its default (3 s): a link's read (min_version from
    # the write) must see its write within it, and each generated read of a version that never
    # comes waits that long (most of the run's time: the test prints how much).
)
def test_schemathesis_finds_no_failure_with_every_check(saga_system: Any, tmp_path: Path) -> None:
    user = get_user_model().objects.create_user("fuzzer", password="x" * 20)
    token = Token.objects.create(user=user).key
    cassette = tmp_path / "cassette.yaml"
    command = [
        sys.executable, "-m", "schemathesis.cli", "--no-color", "--config-file", str(CONFIG),
        "run", f"{saga_system.base_url}/api/schema/", "--checks", "all", "--workers", "1",
        "-H", f"Authorization: Token {token}", "--report", "vcr", "--report-vcr-path", str(cassette),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=360, cwd=tmp_path)
    output = run.stdout + run.stderr
    print(output)  # the run's report, shown with -s or when the test fails
    assert run.returncode == 0, output[-20000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅  {phase}" in output, (phase, output[-5000:])
    assert "Selected: 11/11" in output and "Tested: 11" in output, output[-3000:]

    # The stateful phase followed each write to what it wrote.
    recorded = interactions(cassette)
    waited = [item["elapsed"] for item in recorded if "min_version" in item["query"]]
    print(f"{len(recorded)} requests in {sum(item['elapsed'] for item in recorded):.1f} s; {len(waited)} with min_version: {sum(waited):.1f} s")
    assert followed(recorded, write="/api/customers/", status={201}, then="/api/customers/{id}/"), "no GET followed a new customer's Location"
    orders = {201, 202}
    assert followed(recorded, write="/api/orders/", status=orders, then="/api/orders/{id}/"), "no GET followed a new order's Location"
    assert followed(recorded, write="/api/orders/", status=orders, then="/api/orders/{id}/cancel/", then_method="POST"), "no cancel followed a new order"


def test_the_schema_documents_2pc_as_this_tier_answers_it(api: Any) -> None:
    """PostgreSQL (prepared transactions on): ``2pc`` is a listed mode and answers 201. SQLite:
    the schema does not list it, and the 400 it answers is documented."""
    from customers.services import customer_create
    from tests.api.helpers import assert_error
    from tests.conftest import is_postgres

    schema = json.loads(api.get("/api/schema/", {"format": "json"}).content)
    create = schema["paths"]["/api/orders/"]["post"]
    assert {"201", "202", "400", "409", "503"} <= set(create["responses"]), set(create["responses"])
    assert "2pc" in create["responses"]["400"]["description"]
    body = schema["components"]["schemas"][create["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    mode = body["properties"]["mode"]
    enum = schema["components"]["schemas"][mode["allOf"][0]["$ref"].rsplit("/", 1)[-1]]["enum"] if "allOf" in mode else mode["enum"]
    customer = customer_create(name="Ada", credit_limit="10.00")
    answer = api.post("/api/orders/", {"customer_id": str(customer.id), "total": "1.00", "mode": "2pc"}, format="json")
    if is_postgres():
        assert enum == ["orchestration", "choreography", "2pc"]
        assert answer.status_code == 201, answer.content
    else:
        assert enum == ["orchestration", "choreography"]
        assert "max_prepared_transactions" in assert_error(answer, 400)["message"]
