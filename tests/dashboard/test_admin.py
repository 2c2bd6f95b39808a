"""The Django admin over all six databases: every registered table is browsable (list, search by
id, filters, one row) on its own alias, and no admin write is possible."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.db import router
from django.db.models import Model
from django.test import Client

from config.models import OperatorAction
from eventlog.admin import MultiDBModelAdmin
from sagas.models import SagaInstance
from tests.dashboard.conftest import advance_everything, choreographed_order
from tests.sagas.test_engine import reply, start

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

PROJECT_APPS = ("orders", "customers", "sagas", "eventlog", "readmodels", "config")


def registered() -> list[tuple[type[Model], MultiDBModelAdmin]]:
    return [(model, model_admin) for model, model_admin in admin.site._registry.items() if model._meta.app_label in PROJECT_APPS]  # type: ignore[misc]  # AdminSite._registry is private: the stubs type its keys loosely


def test_every_table_of_every_context_is_registered_with_the_multi_database_base() -> None:
    from django.apps import apps

    for label in PROJECT_APPS:
        for model in apps.get_app_config(label).get_models():
            assert model in admin.site._registry, f"{model._meta.label} is not in the admin"
            assert isinstance(admin.site._registry[model], MultiDBModelAdmin), model._meta.label


def test_each_admin_reads_its_model_on_its_own_database_and_no_admin_writes(client: Client) -> None:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("root", "root@localhost", "x" * 16)
    client.force_login(user)
    flow = choreographed_order()
    saga = start()
    reply(saga)
    advance_everything()
    OperatorAction.objects.create(at=saga.created_at, user=user, username="root", action="saga-retry", target=str(saga.id), saga_id=saga.id, ok=True)
    for model, model_admin in registered():
        alias = router.db_for_read(model)
        assert model_admin.using == alias
        url = f"/admin/{model._meta.app_label}/{model._meta.model_name}/"
        listing = client.get(url)
        assert listing.status_code == 200, url
        assert client.get(url, {"q": str(flow["order_id"])}).status_code == 200, url
        assert client.get(f"{url}add/").status_code == 403, url
        row = model._default_manager.using(alias).first()
        if row is not None:
            change = f"{url}{row.pk}/change/"
            page = client.get(change)
            assert page.status_code == 200 and b'name="_save"' not in page.content, change  # view only
            assert client.post(change, {}).status_code == 403, change
            assert client.post(f"{url}{row.pk}/delete/", {"post": "yes"}).status_code == 403, change
            assert model._default_manager.using(alias).filter(pk=row.pk).exists()


def test_sagas_are_searchable_by_id_and_filterable_by_state_mode_and_type(client: Client) -> None:
    from django.contrib.auth import get_user_model

    client.force_login(get_user_model().objects.create_superuser("root", "root@localhost", "x" * 16))
    running, done = start(), start()
    for _ in range(3):
        reply(done)
    url = "/admin/sagas/sagainstance/"
    found = client.get(url, {"q": str(running.id)}).content.decode()
    assert str(running.id) in found and str(done.id) not in found
    subject = SagaInstance.objects.using("sagas").get(id=done.id).subject_id
    assert str(done.id) in client.get(url, {"q": str(subject)}).content.decode()
    completed = client.get(url, {"state": "COMPLETED", "mode": "orchestration", "type": "create_order"}).content.decode()
    assert str(done.id) in completed and str(running.id) not in completed
