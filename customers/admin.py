"""The customers context's tables in the admin, read-only (eventlog.admin explains why)."""

from __future__ import annotations

from django.contrib import admin

from customers.models import ChoreographedOrder, CreditReservation, Customer, CustomerEvent, CustomersCheckpoint, CustomersParkedEvent, CustomersProcessedCommand
from eventlog.admin import CheckpointAdmin, EventAdmin, MultiDBModelAdmin, ParkedEventAdmin, ProcessedCommandAdmin


@admin.register(Customer)
class CustomerAdmin(MultiDBModelAdmin):
    list_display = ("id", "name", "credit_limit", "credit_reserved", "version", "updated_at")
    list_filter = (("created_at", admin.DateFieldListFilter),)
    search_fields = ("id", "name")


@admin.register(CreditReservation)
class CreditReservationAdmin(MultiDBModelAdmin):
    list_display = ("order_id", "customer_id", "amount", "reserved_at")
    list_filter = (("reserved_at", admin.DateFieldListFilter),)
    search_fields = ("order_id", "customer_id")


@admin.register(ChoreographedOrder)
class ChoreographedOrderAdmin(MultiDBModelAdmin):
    list_display = ("order_id", "customer_id", "total")
    search_fields = ("order_id", "customer_id")


admin.site.register(CustomerEvent, EventAdmin)
admin.site.register(CustomersCheckpoint, CheckpointAdmin)
admin.site.register(CustomersProcessedCommand, ProcessedCommandAdmin)
admin.site.register(CustomersParkedEvent, ParkedEventAdmin)
