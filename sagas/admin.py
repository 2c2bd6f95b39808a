"""The sagas context's tables in the admin, read-only (eventlog.admin explains why): operators
act on sagas through the dashboard's actions, which call the engine's services."""

from __future__ import annotations

from django.contrib import admin

from eventlog.admin import CheckpointAdmin, IdempotencyRecordAdmin, MultiDBModelAdmin
from sagas.models import CoordinatorLogEntry, IdempotencyRecord, SagaInstance, SagaLogEntry, SagasCheckpoint, SagaStep, TraceEvent


@admin.register(SagaInstance)
class SagaInstanceAdmin(MultiDBModelAdmin):
    list_display = ("id", "type", "mode", "state", "definition_version", "subject_id", "created_at", "updated_at", "last_error")
    list_filter = ("state", "mode", "type", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "subject_id", "correlation_id")


@admin.register(SagaStep)
class SagaStepAdmin(MultiDBModelAdmin):
    list_display = ("saga_id", "index", "name", "kind", "status", "attempts", "started_at", "due_at", "error")
    list_filter = ("status", "kind", "name", ("started_at", admin.DateFieldListFilter))
    search_fields = ("saga__id", "command_id")


@admin.register(SagaLogEntry)
class SagaLogEntryAdmin(MultiDBModelAdmin):
    list_display = ("at", "saga_id", "step", "kind", "event", "detail")
    list_filter = ("event", "kind", ("at", admin.DateFieldListFilter))
    search_fields = ("saga__id",)


@admin.register(TraceEvent)
class TraceEventAdmin(MultiDBModelAdmin):
    list_display = ("position", "saga_id", "type", "context", "stream_id", "occurred_at")
    list_filter = ("type", "context", ("occurred_at", admin.DateFieldListFilter))
    search_fields = ("saga__id", "event_id", "stream_id")


@admin.register(CoordinatorLogEntry)
class CoordinatorLogEntryAdmin(MultiDBModelAdmin):
    """The 2PC coordinator's log: append-only, like the sagas' own log."""

    list_display = ("at", "saga_id", "phase", "branch", "outcome", "actor", "detail")
    list_filter = ("phase", "outcome", "actor", ("at", admin.DateFieldListFilter))
    search_fields = ("saga__id",)


admin.site.register(SagasCheckpoint, CheckpointAdmin)
admin.site.register(IdempotencyRecord, IdempotencyRecordAdmin)
