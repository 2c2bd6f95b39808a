"""The operators' audit log in the admin: read-only, since a record of what was done is never edited."""

from __future__ import annotations

from django.contrib import admin

from config.models import OperatorAction
from eventlog.admin import MultiDBModelAdmin


@admin.register(OperatorAction)
class OperatorActionAdmin(MultiDBModelAdmin):
    list_display = ("at", "username", "action", "target", "saga_id", "ok", "outcome")
    list_filter = ("action", "ok", ("at", admin.DateFieldListFilter))
    search_fields = ("target", "saga_id", "username")
