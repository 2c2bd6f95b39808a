"""Settings for every process of the project, read from the environment in this one place.

Unset variables mean the embedded default: one SQLite file per database alias under ``var/``
and the embedded Redis that ``config.launcher`` starts on a unix socket.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("VAR_DIR", default=str(BASE_DIR / "var"))).resolve()
DATA_DIR = VAR_DIR / "db"
RUN_DIR = VAR_DIR / "run"

env = environ.Env()

SECRET_KEY = env.str(
    "DJANGO_SECRET_KEY",
    default="django-insecure-embedded-default-only-never-use-in-production-1f0c9a",
)
DEBUG = env.bool("DJANGO_DEBUG", default=False)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])

# --- Applications -------------------------------------------------------------------------
# The five bounded contexts each own one database alias (config/routers.py).
BOUNDED_CONTEXTS = ("orders", "customers", "sagas", "eventlog", "readmodels")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "config.apps.ProjectConfig",
    "eventlog.apps.EventlogConfig",
    "customers.apps.CustomersConfig",
    "orders.apps.OrdersConfig",
    "sagas.apps.SagasConfig",
    "readmodels.apps.ReadmodelsConfig",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.api.BodySizeLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Databases ----------------------------------------------------------------------------
DATABASE_ALIASES = ("default", *BOUNDED_CONTEXTS)


def _sqlite(alias: str) -> dict[str, Any]:
    """One SQLite file per alias, in WAL mode so readers never block the single writer.

    ``transaction_mode=IMMEDIATE`` takes the write lock at BEGIN: a read-then-write
    transaction cannot deadlock on the lock upgrade, it waits (up to ``timeout``) instead.
    """
    for folder in (DATA_DIR, VAR_DIR / "test"):
        folder.mkdir(parents=True, exist_ok=True)
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(DATA_DIR / f"{alias}.sqlite3"),
        "OPTIONS": {
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        },
        "TEST": {"NAME": str(VAR_DIR / "test" / f"{alias}.sqlite3")},
    }


def _database(alias: str) -> dict[str, Any]:
    variable = "DATABASE_URL" if alias == "default" else f"{alias.upper()}_DATABASE_URL"
    if variable not in env:
        return _sqlite(alias)
    config: dict[str, Any] = env.db_url(variable)
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # A SQLite file named by URL (tests hand their workers these) keeps the same options.
        return {**_sqlite(alias), "NAME": config["NAME"], "TEST": {"NAME": config["NAME"]}}
    if config["ENGINE"] in ("django.db.backends.postgresql", "django.db.backends.postgresql_psycopg2"):
        config["ENGINE"] = "django.db.backends.postgresql"
        config["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=60)
        # Each web request checks a reused connection first (one SELECT 1 per alias it uses).
        # Celery workers do not (config/celery_app.py): there a dead connection fails one task,
        # which is retried, and the check would cost a round trip on every task.
        config["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", default=True)
    return config


DATABASES = {alias: _database(alias) for alias in DATABASE_ALIASES}
DATABASE_ROUTERS = ["config.routers.BoundedContextRouter"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static -------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns at start-up when it is missing
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
LOGIN_URL = "admin:login"

# --- Celery -------------------------------------------------------------------------------
# The broker only wakes things up; the databases hold every piece of pending work, and the
# periodic sweep finds what a lost message left behind.
EMBEDDED_BROKER_SOCKET = RUN_DIR / "redis.sock"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=f"redis+socket://{EMBEDDED_BROKER_SOCKET}")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TIMEZONE = "UTC"
CELERY_ENABLE_UTC = True
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A message that is not acknowledged within this time is delivered again; every countdown in
# the project stays far below it (config.checks enforces the bound on the sweep).
CELERY_BROKER_VISIBILITY_TIMEOUT = env.int("CELERY_BROKER_VISIBILITY_TIMEOUT", default=900)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT}
CELERY_TASK_DEFAULT_QUEUE = "eventlog"
# Every task name starts with its context's label, and goes to that context's queue.
CELERY_TASK_ROUTES = {f"{context}.*": {"queue": context} for context in BOUNDED_CONTEXTS}
CELERY_BEAT_SCHEDULE_FILENAME = str(RUN_DIR / "celerybeat-schedule")
SWEEP_INTERVAL_SECONDS = env.float("SWEEP_INTERVAL_SECONDS", default=2.0)
CELERY_BEAT_SCHEDULE = {
    "eventlog-sweep": {
        "task": "eventlog.sweep",
        "schedule": SWEEP_INTERVAL_SECONDS,
        "options": {"expires": max(SWEEP_INTERVAL_SECONDS * 5, 10)},
    },
    "sagas-sweep": {
        "task": "sagas.sweep",
        "schedule": SWEEP_INTERVAL_SECONDS,
        "options": {"expires": max(SWEEP_INTERVAL_SECONDS * 5, 10)},
    },
}

# --- Sagas --------------------------------------------------------------------------------
#: Multiplies every saga step timeout and retry backoff (tests and demos run faster with 0.1).
SAGA_TIME_SCALE = env.float("SAGA_TIME_SCALE", default=1.0)
#: How long a compensatable step or the pivot keeps retrying a transient failure (a database or
#: the broker unreachable, no reply by the deadline) before the saga gives it up and
#: compensates. An outage shorter than this never decides a saga. Scaled by SAGA_TIME_SCALE.
SAGA_OUTAGE_BUDGET_SECONDS = env.float("SAGA_OUTAGE_BUDGET_SECONDS", default=900.0)

# --- Admission control (orders.workflows) --------------------------------------------------
#: New orchestrated or choreographed orders are refused (503, Retry-After) while this many of
#: that mode are on their way: about five seconds of what two cores carry, below the 10 s step
#: timeout, so a burst is turned away instead of timing out and being retried. 0 turns it off.
ADMISSION_MAX_IN_FLIGHT = env.int("ADMISSION_MAX_IN_FLIGHT", default=200)
ADMISSION_RETRY_AFTER_SECONDS = env.float("ADMISSION_RETRY_AFTER_SECONDS", default=2.0)
#: How often each process recounts (the count is one indexed query).
ADMISSION_RECOUNT_SECONDS = env.float("ADMISSION_RECOUNT_SECONDS", default=0.2)

# --- Two-phase commit (mode "2pc", sagas/coordinator.py) ----------------------------------
#: This deployment's name in every global transaction id: recovery touches only prepared
#: transactions that carry it. Give each deployment sharing a PostgreSQL server its own, and
#: never rename it while transactions are in doubt (they would no longer be recognised as ours).
TWO_PC_NODE_NAME = env.str("TWO_PC_NODE_NAME", default="node1")
#: Presumed abort waits this long after a transaction began before rolling back one that was
#: never decided, so a coordinator still preparing is not undone from under it (Narayana's
#: orphanSafetyInterval is 20 s).
TWO_PC_SAFETY_INTERVAL_SECONDS = env.float("TWO_PC_SAFETY_INTERVAL_SECONDS", default=30.0)
#: A decided transaction is left to its coordinator this long after its decision (it is
#: committing it), so the sweep does not finish it from under a live coordinator.
TWO_PC_DECIDED_GRACE_SECONDS = env.float("TWO_PC_DECIDED_GRACE_SECONDS", default=2.0)
#: How long a 2PC branch waits for a row lock (one held by an in-doubt transaction, say) before
#: the coordinator aborts (0: wait as long as the lock is held).
TWO_PC_LOCK_TIMEOUT_SECONDS = env.float("TWO_PC_LOCK_TIMEOUT_SECONDS", default=10.0)

# --- Cache --------------------------------------------------------------------------------
# Read-model queries are cached, and every process must see one cache (a projection in a worker
# invalidates what the web processes serve), so the default is the broker's Redis, database 1.


def _cache_url_from_broker(broker_url: str) -> str | None:
    if broker_url.startswith("redis+socket://"):
        return "unix://" + broker_url.removeprefix("redis+socket://").split("?")[0] + "?db=1"
    if broker_url.startswith(("redis://", "rediss://")):
        base, _, _db = broker_url.rpartition("/")
        return f"{base}/1" if base.count("/") >= 2 else f"{broker_url.rstrip('/')}/1"
    return None


_cache_url = env.str("CACHE_URL", default=env.str("REDIS_URL", default="")) or _cache_url_from_broker(CELERY_BROKER_URL)
if _cache_url and _cache_url.startswith("unix://"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _cache_url}}
elif _cache_url:
    CACHES = {"default": env.cache_url_config(_cache_url)}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Event log ----------------------------------------------------------------------------
RELAY_BATCH_SIZE = env.int("RELAY_BATCH_SIZE", default=1000)
SUBSCRIPTION_BATCH_SIZE = env.int("SUBSCRIPTION_BATCH_SIZE", default=1000)
# Relay and subscriber wake-ups: at most one per this window, across every process (eventlog.messaging).
WAKE_COALESCE_SECONDS = env.float("WAKE_COALESCE_SECONDS", default=0.25)

# --- Read side ----------------------------------------------------------------------------
#: How long a read with ?min_version= waits for the projection to catch up.
READ_YOUR_WRITES_WAIT_SECONDS = env.float("READ_YOUR_WRITES_WAIT_SECONDS", default=3.0)
#: How many such reads may wait at once on one machine (each holds a sync web worker while it
#: waits); beyond it a read answers at once, with ``X-Read-Your-Writes: not-waited``. Keep it
#: below the machine's web workers: the default leaves the second of two workers always free.
READ_YOUR_WRITES_MAX_WAITERS = env.int("READ_YOUR_WRITES_MAX_WAITERS", default=1)
#: /readyz reports ``lagging`` (in its body; the status stays 200) when a projection is further
#: behind the log head than this.
READY_MAX_PROJECTION_LAG = env.int("READY_MAX_PROJECTION_LAG", default=10000)

# --- Dashboard ----------------------------------------------------------------------------
#: The overview's summary is computed at most once per this many seconds across every process,
#: however many browsers poll it (config/dashboard/summary.py); its page polls at this rate.
DASHBOARD_REFRESH_SECONDS = env.float("DASHBOARD_REFRESH_SECONDS", default=3.0)

# --- HTTP API -----------------------------------------------------------------------------
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=64 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
#: How long a web process remembers a valid API token (config/authentication.py): a revoked
#: token can be accepted by other processes for up to this long. 0 turns the cache off.
API_TOKEN_CACHE_SECONDS = env.float("API_TOKEN_CACHE_SECONDS", default=5.0)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "config.authentication.CachedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # IsAuthenticated, with anonymous calls counted by the anon rate before they get 401.
    "DEFAULT_PERMISSION_CLASSES": ["config.throttling.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer", "rest_framework.renderers.BrowsableAPIRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "config.api_schema.ApiSchema",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_THROTTLE_CLASSES": [
        "config.throttling.AnonRateThrottle",
        "config.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("API_THROTTLE_ANON", default="60/minute"),
        "user": env.str("API_THROTTLE_USER", default="100000/minute"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Sagas, event sourcing and CQRS: reference API",
    "DESCRIPTION": "Commands change state and emit events; queries read denormalised read models.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    # The OpenAPI links from each write to what it wrote (config/api_schema.py).
    "ENUM_NAME_OVERRIDES": {
        "OrderModeEnum": ["orchestration", "choreography", "2pc"],
        "AsyncOrderModeEnum": ["orchestration", "choreography"],
        "TwoPhaseOrderModeEnum": ["2pc"],
    },
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "config.api_schema.add_links"],
}

# --- HTTPS, on whenever DEBUG is off -------------------------------------------------------
# Production is HTTPS only: redirect plain HTTP, send HSTS, keep the cookies off plain HTTP
# (`manage.py check --deploy` is clean with these). The processes that serve plain HTTP on a
# local address say so explicitly with DJANGO_LOCAL_HTTP=true: the launcher (`make run`, and
# every test and benchmark that starts the system through config.launcher.Stack), the test
# settings and the benchmarks. A deployment never sets it.
LOCAL_HTTP = env.bool("DJANGO_LOCAL_HTTP", default=False)
_https = not DEBUG and not LOCAL_HTTP
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=_https)
# A probe that talks to gunicorn directly (not through the TLS proxy) gets its answer, not a 301.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=_https)
CSRF_COOKIE_SECURE = env.bool("DJANGO_SECURE_COOKIES", default=_https)
# One hour, Django's advice for a first deployment (HSTS cannot be taken back before it runs
# out): raise it to a year (31536000) once every subdomain serves HTTPS. The HSTS preload list
# accepts only a year or more, so `preload` in the header commits to nothing until then.
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=3600 if _https else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=_https)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=_https)
# Behind a proxy that terminates TLS, gunicorn sees plain HTTP: trust the proxy's
# X-Forwarded-Proto, or every request would be redirected forever. Only set it when the proxy
# sets that header on every request and drops any copy a client sent.
if env.bool("DJANGO_BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}
