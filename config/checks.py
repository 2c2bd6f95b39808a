"""System checks that keep the bounded contexts on their own databases."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.apps import AppConfig, apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, register

from config.routers import APP_DATABASES


def _is_local(app_config: AppConfig) -> bool:
    return Path(app_config.path).resolve().is_relative_to(Path(settings.BASE_DIR).resolve()) and not (
        Path(app_config.path).resolve().is_relative_to(Path(settings.BASE_DIR).resolve() / ".venv")
    )


@register("database")
def check_every_local_app_is_routed(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """config.E001: a local app without a route would silently land on ``default``."""
    errors: list[CheckMessage] = []
    for app_config in app_configs or apps.get_app_configs():
        if _is_local(app_config) and app_config.label not in APP_DATABASES:
            errors.append(
                Error(
                    f"Local app '{app_config.label}' has no database route.",
                    hint="Add it to APP_DATABASES in config/routers.py.",
                    obj=app_config.name,
                    id="config.E001",
                )
            )
    for label, alias in APP_DATABASES.items():
        if alias not in settings.DATABASES:
            errors.append(
                Error(
                    f"App '{label}' is routed to database alias '{alias}', which is not configured.",
                    hint="Add the alias to DATABASES (config/settings.py).",
                    id="config.E002",
                )
            )
    return errors


@register()
def check_sweep_below_visibility_timeout(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """config.E003: a periodic job slower than the visibility timeout would be delivered twice."""
    if settings.SWEEP_INTERVAL_SECONDS * 2 >= settings.CELERY_BROKER_VISIBILITY_TIMEOUT:
        return [
            Error(
                "SWEEP_INTERVAL_SECONDS must be well below CELERY_BROKER_VISIBILITY_TIMEOUT.",
                id="config.E003",
            )
        ]
    return []
