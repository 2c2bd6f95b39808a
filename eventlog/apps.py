from django.apps import AppConfig


class EventlogConfig(AppConfig):
    """The shared kernel: event envelope, outbox persistence, the central log and its relay."""

    name = "eventlog"
    verbose_name = "Event log"
