"""Rebuilding projections from the central log, without downtime.

A rebuild folds the whole log into *shadow* tables (same columns, ``<table>__rebuild``) while
the live tables keep serving and the live projection keeps running. All the projections being
rebuilt go in **one pass** over the log: each batch is read once (``log_scan``) and given to
every projection, in one transaction of the ``readmodels`` database that also moves each
projection's rebuild checkpoint (``<subscriber>#rebuild``), so an interrupted rebuild resumes
where it stopped.

Each projection keeps its rows in memory for the whole pass (``projections.State``): the
shadows start empty, so nothing is ever read back, and a batch writes only the rows it changed
(``COPY`` on PostgreSQL). The state is valid only while the checkpoint stands where the rebuild
left it; if another process moved it, or the state outgrows ``ROWS_IN_MEMORY``, it is dropped
and rows are read back on demand, as the live projection does.

Once the shadows have caught up with the head, one transaction of the ``readmodels`` database
locks the live checkpoints (pausing the live projections for that moment only), applies the last
events to the shadows, replaces the live rows with the shadows', and moves the live checkpoints.
Readers see the old rows until that commit and the new rows after it, never a half-built table.

``in_place=True`` is the simple, offline variant: empty the live tables and catch up again.
"""

from __future__ import annotations

import contextlib
import functools
import gc
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from django.apps.registry import Apps
from django.db import connections, models, transaction

from eventlog.domain import RecordedEvent
from eventlog.selectors import EVENTLOG_ALIAS, log_head, log_scan
from eventlog.subscriptions import Subscriber, subscribers_advance_batch
from readmodels import cache
from readmodels.models import ProjectionCheckpoint
from readmodels.projections import ALIAS, PROJECTIONS, Projection, State, Target, subscriber_name

SHADOW_SUFFIX = "__rebuild"
DEFAULT_BATCH_SIZE = 20_000
#: Rows per table a rebuild keeps in memory (about 1 KB each); above it, rows are read back.
ROWS_IN_MEMORY = 250_000
Progress = Callable[[int, int], None]  # (position reached, head of the log)

_shadow_apps = Apps()  # shadow models live outside the project's app registry and migrations
_shadow_models: dict[str, type[models.Model]] = {}


def shadow_model(model: type[models.Model], suffix: str = SHADOW_SUFFIX) -> type[models.Model]:
    """A model with ``model``'s columns on ``<table><suffix>``, with its primary key and no
    other index: a shadow is only written by the rebuild and read whole by the swap."""
    table = f"{model._meta.db_table}{suffix}"
    if table not in _shadow_models:
        attrs: dict[str, object] = {"__module__": __name__}
        for model_field in model._meta.local_fields:
            clone = model_field.clone()
            clone.db_index = False
            attrs[model_field.name] = clone
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


@dataclass
class Replay:
    """One projection folded from the log into ``target`` under the checkpoint ``name``, with
    its rows kept in memory between batches while the checkpoint stays where it left it."""

    projection: Projection
    target: Target
    name: str
    position: int
    state: State
    rows_in_memory: int = ROWS_IN_MEMORY
    events: int = 0
    resumed_from: int = 0
    subscriber: Subscriber = field(init=False)

    def __post_init__(self) -> None:
        self.resumed_from = self.position
        self.subscriber = Subscriber(name=self.name, alias=ALIAS, queue="readmodels", checkpoint_model=ProjectionCheckpoint, handle=self.apply, types=self.projection.types)

    def apply(self, events: list[RecordedEvent]) -> None:
        self.projection.fold(events, self.state)
        self.state.flush()
        if self.state.size() > self.rows_in_memory:
            self.state.forget()

    def locked_at(self, position: int) -> None:
        """The checkpoint row is locked at ``position``: is the state in memory still its?"""
        if position != self.position:
            self.state.forget()
            self.position = position


def _replay(projection: Projection, target: Target, name: str, *, empty: bool, rows_in_memory: int = ROWS_IN_MEMORY) -> Replay:
    position = ProjectionCheckpoint.objects.using(ALIAS).filter(subscriber=name).values_list("position", flat=True).first() or 0
    # Empty tables at position 0: the state holds every row there will be, from the start.
    state = State(projection, target, complete=empty and position == 0)
    return Replay(projection, target, name, position, state, rows_in_memory)


def _shadow_target(projection: Projection, suffix: str) -> Target:
    return Target(tables={model: shadow_model(model, suffix) for model in projection.tables}, live=False)


def _shadow_name(projection: Projection, suffix: str) -> str:
    return f"{subscriber_name(projection)}#{suffix.strip('_')}"


def shadow_prepare(projection: Projection, *, suffix: str = SHADOW_SUFFIX, fresh: bool = False, rows_in_memory: int = ROWS_IN_MEMORY) -> Replay:
    """Create the shadow tables (or keep them, to resume) and the rebuild's checkpoint."""
    target = _shadow_target(projection, suffix)
    name = _shadow_name(projection, suffix)
    checkpoints = ProjectionCheckpoint.objects.using(ALIAS)
    complete = all(_table_exists(shadow._meta.db_table) for shadow in target.tables.values())
    if fresh or not complete or not checkpoints.filter(subscriber=name).exists():
        shadow_drop(projection, suffix=suffix)
        with connections[ALIAS].schema_editor() as editor:
            for shadow in target.tables.values():
                editor.create_model(shadow)
        checkpoints.create(subscriber=name, position=0)
    return _replay(projection, target, name, empty=True, rows_in_memory=rows_in_memory)


def shadow_drop(projection: Projection, *, suffix: str = SHADOW_SUFFIX) -> None:
    target = _shadow_target(projection, suffix)
    with connections[ALIAS].schema_editor() as editor:
        for shadow in target.tables.values():
            if _table_exists(shadow._meta.db_table):
                editor.delete_model(shadow)
    ProjectionCheckpoint.objects.using(ALIAS).filter(subscriber=_shadow_name(projection, suffix)).delete()


@contextlib.contextmanager
def _bulk_allocation() -> Iterator[None]:
    """Fewer garbage collections while a replay allocates millions of small objects (events,
    rows) that are not cycles: CPython's default thresholds made the collector a third of the
    log reading time (bench/replay.py). Restored afterwards."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], 100_000), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


class _ReadAhead:
    """``log_scan`` that reads the next batch in a thread of its own while the current one is
    folded and written: the replay waits on the databases for about a third of its time (the
    writes, the commits, the swap), and the reading, which holds the GIL for much of its work,
    fits in those waits. The thread has its own database connection. A read is used only if its
    arguments are exactly the next call's; otherwise it is dropped and the read runs here.
    Positions become visible in order (``eventlog.relay.log_append``), so reading early returns
    a prefix of what reading later would, never a batch with a hole in it."""

    def __init__(self, fields: tuple[str, ...] | None = None) -> None:
        self.read = functools.partial(log_scan, fields=fields)
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="replay-read")
        self.ahead: tuple[tuple[int, int, int | None], Future[list[RecordedEvent]]] | None = None

    def __call__(self, *, after: int, limit: int, until: int | None = None) -> list[RecordedEvent]:
        ahead, self.ahead = self.ahead, None
        if ahead is not None and ahead[0] == (after, limit, until):
            events = ahead[1].result()
        else:
            if ahead is not None:
                ahead[1].result()  # one read at a time (and its errors are not lost)
            events = self.read(after=after, limit=limit, until=until)
        # Not inside a transaction of the log's database: the thread's connection would not
        # see what that transaction wrote, nor read from its snapshot.
        if len(events) == limit and (until is None or events[-1].position < until) and not connections[EVENTLOG_ALIAS].in_atomic_block:  # type: ignore[operator]
            following = (events[-1].position, limit, until)
            self.ahead = (following, self.executor.submit(self.read, after=following[0], limit=limit, until=until))  # type: ignore[arg-type]
        return events

    def close(self) -> None:
        if self.ahead is not None:
            with contextlib.suppress(Exception):
                self.ahead[1].result()
        self.executor.submit(connections.close_all).result()  # the thread's own connections
        self.executor.shutdown()


def _advance(replays: Sequence[Replay], *, batch_size: int, until: int, read: Callable[..., list[RecordedEvent]] = log_scan) -> int:
    """One batch for every replay, in one transaction; returns the events read."""
    with transaction.atomic(using=ALIAS):
        # Lock the checkpoints first, to check that each state in memory is still valid; the
        # batch below locks them again (a no-op) in the same order.
        names = [r.name for r in replays]
        positions = dict(ProjectionCheckpoint.objects.using(ALIAS).select_for_update().filter(subscriber__in=names).order_by("subscriber").values_list("subscriber", "position"))
        for replay in replays:
            replay.locked_at(positions.get(replay.name, 0))
        last, consumed = subscribers_advance_batch([r.subscriber for r in replays], batch_size=batch_size, until=until, read=read)
        for replay, count in zip(replays, consumed, strict=True):
            if count:
                replay.position = last
                replay.events += count
        return max(consumed, default=0)


def _fields(projections: Iterable[Projection]) -> tuple[str, ...] | None:
    """The event attributes the folds of these projections read (None: all of them)."""
    wanted: set[str] = set()
    for projection in projections:
        if projection.fields is None:
            return None
        wanted.update(projection.fields)
    return tuple(sorted(wanted))


def shadow_catch_up(replays: Replay | Sequence[Replay], *, batch_size: int = DEFAULT_BATCH_SIZE, until: int | None = None, progress: Progress | None = None) -> int:
    """Fold the log into the replays' tables up to the head (or ``until``), in one pass for
    all of them; returns the events read."""
    group = sorted([replays] if isinstance(replays, Replay) else replays, key=lambda r: r.name)
    head = log_head() if until is None else until
    consumed = 0
    read = _ReadAhead(_fields(r.projection for r in group))
    try:
        with _bulk_allocation():
            while min(r.position for r in group) < head:
                count = _advance(group, batch_size=batch_size, until=head, read=read)
                if count == 0:
                    break
                consumed += count
                if progress:
                    progress(min(r.position for r in group), head)
    finally:
        read.close()
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


def _names(names: str | Sequence[str]) -> list[Projection]:
    return [PROJECTIONS[name] for name in ([names] if isinstance(names, str) else names)]


def projections_rebuild(
    names: Sequence[str], *, in_place: bool = False, batch_size: int = DEFAULT_BATCH_SIZE, fresh: bool = False, progress: Progress | None = None, rows_in_memory: int = ROWS_IN_MEMORY
) -> list[RebuildReport]:
    """Rebuild these projections from the log in one pass; see the module docstring."""
    projections = _names(names)
    if in_place:
        return _rebuild_in_place(projections, batch_size=batch_size, progress=progress, rows_in_memory=rows_in_memory)
    replays = [shadow_prepare(p, fresh=fresh, rows_in_memory=rows_in_memory) for p in projections]
    shadow_catch_up(replays, batch_size=batch_size, progress=progress)
    rows: dict[str, dict[str, int]] = {}
    with transaction.atomic(using=ALIAS):
        # The swap: the live projections wait on these row locks for the moment of the swap.
        checkpoints = [ProjectionCheckpoint.objects.using(ALIAS).select_for_update().get_or_create(subscriber=subscriber_name(p))[0] for p in sorted(projections, key=subscriber_name)]
        shadow_catch_up(replays, batch_size=batch_size, progress=progress)
        for replay, checkpoint in zip(sorted(replays, key=lambda r: subscriber_name(r.projection)), checkpoints, strict=True):
            rows[replay.projection.name] = _copy_shadow_into_live(replay.projection, replay.target)
            checkpoint.position = replay.position
            checkpoint.save(update_fields=["position", "updated_at"])
        cache.invalidate_everything()  # marks now, a new epoch at commit
    for projection in projections:
        shadow_drop(projection)
    return [RebuildReport(projection=r.projection.name, events=r.events, position=r.position, rows=rows[r.projection.name], resumed_from=r.resumed_from, in_place=False) for r in replays]


def projection_rebuild(name: str, **options: object) -> RebuildReport:
    """Rebuild one projection (``projections_rebuild`` of one)."""
    return projections_rebuild([name], **options)[0]  # type: ignore[arg-type]


def _rebuild_in_place(projections: list[Projection], *, batch_size: int, progress: Progress | None, rows_in_memory: int) -> list[RebuildReport]:
    with transaction.atomic(using=ALIAS):
        for projection in sorted(projections, key=subscriber_name):
            checkpoint, _ = ProjectionCheckpoint.objects.using(ALIAS).select_for_update().get_or_create(subscriber=subscriber_name(projection))
            for live in projection.tables:
                live.objects.using(ALIAS).all().delete()
            checkpoint.position = 0
            checkpoint.save(update_fields=["position", "updated_at"])
        cache.invalidate_everything()  # marks now, a new epoch at commit
    # The live projections may run meanwhile: the checkpoint check in _advance notices it.
    replays = [_replay(p, Target(live=False), subscriber_name(p), empty=True, rows_in_memory=rows_in_memory) for p in projections]
    shadow_catch_up(replays, batch_size=batch_size, progress=progress)
    cache.invalidate_everything()
    return [
        RebuildReport(projection=r.projection.name, events=r.events, position=r.position, rows={m._meta.db_table: m.objects.using(ALIAS).count() for m in r.projection.tables}, resumed_from=0, in_place=True)
        for r in replays
    ]


__all__ = ["DEFAULT_BATCH_SIZE", "SHADOW_SUFFIX", "RebuildReport", "Replay", "projection_rebuild", "projections_rebuild", "shadow_catch_up", "shadow_drop", "shadow_prepare"]
