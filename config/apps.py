"""The project app: project-wide management commands and system checks; it has no tables."""

from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "config"
    label = "config"
    verbose_name = "Project"

    def ready(self) -> None:
        from config import checks  # noqa: F401  (registers the checks)
