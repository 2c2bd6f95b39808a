"""The orders context's tables in the admin, read-only (eventlog.admin explains why)."""

from __future__ import annotations

from django.contrib import admin

from eventlog.admin import CheckpointAdmin, EventAdmin, MultiDBModelAdmin, ParkedEventAdmin, ProcessedCommandAdmin
from orders.models import Order, OrderEvent, OrdersCheckpoint, OrdersIdempotencyRecord, OrdersParkedEvent, OrdersProcessedCommand


@admin.register(Order)
class OrderAdmin(MultiDBModelAdmin):
    list_display = ("id", "customer_id", "total", "state", "rejection_reason", "mode", "saga_id", "version", "updated_at")
    list_filter = ("state", "mode", "rejection_reason", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "customer_id", "saga_id")


@admin.register(OrdersIdempotencyRecord)
class OrdersIdempotencyRecordAdmin(MultiDBModelAdmin):
    list_display = ("user_id", "key", "status_code", "created_at")
    search_fields = ("key",)


admin.site.register(OrderEvent, EventAdmin)
admin.site.register(OrdersCheckpoint, CheckpointAdmin)
admin.site.register(OrdersProcessedCommand, ProcessedCommandAdmin)
admin.site.register(OrdersParkedEvent, ParkedEventAdmin)
