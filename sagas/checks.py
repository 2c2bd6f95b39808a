"""System checks of the sagas context: every saga definition keeps the rules of its step roles."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.checks import CheckMessage, Error, register

from sagas.definitions import DEFINITIONS, definition_problems


@register()
def check_saga_definitions(app_configs: list[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """sagas.E001: a retriable step with a compensation, or an uncompensatable step before the
    pivot, would let a saga undo part of a transaction that had already succeeded."""
    return [
        Error(f"Saga definition {definition.type} v{definition.version}: {problem}.", hint="See the step roles in sagas/definitions.py.", obj=f"{definition.type} v{definition.version}", id="sagas.E001")
        for definition in DEFINITIONS.values()
        for problem in definition_problems(definition)
    ]


@register()
def check_trace_follows_the_declared_flows(app_configs: list[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """sagas.E002: the trace subscribed before the contexts declared their flows would see none."""
    from eventlog.choreography import flow_event_types
    from eventlog.subscriptions import subscriber_get
    from sagas.trace import SUBSCRIBER

    if subscriber_get(SUBSCRIBER).types != flow_event_types() or not flow_event_types():
        return [Error("The choreography trace does not follow every declared flow event.", hint="List 'sagas' after 'orders' and 'customers' in INSTALLED_APPS.", id="sagas.E002")]
    return []
