"""Production is HTTPS only, and says so to ``manage.py check --deploy``; the local modes stay
plain HTTP because they ask for it (``DJANGO_LOCAL_HTTP=true``), not because production is weak.

Each configuration is read by a process of its own, started with exactly the variables under
test (``config/settings.py`` reads the environment once, at import). The TLS-proxy switch is
tried on a real gunicorn, over real HTTP.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from config.launcher import BASE_DIR, Stack
from tests.conftest import eventually, free_port

HOST = "saga.example.com"
CONTEXTS = ("orders", "customers", "sagas", "eventlog", "readmodels")
HTTPS_SETTINGS = (
    "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER",
)


def production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The variables of a production deployment on PostgreSQL + Redis, and nothing else of ours.

    The hosts end in ``.invalid`` (RFC 2606: never resolves): ``check --deploy`` opens no
    connection (database checks run only with ``--database``), and this proves it.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DJANGO_") and not k.endswith("DATABASE_URL") and k not in ("CELERY_BROKER_URL", "CACHE_URL", "REDIS_URL")}
    env.update({
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": HOST,
        "VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": "postgres://saga:secret@db.invalid:5432/saga_default",
        **{f"{c.upper()}_DATABASE_URL": f"postgres://saga:secret@db.invalid:5432/saga_{c}" for c in CONTEXTS},
        "CELERY_BROKER_URL": "redis://redis.invalid:6379/0",
        "CACHE_URL": "redis://redis.invalid:6379/1",
    })
    env.update(extra)
    return env


def check_deploy(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120, check=False)


def settings_of(env: dict[str, str]) -> dict[str, object]:
    """The HTTPS settings a process started with ``env`` ends up with."""
    code = f"import django, json; django.setup(); from django.conf import settings; print(json.dumps({{n: getattr(settings, n) for n in {HTTPS_SETTINGS!r}}}))"
    completed = subprocess.run([sys.executable, "-c", code], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120, check=True)
    return dict(json.loads(completed.stdout.splitlines()[-1]))


def test_check_deploy_is_clean_with_the_production_variables(tmp_path: Path) -> None:
    result = check_deploy(production_env(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "System check identified no issues (0 silenced)." in result.stdout, output
    assert "WARNING" not in output and "security.W" not in output, output


def test_check_deploy_reports_the_local_http_mode(tmp_path: Path) -> None:
    """The control: the same variables in the local mode fail the check, warning by warning."""
    result = check_deploy(production_env(tmp_path, DJANGO_LOCAL_HTTP="true"))
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    for warning in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert warning in output, f"{warning} missing from:\n{output}"


def test_production_defaults_are_https_only(tmp_path: Path) -> None:
    assert settings_of(production_env(tmp_path)) == {
        "SECURE_SSL_REDIRECT": True,
        "SECURE_HSTS_SECONDS": 3600,
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_PROXY_SSL_HEADER": None,
    }


def test_each_https_setting_follows_its_variable(tmp_path: Path) -> None:
    env = production_env(tmp_path, DJANGO_SECURE_HSTS_SECONDS="31536000", DJANGO_SECURE_HSTS_PRELOAD="false", DJANGO_SECURE_SSL_REDIRECT="false", DJANGO_BEHIND_TLS_PROXY="true")
    got = settings_of(env)
    assert (got["SECURE_HSTS_SECONDS"], got["SECURE_HSTS_PRELOAD"], got["SECURE_SSL_REDIRECT"]) == (31536000, False, False)
    assert got["SECURE_PROXY_SSL_HEADER"] == ["HTTP_X_FORWARDED_PROTO", "https"]
    assert got["SESSION_COOKIE_SECURE"] is True


def test_the_local_http_mode_serves_plain_http(tmp_path: Path) -> None:
    local = {
        "SECURE_SSL_REDIRECT": False, "SECURE_HSTS_SECONDS": 0, "SECURE_HSTS_INCLUDE_SUBDOMAINS": False, "SECURE_HSTS_PRELOAD": False,
        "SESSION_COOKIE_SECURE": False, "CSRF_COOKIE_SECURE": False, "SECURE_PROXY_SSL_HEADER": None,
    }
    assert settings_of(production_env(tmp_path, DJANGO_LOCAL_HTTP="true")) == local
    # Who asks for it: every process the launcher starts (`make run`, the e2e tests, the
    # benchmarks), and this test run itself.
    assert Stack(env={}, run_dir=tmp_path / "run").env["DJANGO_LOCAL_HTTP"] == "true"
    assert settings.SECURE_SSL_REDIRECT is False and settings.SESSION_COOKIE_SECURE is False


# --- a real gunicorn, in production mode ---------------------------------------------------


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers={"Host": HOST, **(headers or {})})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


def _gunicorn(tmp_path: Path, **extra: str) -> Iterator[int]:
    """gunicorn in production mode, as reached by a TLS proxy on another machine.

    gunicorn itself takes X-Forwarded-Proto from the addresses in FORWARDED_ALLOW_IPS, by
    default 127.0.0.1 only; here the proxy is 192.0.2.1 (TEST-NET), so a request from this
    test is not the proxy's, and only Django's switch can make it count as HTTPS.
    """
    # The embedded SQLite files (no database URL): the page asked for here reads no table.
    env = {k: v for k, v in production_env(tmp_path, DJANGO_LOCAL_HTTP="false", FORWARDED_ALLOW_IPS="192.0.2.1", **extra).items() if not k.endswith("DATABASE_URL")}
    stack = Stack(env=env, run_dir=tmp_path / "run", log_dir=tmp_path / "log", echo=False)
    port = free_port()
    try:
        stack.start_web(host="127.0.0.1", port=port, workers=1)
        stack.wait_ready(timeout=60)
        eventually(lambda: _get(port, "/healthz").status == 200, timeout=30, message="gunicorn to answer /healthz")
        yield port
    finally:
        stack.stop()


@pytest.fixture
def behind_proxy(tmp_path: Path) -> Iterator[int]:
    yield from _gunicorn(tmp_path, DJANGO_BEHIND_TLS_PROXY="true")


@pytest.fixture
def not_behind_proxy(tmp_path: Path) -> Iterator[int]:
    yield from _gunicorn(tmp_path)


@pytest.mark.e2e
def test_behind_a_tls_proxy_the_forwarded_https_is_trusted(behind_proxy: int) -> None:
    plain = _get(behind_proxy, "/dashboard/")
    assert plain.status == 301 and plain.getheader("Location") == f"https://{HOST}/dashboard/"
    assert plain.getheader("Strict-Transport-Security") is None  # HSTS is sent over HTTPS only
    forwarded = _get(behind_proxy, "/dashboard/", {"X-Forwarded-Proto": "https"})
    assert forwarded.status == 302 and forwarded.getheader("Location") == "/admin/login/?next=/dashboard/"
    assert forwarded.getheader("Strict-Transport-Security") == "max-age=3600; includeSubDomains; preload"
    assert _get(behind_proxy, "/healthz").status == 200  # a probe straight to gunicorn: no redirect


@pytest.mark.e2e
def test_without_the_switch_a_forwarded_header_is_not_trusted(not_behind_proxy: int) -> None:
    """A client's own X-Forwarded-Proto must not pass for HTTPS where no proxy vouches for it."""
    response = _get(not_behind_proxy, "/dashboard/", {"X-Forwarded-Proto": "https"})
    assert response.status == 301 and response.getheader("Location") == f"https://{HOST}/dashboard/"
