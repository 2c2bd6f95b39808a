"""The project's URLs, plus ``bare/<uuid>/``: a plain Django view doing one primary-key select of
the order read model (no DRF, no authentication, no cache), the reference for bench/query.py."""

from __future__ import annotations

import uuid

from django.http import HttpRequest, JsonResponse
from django.urls import path

from config.urls import urlpatterns as project_urlpatterns
from readmodels.models import OrderSummary


def bare_order(request: HttpRequest, pk: uuid.UUID) -> JsonResponse:
    row = OrderSummary.objects.using("readmodels").filter(pk=pk).values().first()
    if row is None:
        return JsonResponse({"message": "Order not found."}, status=404)
    return JsonResponse(row)


urlpatterns = [path("bare/<uuid:pk>/", bare_order, name="bench-bare-order"), *project_urlpatterns]
