"""Rebuilding projections from the central log, without downtime.

A rebuild folds the whole log into *shadow* tables (same columns, ``<table>__rebuild``) while
the live tables keep serving and the live projection keeps running. Its progress is a
checkpoint of its own (``<subscriber>#rebuild``), written in the same transaction as each
batch of shadow rows, so an interrupted rebuild resumes where it stopped. Once the shadow has
caught up with the head, one transaction of the ``readmodels`` database locks the live
checkpoint (pausing the live projection for that moment only), applies the last events to the
shadow, replaces the live rows with the shadow's, and moves the live checkpoint. Readers see
the old rows until that commit and the new rows after it, never a half-built table.

``in_place=True`` is the simple, offline variant: empty the live tables and catch up again.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from django.apps.registry import Apps
from django.db import connections, models, transaction

from eventlog.selectors import log_head
from eventlog.subscriptions import Subscriber, subscriber_advance_batch, subscriber_position
from readmodels import cache
from readmodels.models import ProjectionCheckpoint
from readmodels.projections import ALIAS, PROJECTIONS, Projection, Target, subscriber_name

SHADOW_SUFFIX = "__rebuild"
Progress = Callable[[int, int], None]  # (position reached, head of the log)

_shadow_apps = Apps()  # shadow models live outside the project's app registry and migrations
_shadow_models: dict[str, type[models.Model]] = {}


def shadow_model(model: type[models.Model], suffix: str = SHADOW_SUFFIX) -> type[models.Model]:
    """A model with ``model``'s columns on ``<table><suffix>``, without its named indexes."""
    table = f"{model._meta.db_table}{suffix}"
    if table not in _shadow_models:
        attrs: dict[str, object] = {"__module__": __name__}
        for field in model._meta.local_fields:
            attrs[field.name] = field.clone()
        attrs["Meta"] = type("Meta", (), {"db_table": table, "app_label": "readmodels", "apps": _shadow_apps, "managed": False})
        _shadow_models[table] = type(f"{model.__name__}{suffix.strip('_').title()}", (models.Model,), attrs)
    return _shadow_models[table]


def _table_exists(table: str) -> bool:
    return table in connections[ALIAS].introspection.table_names()


@dataclass(frozen=True)
class RebuildReport:
    projection: str
    events: int
    position: int
    rows: dict[str, int]
    resumed_from: int
    in_place: bool


def _shadow_target(projection: Projection, suffix: str) -> Target:
    return Target(tables={model: shadow_model(model, suffix) for model in projection.tables}, live=False)


def _shadow_subscriber(projection: Projection, target: Target, suffix: str) -> Subscriber:
    return Subscriber(
        name=f"{subscriber_name(projection)}#{suffix.strip('_')}",
        alias=ALIAS,
        queue="readmodels",
        checkpoint_model=ProjectionCheckpoint,
        handle=functools.partial(projection.project, target=target),
        types=projection.types,
    )


def shadow_prepare(projection: Projection, *, suffix: str = SHADOW_SUFFIX, fresh: bool = False) -> tuple[Target, Subscriber]:
    """Create the shadow tables (or keep them, to resume) and the rebuild's checkpoint."""
    target = _shadow_target(projection, suffix)
    subscriber = _shadow_subscriber(projection, target, suffix)
    checkpoints = ProjectionCheckpoint.objects.using(ALIAS)
    complete = all(_table_exists(shadow._meta.db_table) for shadow in target.tables.values())
    if fresh or not complete or not checkpoints.filter(subscriber=subscriber.name).exists():
        shadow_drop(projection, suffix=suffix)
        with connections[ALIAS].schema_editor() as editor:
            for shadow in target.tables.values():
                editor.create_model(shadow)
        checkpoints.create(subscriber=subscriber.name, position=0)
    return target, subscriber


def shadow_drop(projection: Projection, *, suffix: str = SHADOW_SUFFIX) -> None:
    target = _shadow_target(projection, suffix)
    with connections[ALIAS].schema_editor() as editor:
        for shadow in target.tables.values():
            if _table_exists(shadow._meta.db_table):
                editor.delete_model(shadow)
    ProjectionCheckpoint.objects.using(ALIAS).filter(subscriber=_shadow_subscriber(projection, target, suffix).name).delete()


def shadow_catch_up(subscriber: Subscriber, *, batch_size: int, until: int | None = None, progress: Progress | None = None) -> int:
    """Fold the log into the shadow up to the head (or ``until``); returns events consumed."""
    consumed = 0
    head = log_head() if until is None else until
    position = subscriber_position(subscriber)
    while position < head:
        count = subscriber_advance_batch(subscriber, batch_size=batch_size, until=head)
        if count == 0:
            break
        consumed += count
        position = subscriber_position(subscriber)
        if progress:
            progress(position, head)
    return consumed


def _copy_shadow_into_live(projection: Projection, target: Target) -> dict[str, int]:
    counts = {}
    connection = connections[ALIAS]
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for live in projection.tables:
            shadow = target.table(live)
            columns = ", ".join(quote(f.column) for f in live._meta.local_fields)
            cursor.execute(f"DELETE FROM {quote(live._meta.db_table)}")
            cursor.execute(f"INSERT INTO {quote(live._meta.db_table)} ({columns}) SELECT {columns} FROM {quote(shadow._meta.db_table)}")
            counts[live._meta.db_table] = cursor.rowcount
    return counts


def projection_rebuild(name: str, *, in_place: bool = False, batch_size: int = 5000, fresh: bool = False, progress: Progress | None = None) -> RebuildReport:
    """Rebuild one projection from the log; see the module docstring for the two variants."""
    projection = PROJECTIONS[name]
    live_name = subscriber_name(projection)
    if in_place:
        return _rebuild_in_place(projection, live_name, batch_size=batch_size, progress=progress)

    target, subscriber = shadow_prepare(projection, fresh=fresh)
    resumed_from = subscriber_position(subscriber)
    consumed = shadow_catch_up(subscriber, batch_size=batch_size, progress=progress)
    with transaction.atomic(using=ALIAS):
        # The swap: the live projection waits on this row lock for the moment of the swap.
        live_checkpoint, _ = ProjectionCheckpoint.objects.using(ALIAS).select_for_update().get_or_create(subscriber=live_name)
        consumed += shadow_catch_up(subscriber, batch_size=batch_size, progress=progress)
        position = subscriber_position(subscriber)
        rows = _copy_shadow_into_live(projection, target)
        live_checkpoint.position = position
        live_checkpoint.save(update_fields=["position", "updated_at"])
        transaction.on_commit(cache.invalidate_everything, using=ALIAS)
    shadow_drop(projection)
    return RebuildReport(projection=name, events=consumed, position=position, rows=rows, resumed_from=resumed_from, in_place=False)


def _rebuild_in_place(projection: Projection, live_name: str, *, batch_size: int, progress: Progress | None) -> RebuildReport:
    from eventlog.subscriptions import subscriber_get

    with transaction.atomic(using=ALIAS):
        checkpoint, _ = ProjectionCheckpoint.objects.using(ALIAS).select_for_update().get_or_create(subscriber=live_name)
        for live in projection.tables:
            live.objects.using(ALIAS).all().delete()
        checkpoint.position = 0
        checkpoint.save(update_fields=["position", "updated_at"])
        transaction.on_commit(cache.invalidate_everything, using=ALIAS)
    live = subscriber_get(live_name)
    batched = Subscriber(**{**live.__dict__, "handle": functools.partial(projection.project, target=Target(live=False))})
    consumed = shadow_catch_up(batched, batch_size=batch_size, progress=progress)
    cache.invalidate_everything()
    rows = {model._meta.db_table: model.objects.using(ALIAS).count() for model in projection.tables}
    return RebuildReport(projection=projection.name, events=consumed, position=subscriber_position(live), rows=rows, resumed_from=0, in_place=True)
