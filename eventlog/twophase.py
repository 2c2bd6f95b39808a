"""Two-phase commit branches: a context's ordinary use case, run inside a PostgreSQL prepared
transaction on a connection of its own, so a coordinator can commit two databases as one.

Django runs its connections in autocommit, where psycopg refuses two-phase transactions; so a
branch opens a *second* Django connection to the context's database, turns autocommit off,
``tpc_begin``s on its psycopg connection and, for the duration of the work, stands in for the
context's connection in this thread. The context's use case then runs unchanged (its domain,
its repository, its outbox events): one copy of the rules for every mode. Its
``transaction.atomic`` blocks nest inside the two-phase transaction (Django's documented
behaviour when autocommit is off: no BEGIN, no COMMIT), and its after-commit hooks (the relay's
wake-up) run when ``COMMIT PREPARED`` succeeds.

Contexts register their branch work here by name (``participant_register``); a coordinator
runs it by name (``Branch.run``), so it imports no context, as with commands and events.

Recovery reads ``pg_prepared_xacts`` through psycopg's ``tpc_recover`` (filtered to this
alias's database: the view shows the whole cluster) and finishes a transaction on a fresh
connection (``COMMIT PREPARED`` must run in the database that prepared it). A global id that
does not exist is reported as :class:`NoSuchPrepared`; what that means depends on the
coordinator's log, which is the coordinator's business, not the kernel's.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
from django.conf import settings
from django.db import DatabaseError, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

#: What PostgreSQL says when a prepared transaction's gid does not exist (SQLSTATE 42704).
_UNDEFINED_OBJECT = psycopg.errors.UndefinedObject

_participants: dict[str, tuple[str, Callable[..., Any]]] = {}


def participant_register(name: str, *, alias: str, work: Callable[..., Any]) -> None:
    """Make ``work(**kwargs)`` runnable as branch ``name`` on the database ``alias`` (at start-up).

    ``work`` is the context's use case: it must run inside ``transaction.atomic(using=alias)``
    (it does, through the branch) and must not commit on its own.
    """
    _participants[name] = (alias, work)


def participant(name: str) -> tuple[str, Callable[..., Any]]:
    try:
        return _participants[name]
    except KeyError:
        raise LookupError(f"no two-phase participant {name!r} is registered (is its context installed?)") from None


def run_local(name: str, *, lock_timeout: float = 0, **kwargs: Any) -> Any:
    """Run a participant's work in an ordinary transaction of its database (no 2PC).

    ``lock_timeout`` (seconds, PostgreSQL): give up on a row lock after that long (a live
    branch of another transaction may hold it) instead of waiting for as long as it lives.
    """
    alias, work = participant(name)
    with transaction.atomic(using=alias):
        connection = connections[alias]
        if lock_timeout > 0 and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{int(lock_timeout * 1000)}ms"])
        return work(**kwargs)


# --- availability -----------------------------------------------------------------------------

_available: set[str] = set()


def two_phase_problem(alias: str) -> str | None:
    """Why ``alias`` cannot take part in a two-phase commit, or ``None`` when it can.

    A positive answer is remembered for the process (``max_prepared_transactions`` changes only
    with a server restart; a server restarted with 0 makes PREPARE fail, which aborts); a
    negative one is asked again each time, so fixing the server needs no restart here.
    """
    if alias in _available:
        return None
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return f"the {alias!r} database is {connection.display_name}, which has no prepared transactions"
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_prepared_transactions")
        (value,) = cursor.fetchone()
    if int(value) <= 0:
        return f"the {alias!r} database's PostgreSQL server has max_prepared_transactions = {value}"
    _available.add(alias)
    return None


# --- branches --------------------------------------------------------------------------------


class BranchError(Exception):
    """A branch could not do what it was asked (its database refused or went away)."""


class NoSuchPrepared(Exception):
    """``COMMIT/ROLLBACK PREPARED`` found no prepared transaction with that gid."""


@contextmanager
def _standing_in(alias: str, wrapper: BaseDatabaseWrapper) -> Iterator[None]:
    """``connections[alias]`` is ``wrapper`` in this thread while the block runs."""
    previous = connections[alias]
    connections[alias] = wrapper
    try:
        yield
    finally:
        connections[alias] = previous


#: A branch connection is opened once per thread and alias and kept while it is healthy: a
#: backend costs milliseconds to start, a two-phase commit only a few more than a plain one.
_spare = threading.local()


def _spares() -> dict[str, BaseDatabaseWrapper]:
    """This thread's kept branch connections, by alias."""
    return _spare.__dict__.setdefault("wrappers", {})


def _spare_wrapper(alias: str) -> BaseDatabaseWrapper | None:
    spares = _spares()
    wrapper = spares.pop(alias, None)
    if wrapper is not None and wrapper.connection is not None and not wrapper.connection.closed and wrapper.connection.info.transaction_status == psycopg.pq.TransactionStatus.IDLE:
        return wrapper
    if wrapper is not None:
        wrapper.close()
    return None


def spare_connections_close() -> None:
    """Close this thread's kept branch connections (tests, before dropping their databases)."""
    spares = _spares()
    for wrapper in spares.values():
        wrapper.close()
    spares.clear()


def _new_wrapper(alias: str) -> BaseDatabaseWrapper:
    wrapper = connections.create_connection(alias)
    wrapper.ensure_connection()
    lock_timeout = float(getattr(settings, "TWO_PC_LOCK_TIMEOUT_SECONDS", 0))
    if lock_timeout > 0:
        # A branch waits this long for a row lock (one held by an in-doubt transaction, say)
        # before it gives up and the coordinator aborts, instead of hanging its caller.
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, false)", [f"{int(lock_timeout * 1000)}ms"])
    wrapper.set_autocommit(False)
    return wrapper


def _give_back(alias: str, wrapper: BaseDatabaseWrapper) -> None:
    spares = _spares()
    old = spares.pop(alias, None)
    if old is not None:
        old.close()
    spares[alias] = wrapper


class Branch:
    """One database's part of a two-phase transaction with global id ``gid``.

    ``begin`` → ``run`` (any number of participant works) → ``prepare`` → ``commit``; or
    ``rollback`` at any point before the commit (prepared or not). Not thread-safe.
    """

    def __init__(self, *, alias: str, gid: str) -> None:
        self.alias = alias
        self.gid = gid
        self.state = "new"
        self._wrapper: BaseDatabaseWrapper | None = None

    @property
    def _raw(self) -> psycopg.Connection[Any]:
        assert self._wrapper is not None and self._wrapper.connection is not None
        return self._wrapper.connection

    def begin(self) -> None:
        self._wrapper = _spare_wrapper(self.alias)
        if self._wrapper is not None:
            try:
                self._raw.tpc_begin(self.gid)
                self.state = "active"
                return
            except psycopg.Error:
                self._discard()  # a kept connection the server dropped (a restart): open anew
        try:
            self._wrapper = _new_wrapper(self.alias)
            self._raw.tpc_begin(self.gid)
        except (psycopg.Error, DatabaseError) as exc:
            self._discard()
            raise BranchError(f"{self.alias}: could not begin: {exc}") from exc
        self.state = "active"

    def run(self, name: str, **kwargs: Any) -> Any:
        alias, work = participant(name)
        if alias != self.alias:
            raise LookupError(f"participant {name!r} works on {alias!r}, not on this branch's {self.alias!r}")
        assert self._wrapper is not None and self.state == "active"
        with _standing_in(self.alias, self._wrapper), transaction.atomic(using=self.alias, savepoint=False):
            return work(**kwargs)

    def prepare(self) -> None:
        """``PREPARE TRANSACTION``: from here the branch survives a crash of anyone, holding its locks."""
        try:
            self._raw.tpc_prepare()
        except psycopg.Error as exc:
            self._discard()  # PostgreSQL rolled the transaction back
            raise BranchError(f"{self.alias}: PREPARE TRANSACTION failed: {exc}") from exc
        self.state = "prepared"

    def commit(self) -> None:
        """``COMMIT PREPARED`` on the connection that prepared, then its after-commit hooks."""
        assert self._wrapper is not None and self.state == "prepared"
        try:
            self._raw.tpc_commit()
        except psycopg.Error as exc:
            self._discard()
            raise BranchError(f"{self.alias}: COMMIT PREPARED failed: {exc}") from exc
        self.state = "committed"
        self._wrapper.run_and_clear_commit_hooks()
        self._release()

    def rollback(self) -> None:
        """Undo the branch, prepared or not; a branch that never began has nothing to undo."""
        if self.state in ("new", "rolled back"):
            self.state = "rolled back"
            return
        if self._wrapper is None:  # lost its connection: a prepared one is finished by gid
            if self.state == "prepared":
                finish_prepared(self.alias, self.gid, commit=False)
            self.state = "rolled back"
            return
        try:
            self._raw.tpc_rollback()
        except psycopg.Error as exc:
            prepared = self.state == "prepared"
            self._discard()  # an open, unprepared transaction dies with its connection
            if prepared:
                raise BranchError(f"{self.alias}: ROLLBACK PREPARED failed: {exc}") from exc
        self.state = "rolled back"
        if self._wrapper is not None:
            self._wrapper.run_on_commit = []
            self._wrapper.needs_rollback = False
            self._release()

    def _release(self) -> None:
        if self._wrapper is not None:
            _give_back(self.alias, self._wrapper)
            self._wrapper = None

    def _discard(self) -> None:
        if self._wrapper is not None:
            try:
                self._wrapper.close()
            except Exception:  # noqa: BLE001  (a broken connection may refuse even to close)
                pass
            self._wrapper = None


# --- recovery --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    """One prepared transaction in one database (a row of ``pg_prepared_xacts``)."""

    alias: str
    gid: str
    prepared_at: dt.datetime
    owner: str
    database: str


def prepared_list(alias: str) -> list[Prepared]:
    """The prepared transactions in ``alias``'s database (not the rest of the cluster)."""
    connection = connections[alias]
    if connection.vendor != "postgresql":
        return []
    database = connection.settings_dict["NAME"]
    try:
        if connection.in_atomic_block:
            with _fresh(alias) as raw:
                xids = raw.tpc_recover()
        else:  # the thread's own connection, in autocommit: a plain SELECT, nothing left open
            connection.ensure_connection()
            xids = connection.connection.tpc_recover()
    except psycopg.Error as exc:
        raise BranchError(f"{alias}: could not list prepared transactions: {exc}") from exc
    return [Prepared(alias=alias, gid=str(x), prepared_at=x.prepared, owner=x.owner or "", database=x.database or "") for x in xids if x.database == database]  # type: ignore[arg-type]  # psycopg fills Xid.prepared for every recovered Xid, None only for new ones


@contextmanager
def _fresh(alias: str) -> Iterator[psycopg.Connection[Any]]:
    """A new autocommit connection to ``alias``'s database, closed afterwards."""
    wrapper = connections.create_connection(alias)
    try:
        wrapper.ensure_connection()
        yield wrapper.connection
    finally:
        wrapper.close()


def finish_prepared(alias: str, gid: str, *, commit: bool) -> None:
    """``COMMIT PREPARED`` or ``ROLLBACK PREPARED`` ``gid`` on a new connection to ``alias``.

    Raises :class:`NoSuchPrepared` when there is no such prepared transaction (already finished,
    or never prepared); what that means is the caller's to decide from its log.
    """
    with _fresh(alias) as raw:
        try:
            if commit:
                raw.tpc_commit(gid)
            else:
                raw.tpc_rollback(gid)
        except _UNDEFINED_OBJECT:
            raise NoSuchPrepared(f"{alias}: no prepared transaction {gid!r}") from None
        except psycopg.Error as exc:
            raise BranchError(f"{alias}: {'COMMIT' if commit else 'ROLLBACK'} PREPARED {gid!r} failed: {exc}") from exc
