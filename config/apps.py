"""The project app: project-wide management commands and system checks; it has no tables.

It is also where the composition root plugs the project's pieces into the kernel's interfaces,
so that the kernel (eventlog) never imports the wiring.
"""

from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "config"
    label = "config"
    verbose_name = "Project"

    def ready(self) -> None:
        from config import checks  # noqa: F401  (registers the checks)
        from config.fastcache import add as cache_add
        from eventlog.messaging import window_flags_use

        # Wake-up windows as SET NX PX on the shared Redis, to the millisecond.
        window_flags_use(cache_add)
