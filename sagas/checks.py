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
