"""System checks of the sagas context: every saga definition keeps the rules of its step roles."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning, register

from sagas.definitions import DEFINITIONS, definition_problems


@register()
def check_saga_definitions(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """sagas.E001: a retriable step with a compensation, or an uncompensatable step before the
    pivot, would let a saga undo part of a transaction that had already succeeded."""
    return [
        Error(f"Saga definition {definition.type} v{definition.version}: {problem}.", hint="See the step roles in sagas/definitions.py.", obj=f"{definition.type} v{definition.version}", id="sagas.E001")
        for definition in DEFINITIONS.values()
        for problem in definition_problems(definition)
    ]


@register()
def check_trace_follows_the_declared_flows(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """sagas.E002: the trace subscribed before the contexts declared their flows would see none."""
    from eventlog.choreography import flow_event_types
    from eventlog.subscriptions import subscriber_get
    from sagas.trace import SUBSCRIBER

    if subscriber_get(SUBSCRIBER).types != flow_event_types() or not flow_event_types():
        return [Error("The choreography trace does not follow every declared flow event.", hint="List 'sagas' after 'orders' and 'customers' in INSTALLED_APPS.", id="sagas.E002")]
    return []


@register()
def check_two_phase_node_name(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """sagas.E003: the node name goes into every global transaction id, between colons."""
    from sagas.coordinator import NODE_NAME

    if not NODE_NAME.match(str(settings.TWO_PC_NODE_NAME)):
        return [Error(f"TWO_PC_NODE_NAME {settings.TWO_PC_NODE_NAME!r} is not 1 to 64 letters, digits, '.', '_' or '-'.", id="sagas.E003")]
    return []


@register("database")
def check_two_phase_available(app_configs: Sequence[AppConfig] | None = None, databases: Any = None, **kwargs: Any) -> list[CheckMessage]:
    """sagas.W001: PostgreSQL with max_prepared_transactions = 0 answers mode "2pc" with 400.

    SQLite (the embedded default) has no 2PC by design, which the README says; no warning.
    """
    from django.db import connections

    from sagas.coordinator import BRANCHES, two_phase_problems

    # Like Django's own database checks: only when asked (`check --database`, `migrate`), so a
    # plain `check` (`check --deploy` in CI, say) opens no connection.
    if not databases or not set(BRANCHES) & set(databases):
        return []
    if any(connections[alias].vendor != "postgresql" for alias in BRANCHES):
        return []
    problems = two_phase_problems()
    if problems:
        return [Warning("Mode '2pc' is off: " + "; ".join(problems) + ".", hint="Set max_prepared_transactions above zero (for example 64) in postgresql.conf and restart the server.", id="sagas.W001")]
    return []
