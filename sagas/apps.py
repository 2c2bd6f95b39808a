from django.apps import AppConfig


class SagasConfig(AppConfig):
    """The sagas context: orchestrator, choreography trace and 2PC coordinator log."""

    name = "sagas"
    verbose_name = "Sagas"

    def ready(self) -> None:
        from sagas import checks, trace  # noqa: F401  (checks registers the system checks)

        trace.register()
