"""The orders context's tables in the admin, read-only (eventlog.admin explains why)."""

from __future__ import annotations

from django.contrib import admin

from eventlog.admin import CheckpointAdmin, EventAdmin, IdempotencyRecordAdmin, MultiDBModelAdmin, ParkedEventAdmin, ProcessedCommandAdmin
from orders.models import Order, OrderEvent, OrdersCheckpoint, OrdersIdempotencyRecord, OrdersParkedEvent, OrdersProcessedCommand


@admin.register(Order)
class OrderAdmin(MultiDBModelAdmin):
    list_display = ("id", "customer_id", "total", "state", "rejection_reason", "mode", "saga_id", "version", "updated_at")
    list_filter = ("state", "mode", "rejection_reason", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "customer_id", "saga_id")


admin.site.register(OrderEvent, EventAdmin)
admin.site.register(OrdersIdempotencyRecord, IdempotencyRecordAdmin)
admin.site.register(OrdersCheckpoint, CheckpointAdmin)
admin.site.register(OrdersProcessedCommand, ProcessedCommandAdmin)
admin.site.register(OrdersParkedEvent, ParkedEventAdmin)
