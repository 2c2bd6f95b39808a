"""One database per bounded context: tables, migrations and relations never cross aliases."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connections, router

from config import checks
from config.routers import APP_DATABASES

pytestmark = pytest.mark.django_db(databases="__all__")

LOCAL_APPS = ("orders", "customers", "sagas", "eventlog", "readmodels")


def test_every_local_apps_tables_exist_in_its_own_database_only() -> None:
    tables = {alias: set(connections[alias].introspection.table_names()) for alias in settings.DATABASES}
    for label in LOCAL_APPS:
        own = APP_DATABASES[label]
        for model in apps.get_app_config(label).get_models():
            table = model._meta.db_table
            assert table in tables[own], f"{table} missing from {own}"
            for alias, names in tables.items():
                if alias != own:
                    assert table not in names, f"{table} also exists in {alias}"
    # Django's own tables live on default only.
    assert "auth_user" in tables["default"]
    assert all("auth_user" not in tables[alias] for alias in LOCAL_APPS)


def test_reads_and_writes_are_routed_to_the_apps_alias() -> None:
    for label in LOCAL_APPS:
        for model in apps.get_app_config(label).get_models():
            assert router.db_for_read(model) == label
            assert router.db_for_write(model) == label
    assert router.db_for_write(apps.get_model("auth", "User")) == "default"


def test_migrations_are_allowed_only_on_the_apps_alias() -> None:
    for label in (*LOCAL_APPS, "auth", "admin", "sessions", "authtoken"):
        allowed = [alias for alias in settings.DATABASES if router.allow_migrate(alias, label)]
        assert allowed == [APP_DATABASES.get(label, "default")]


def test_a_relation_across_aliases_is_refused() -> None:
    from customers.models import Customer
    from orders.models import Order, OrderEvent

    assert router.allow_relation(Order(), Customer()) is False
    assert router.allow_relation(Order(), OrderEvent()) is True
    # Django refuses to assign an instance from another database to a relation.
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    user = User(username="x")
    user._state.db = "orders"  # an instance that came from another database
    token = Token()
    token._state.db = "default"
    with pytest.raises(ValueError, match="router prevents this relation"):
        token.user = user


def test_no_model_has_a_foreign_key_to_another_database() -> None:
    for model in apps.get_models():
        for field in model._meta.get_fields():
            if field.is_relation and field.related_model is not None and field.concrete:
                assert APP_DATABASES.get(model._meta.app_label, "default") == APP_DATABASES.get(field.related_model._meta.app_label, "default"), f"{model.__name__}.{field.name}"  # type: ignore[union-attr]  # by now a relation's related_model is a model class, never the string 'self'


def test_system_check_fails_for_a_local_app_without_a_route(monkeypatch: pytest.MonkeyPatch) -> None:
    assert [e for e in checks.check_every_local_app_is_routed() if e.id == "config.E001"] == []
    monkeypatch.delitem(APP_DATABASES, "sagas")
    errors = checks.check_every_local_app_is_routed()
    assert [e.id for e in errors] == ["config.E001"]
    assert "sagas" in errors[0].msg
