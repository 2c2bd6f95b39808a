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

Once the shadows have caught up with the head, their indexes are built (PostgreSQL, under
staged names; ``_swap_prepare``), and one transaction of the ``readmodels`` database locks the
live checkpoints (pausing the live projections for that moment only), applies the last events
to the shadows, drops each live table and renames its shadow in its place (``_rename_into_live``:
milliseconds, nothing copied; other databases copy the rows instead), and moves the live
checkpoints. Readers see the old rows until that commit and the new rows after it, never a
half-built table.

``in_place=True`` is the simple, offline variant: empty the live tables and catch up again.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from django.apps.registry import Apps
from django.db import OperationalError, connections, models, transaction

from eventlog.domain import RecordedEvent
from eventlog.selectors import EVENTLOG_ALIAS, log_head, log_scan
from eventlog.subscriptions import Subscriber, subscribers_advance_batch
from readmodels import cache
from readmodels.models import ProjectionCheckpoint
from readmodels.projections import ALIAS, PROJECTIONS, Projection, State, Target, subscriber_name

SHADOW_SUFFIX = "__rebuild"
#: Events per transaction. Larger batches rewrite less: a row changed in several batches (a
#: customer's credit) is written once per batch, and each batch costs its checkpoint locks and
#: commit. With 50,000 instead of 20,000 a replay of 200,000 events on PostgreSQL wrote about 40%
#: less and took 2.8 to 2.9 s instead of 3.4 s or more (bench/replay.py, a loaded machine). A
#: batch and the one read ahead hold a few hundred bytes per event.
DEFAULT_BATCH_SIZE = 50_000
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
            clone = model_field.clone()  # type: ignore[attr-defined]  # Field.clone() is Django API that django-stubs lacks
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
        if len(events) == limit and (until is None or events[-1].position < until) and not connections[EVENTLOG_ALIAS].in_atomic_block:  # type: ignore[operator]  # an event read from the log always has its position
            following = (events[-1].position, limit, until)
            self.ahead = (following, self.executor.submit(self.read, after=following[0], limit=limit, until=until))  # type: ignore[assignment]  # an event read from the log always has its position
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
    """The swap where tables cannot be renamed in a transaction: replace the live rows."""
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


#: The swap by renaming takes the live tables' locks without waiting (``_lock_live_tables``),
#: trying again every ``SWAP_LOCK_RETRY`` seconds for ``SWAP_LOCK_WAIT`` seconds, then rolls back
#: and starts over, ``SWAP_ATTEMPTS`` times in all.
SWAP_LOCK_WAIT = 5.0
SWAP_LOCK_RETRY = 0.01
SWAP_ATTEMPTS = 3
_INDEX_DEF = re.compile(r"^(CREATE (?:UNIQUE )?INDEX) (\S+) ON (\S+) ")


def _renames_tables(connection: Any) -> bool:
    return connection.vendor in ("postgresql", "sqlite")


def _live_indexes(cursor: Any, connection: Any, table: str) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of each index of ``table`` but its primary key: exactly
    what the database holds (Django's, the migrations', an operator's)."""
    if connection.vendor == "postgresql":
        cursor.execute(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "WHERE x.indrelid = %s::regclass AND NOT x.indisprimary ORDER BY i.relname", [connection.ops.quote_name(table)])
    else:
        cursor.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = %s AND sql IS NOT NULL ORDER BY name", [table])
    return list(cursor.fetchall())


def _staged_name(name: str) -> str:
    return f"rb_{hashlib.md5(name.encode(), usedforsecurity=False).hexdigest()[:20]}"


def _swap_prepare(replays: Sequence[Replay]) -> None:
    """Before the swap, outside its transaction (the live tables keep serving): on PostgreSQL,
    build each live table's indexes on its shadow under staged names, and ANALYZE the shadows,
    so that the swap itself only renames. SQLite cannot rename an index: there the swap creates
    them (its readers keep reading their snapshot meanwhile, WAL)."""
    connection = connections[ALIAS]
    if connection.vendor != "postgresql":
        return
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        for replay in replays:
            for live in replay.projection.tables:
                shadow = quote(replay.target.table(live)._meta.db_table)
                for name, definition in _live_indexes(cursor, connection, live._meta.db_table):
                    staged = quote(_staged_name(name))
                    cursor.execute(f"DROP INDEX IF EXISTS {staged}")  # a swap that was interrupted
                    cursor.execute(_INDEX_DEF.sub(lambda m, staged=staged, shadow=shadow: f"{m[1]} {staged} ON {shadow} ", definition, count=1))  # type: ignore[misc]  # a lambda binding the loop's names as defaults
                # Statistics from the first query on: a quick sample (3,000 rows instead of
                # 30,000: a fifth of the time), which autovacuum refines soon after the swap.
                cursor.execute("SET default_statistics_target = 10")
                try:
                    cursor.execute(f"ANALYZE {shadow}")
                finally:
                    cursor.execute("RESET default_statistics_target")


def _rename_into_live(projection: Projection, target: Target, rows: dict[str, int | None]) -> dict[str, int]:
    """The swap by renaming, in the caller's transaction: each live table is dropped and its
    shadow renamed in its place, with the live table's index and constraint names, its indexes
    and its privileges. Nothing is copied: the swap takes milliseconds, not a rewrite of every
    row (a seventh of a replay when it copied).

    What holds on to the live tables, and why this is safe:

    * readers take ACCESS SHARE; the DROP needs ACCESS EXCLUSIVE. Waiting for it while holding
      another live table's lock could deadlock with a reader that reads two tables in one
      transaction, and would queue every new reader behind the swap; so all the locks are taken
      first, at once and without waiting (``_lock_live_tables``), and the DDL that follows waits
      for nothing: readers wait for milliseconds at most. PostgreSQL looks a table's name up
      again after waiting for its lock, so a reader that queued reads the new table. A READ
      COMMITTED reader (Django's default) sees the old rows before the commit and the new ones
      after it, never a mix; SQLite readers (WAL) keep their snapshot, and SQLite has one writer.
    * the live projections: their batch locks its checkpoint row first, and the caller holds
      those locks, so no projection is writing the live tables meanwhile; after the commit they
      write to the new tables, by name.
    * nothing refers to these tables by a foreign key, and Django and psycopg refer to them by
      name (PostgreSQL re-plans a cached statement whose table changed).

    Not carried over (the project uses none of them): triggers, comments, row security
    policies, column privileges, a logical-replication publication that names the table.
    Constraints beyond the model's fields are: ``_swap`` copies the rows instead then.
    """
    connection = connections[ALIAS]
    quote = connection.ops.quote_name
    counts = {}
    with connection.cursor() as cursor:
        for live_model in projection.tables:
            live, shadow = live_model._meta.db_table, target.table(live_model)._meta.db_table
            indexes = _live_indexes(cursor, connection, live)
            grants: list[tuple[str, str]] = []
            names: list[tuple[str, str, str]] = []  # (kind, shadow's name, live's name)
            if connection.vendor == "postgresql":
                cursor.execute(
                    "SELECT grantee, privilege_type FROM information_schema.role_table_grants "
                    "WHERE table_schema = current_schema() AND table_name = %s AND grantee <> current_user", [live])
                grants = list(cursor.fetchall())
                # PostgreSQL names a table's own constraints after it (<table>_pkey, <table>_<column>_check).
                cursor.execute("SELECT conname, contype FROM pg_constraint WHERE conrelid = %s::regclass", [quote(shadow)])
                names = [("INDEX" if kind == "p" else "CONSTRAINT", name, live + name.removeprefix(shadow)) for name, kind in cursor.fetchall() if name.startswith(shadow)]
            count = rows.get(live)
            if count is None:
                cursor.execute(f"SELECT COUNT(*) FROM {quote(shadow)}")
                count = cursor.fetchone()[0]
            cursor.execute(f"DROP TABLE {quote(live)}")
            cursor.execute(f"ALTER TABLE {quote(shadow)} RENAME TO {quote(live)}")
            for kind, old, new in names:
                if kind == "INDEX":
                    cursor.execute(f"ALTER INDEX {quote(old)} RENAME TO {quote(new)}")
                else:
                    cursor.execute(f"ALTER TABLE {quote(live)} RENAME CONSTRAINT {quote(old)} TO {quote(new)}")
            for name, definition in indexes:
                if connection.vendor == "postgresql":
                    cursor.execute(f"ALTER INDEX {quote(_staged_name(name))} RENAME TO {quote(name)}")
                else:
                    cursor.execute(definition)
            for grantee, privilege in grants:
                cursor.execute(f"GRANT {privilege} ON {quote(live)} TO {'PUBLIC' if grantee == 'PUBLIC' else quote(grantee)}")
            counts[live] = count
    return counts


def _lock_live_tables(tables: Sequence[str]) -> None:
    """ACCESS EXCLUSIVE on every one of ``tables`` (PostgreSQL), in one statement that does not
    wait (NOWAIT, in a savepoint); tried again every ``SWAP_LOCK_RETRY`` seconds while readers
    hold one of them, for ``SWAP_LOCK_WAIT`` seconds, then ``OperationalError``. Never holding
    one lock while waiting for another: no deadlock with readers, and no reader queues behind
    a swap that cannot proceed."""
    connection = connections[ALIAS]
    quote = connection.ops.quote_name
    deadline = time.monotonic() + SWAP_LOCK_WAIT
    while True:
        try:
            with transaction.atomic(using=ALIAS), connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {', '.join(quote(t) for t in tables)} IN ACCESS EXCLUSIVE MODE NOWAIT")
            return
        except OperationalError as exc:
            if not _lock_timed_out(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(SWAP_LOCK_RETRY)


def _swap(replays: Sequence[Replay]) -> dict[str, dict[str, int]]:
    """Replace each projection's live tables with its shadows, in the caller's transaction."""
    connection = connections[ALIAS]
    rows = {}
    # Decided before the locks are taken: readers are not kept waiting while it is.
    renamed = {replay.name: _renames_tables(connection) and _same_constraints(replay.projection, replay.target) for replay in replays}
    if connection.vendor == "postgresql":
        _lock_live_tables([live._meta.db_table for replay in replays for live in replay.projection.tables])
    for replay in replays:
        if renamed[replay.name]:
            known = {live._meta.db_table: (len(replay.state[live].rows) if replay.state[live].complete else None) for live in replay.projection.tables}
            rows[replay.projection.name] = _rename_into_live(replay.projection, replay.target, known)
            # Its shadow tables are live tables now: the rebuild's checkpoint goes with them.
            ProjectionCheckpoint.objects.using(ALIAS).filter(subscriber=replay.name).delete()
        else:
            rows[replay.projection.name] = _copy_shadow_into_live(replay.projection, replay.target)
    return rows


def _constraints(cursor: Any, table: str) -> list[tuple[Any, ...]]:
    """What a table's constraints check, whatever their names; indexes aside (``_live_indexes``
    carries them over)."""
    found = connections[ALIAS].introspection.get_constraints(cursor, table)
    return sorted(
        (tuple(c["columns"] or ()), bool(c["primary_key"]), bool(c["unique"]), bool(c["check"]), c["foreign_key"] or ())
        for c in found.values() if not c["index"] or c["primary_key"]
    )


def _same_constraints(projection: Projection, target: Target) -> bool:
    """Does each shadow hold the constraints of its live table? A shadow is made from the
    model's fields; a constraint the live table has beyond them (a ``Meta.constraints``, one an
    operator added) would be lost by renaming, so then the rows are copied instead."""
    with connections[ALIAS].cursor() as cursor:
        return all(_constraints(cursor, live._meta.db_table) == _constraints(cursor, target.table(live)._meta.db_table) for live in projection.tables)


def _lock_timed_out(exc: BaseException) -> bool:
    return getattr(exc.__cause__, "sqlstate", None) == "55P03"  # lock_not_available


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
    _swap_prepare(replays)
    for attempt in range(1, SWAP_ATTEMPTS + 1):
        try:
            rows = _swap_in(projections, replays, batch_size=batch_size, progress=progress)
            break
        except OperationalError as exc:  # readers held a live table for SWAP_LOCK_WAIT seconds
            if attempt == SWAP_ATTEMPTS or not _lock_timed_out(exc):
                raise
    for projection in projections:
        shadow_drop(projection)
    return [RebuildReport(projection=r.projection.name, events=r.events, position=r.position, rows=rows[r.projection.name], resumed_from=r.resumed_from, in_place=False) for r in replays]


def _swap_in(projections: list[Projection], replays: list[Replay], *, batch_size: int, progress: Progress | None) -> dict[str, dict[str, int]]:
    """The swap's transaction: lock the live checkpoints (the live projections wait on these
    row locks for the moment of the swap), apply the last events to the shadows, swap them in,
    move the live checkpoints."""
    with transaction.atomic(using=ALIAS):
        checkpoints = [ProjectionCheckpoint.objects.using(ALIAS).select_for_update().get_or_create(subscriber=subscriber_name(p))[0] for p in sorted(projections, key=subscriber_name)]
        shadow_catch_up(replays, batch_size=batch_size, progress=progress)
        ordered = sorted(replays, key=lambda r: subscriber_name(r.projection))
        rows = _swap(ordered)
        for replay, checkpoint in zip(ordered, checkpoints, strict=True):
            checkpoint.position = replay.position
            checkpoint.save(update_fields=["position", "updated_at"])
        cache.invalidate_everything()  # marks now, a new epoch at commit
    return rows


def projection_rebuild(name: str, **options: Any) -> RebuildReport:
    """Rebuild one projection (``projections_rebuild`` of one)."""
    return projections_rebuild([name], **options)[0]


def _rebuild_in_place(projections: list[Projection], *, batch_size: int, progress: Progress | None, rows_in_memory: int) -> list[RebuildReport]:
    with transaction.atomic(using=ALIAS):
        for projection in sorted(projections, key=subscriber_name):
            checkpoint, _ = ProjectionCheckpoint.objects.using(ALIAS).select_for_update().get_or_create(subscriber=subscriber_name(projection))
            for live in projection.tables:
                live._default_manager.using(ALIAS).all().delete()
            checkpoint.position = 0
            checkpoint.save(update_fields=["position", "updated_at"])
        cache.invalidate_everything()  # marks now, a new epoch at commit
    # The live projections may run meanwhile: the checkpoint check in _advance notices it.
    replays = [_replay(p, Target(live=False), subscriber_name(p), empty=True, rows_in_memory=rows_in_memory) for p in projections]
    shadow_catch_up(replays, batch_size=batch_size, progress=progress)
    cache.invalidate_everything()
    return [
        RebuildReport(projection=r.projection.name, events=r.events, position=r.position, rows={m._meta.db_table: m._default_manager.using(ALIAS).count() for m in r.projection.tables}, resumed_from=0, in_place=True)
        for r in replays
    ]


__all__ = ["DEFAULT_BATCH_SIZE", "SHADOW_SUFFIX", "RebuildReport", "Replay", "projection_rebuild", "projections_rebuild", "shadow_catch_up", "shadow_drop", "shadow_prepare"]
