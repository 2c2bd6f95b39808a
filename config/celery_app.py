"""The Celery application every worker and beat process runs (``celery -A config.celery_app``)."""

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

from config.broker import use_for_redis_urls

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
use_for_redis_urls()  # before any connection resolves its transport

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The default app of every thread: the kernel sends through ``celery.current_app``, which is
# thread-local and, in a thread that never set one (the wake-up notifier), falls back to this.
app.set_default()


@worker_init.connect
def _tasks_skip_connection_health_checks(**_: Any) -> None:
    """A worker does not check a reused database connection before each task (``SELECT 1`` per
    alias per task: about nine round trips per orchestrated saga). A connection the server
    closed meanwhile (a restart, a failover) fails the one task that meets it with a transient
    error, and that task's work is not lost: a command answers ``error, transient`` and the
    orchestrator sends it again; a reply is retried by Celery (sagas/tasks.py); the relay and
    the subscribers run again at the next wake-up or sweep. Django then drops the broken
    connection, and the next task opens a new one. ``DATABASE_CONN_HEALTH_CHECKS=true`` in
    a worker's environment keeps the checks. Runs in the worker's main process before its pool
    starts, so every pool child inherits it."""
    if "DATABASE_CONN_HEALTH_CHECKS" in os.environ:
        return
    from django.db import connections

    for alias in connections:
        connections.settings[alias]["CONN_HEALTH_CHECKS"] = False
        connections[alias].health_check_enabled = False  # type: ignore[attr-defined]  # set by connect(); the stubs do not list it
