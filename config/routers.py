"""The one database router: each bounded context reads, writes and migrates on its own alias.

Django's own apps (auth, admin, sessions, tokens) live on ``default``. Nothing crosses aliases:
a relation between two databases is refused, and contexts refer to each other by UUID.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model

#: app label -> database alias. Every local app must appear here (system check config.E001).
APP_DATABASES: dict[str, str] = {
    "orders": "orders",
    "customers": "customers",
    "sagas": "sagas",
    "eventlog": "eventlog",
    "readmodels": "readmodels",
    # The project app holds commands, checks and the operators' audit log, beside Django's own.
    "config": "default",
}
DEFAULT_ALIAS = "default"


def database_for_app(app_label: str) -> str:
    """The alias an app lives on; Django's own and third-party apps live on ``default``."""
    return APP_DATABASES.get(app_label, DEFAULT_ALIAS)


def _database_of(obj: Model) -> str:
    """Where the instance was loaded from, else where its app lives."""
    return obj._state.db or database_for_app(obj._meta.app_label)


class BoundedContextRouter:
    """Route every model to its app's alias, and refuse anything that would cross aliases."""

    def db_for_read(self, model: type[Model], **hints: Any) -> str:
        return database_for_app(model._meta.app_label)

    def db_for_write(self, model: type[Model], **hints: Any) -> str:
        return database_for_app(model._meta.app_label)

    def allow_relation(self, obj1: Model, obj2: Model, **hints: Any) -> bool:
        return _database_of(obj1) == _database_of(obj2)

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool:
        return database_for_app(app_label) == db
