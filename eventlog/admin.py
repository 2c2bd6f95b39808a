"""Django admin over every database: the kernel's base class, and the central log's admin.

``MultiDBModelAdmin`` (Django's multi-database admin recipe) sends every query of a model's
admin to the database that model lives on, as the router says, and refuses to fall back to
``default``. It is also read-only: every table here is written by a context's services (an
event, a state row that must equal the fold of its events, a checkpoint that moves with its
effects), so an edit in the admin would bypass the domain. Changes go through services: the
dashboard (``/dashboard/``) and the management commands. Each context registers its own tables
in its own ``admin.py`` with this base.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import router
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from eventlog.models import LogEvent


class MultiDBModelAdmin(admin.ModelAdmin):
    """Browse (list, search, filter, view) one context's table on its own database; no writes."""

    actions = None  # no bulk delete
    list_per_page = 50
    show_full_result_count = False  # no COUNT(*) of a whole event table on every page

    @property
    def using(self) -> str:
        alias = router.db_for_read(self.model)
        assert alias, f"the router has no database for {self.model._meta.label}"
        return alias

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).using(self.using)

    def has_add_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: Model, form: Any, change: bool) -> None:
        raise PermissionError("the admin is read-only: changes go through the contexts' services")

    def delete_model(self, request: HttpRequest, obj: Model) -> None:
        raise PermissionError("the admin is read-only: changes go through the contexts' services")


class EventAdmin(MultiDBModelAdmin):
    """An append-only event table (a context's outbox, or the central log)."""

    list_display: tuple[str, ...] = ("type", "stream_type", "stream_id", "version", "occurred_at", "correlation_id", "saga_id")
    list_filter = ("type", "stream_type", ("occurred_at", admin.DateFieldListFilter))
    search_fields = ("event_id", "stream_id", "correlation_id", "saga_id")


class ParkedEventAdmin(MultiDBModelAdmin):
    list_display = ("subscriber", "position", "event_type", "saga_id", "attempts", "parked_at", "resolved_at", "error")
    list_filter = ("subscriber", "event_type", ("parked_at", admin.EmptyFieldListFilter), ("resolved_at", admin.EmptyFieldListFilter))
    search_fields = ("event_id", "correlation_id", "saga_id")


class CheckpointAdmin(MultiDBModelAdmin):
    list_display = ("subscriber", "position", "updated_at")
    search_fields = ("subscriber",)


class IdempotencyRecordAdmin(MultiDBModelAdmin):
    list_display = ("user_id", "key", "status_code", "created_at")
    search_fields = ("key",)


class ProcessedCommandAdmin(MultiDBModelAdmin):
    list_display = ("command_id", "name", "saga_id", "processed_at")
    list_filter = ("name", ("processed_at", admin.DateFieldListFilter))
    search_fields = ("command_id", "saga_id")


@admin.register(LogEvent)
class LogEventAdmin(EventAdmin):
    list_display = ("position", *EventAdmin.list_display, "recorded_at")
