"""The read models in the admin, read-only (eventlog.admin explains why): they are rebuilt
from the log (``replay_events``, the dashboard's projections page), never edited."""

from __future__ import annotations

from django.contrib import admin

from eventlog.admin import CheckpointAdmin, MultiDBModelAdmin
from readmodels.models import CustomerCredit, CustomerName, CustomerOrderState, OrderSummary, ProjectionCheckpoint


@admin.register(OrderSummary)
class OrderSummaryAdmin(MultiDBModelAdmin):
    list_display = ("id", "customer_id", "customer_name", "total", "state", "rejection_reason", "mode", "saga_id", "version", "updated_at")
    list_filter = ("state", "mode", "rejection_reason", ("created_at", admin.DateFieldListFilter))
    search_fields = ("id", "customer_id", "saga_id")


@admin.register(CustomerCredit)
class CustomerCreditAdmin(MultiDBModelAdmin):
    list_display = ("id", "name", "credit_limit", "credit_reserved", "available_credit", "version", "updated_at")
    list_filter = (("updated_at", admin.DateFieldListFilter),)
    search_fields = ("id", "name")


@admin.register(CustomerName)
class CustomerNameAdmin(MultiDBModelAdmin):
    list_display = ("id", "name")
    search_fields = ("id", "name")


@admin.register(CustomerOrderState)
class CustomerOrderStateAdmin(MultiDBModelAdmin):
    list_display = ("order_id", "customer_id", "state")
    list_filter = ("state",)
    search_fields = ("order_id", "customer_id")


admin.site.register(ProjectionCheckpoint, CheckpointAdmin)
