"""URL map: the admin, the operators' dashboard, health probes, and the HTTP API under /api/.

Where one path serves a query (read model) and a command (a context), the two views are
composed here, at the composition root, so that neither context imports the other.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from django.views.defaults import page_not_found
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from config.health import healthz, readyz
from customers.apis import CustomerCreateApi
from eventlog.apis import EventListApi, StreamDetailApi
from orders.apis import OrderCancelApi, OrderPlaceApi
from readmodels.apis import CustomerDetailApi, OrderDetailApi, OrderListApi, ProjectionListApi
from sagas.apis import SagaDetailApi, SagaListApi


class OrderCollectionApi(OrderListApi, OrderPlaceApi):
    """GET lists orders (readmodels), POST places one, in any mode (orders)."""


class JsonErrors:
    """The schema and docs pages render YAML or HTML; their errors (a 401 without credentials)
    are JSON in the API's error shape, as everywhere else under /api/."""

    def handle_exception(self, exc: Exception) -> Response:
        response: Response = super().handle_exception(exc)  # type: ignore[misc]
        self.request.accepted_renderer, self.request.accepted_media_type = JSONRenderer(), "application/json"  # type: ignore[attr-defined]
        return response


class SchemaApi(JsonErrors, SpectacularAPIView):
    pass


class SwaggerPage(JsonErrors, SpectacularSwaggerView):
    pass


class RedocPage(JsonErrors, SpectacularRedocView):
    pass


api = [
    path("customers/", CustomerCreateApi.as_view(), name="customer-create"),
    path("customers/<str:customer_id>/", CustomerDetailApi.as_view(), name="customer-detail"),
    path("orders/", OrderCollectionApi.as_view(), name="order-collection"),
    path("orders/<str:order_id>/", OrderDetailApi.as_view(), name="order-detail"),
    path("orders/<str:order_id>/cancel/", OrderCancelApi.as_view(), name="order-cancel"),
    path("sagas/", SagaListApi.as_view(), name="saga-list"),
    path("sagas/<str:saga_id>/", SagaDetailApi.as_view(), name="saga-detail"),
    path("events/", EventListApi.as_view(), name="event-list"),
    path("streams/<str:stream_id>/", StreamDetailApi.as_view(), name="stream-detail"),
    path("projections/", ProjectionListApi.as_view(), name="projection-list"),
    path("schema/", SchemaApi.as_view(), name="schema"),
    path("docs/", SwaggerPage.as_view(url_name="schema"), name="docs"),
    path("redoc/", RedocPage.as_view(url_name="schema"), name="redoc"),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("dashboard/", include("config.dashboard.urls")),
    path("healthz", healthz, name="healthz"),
    path("readyz", readyz, name="readyz"),
    path("api/", include(api)),
]


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Unknown paths under /api/ answer in the API's error shape; elsewhere Django's page."""
    if request.path.startswith("/api/"):
        return JsonResponse({"message": "Not found.", "extra": {"path": request.path[:200]}}, status=404)
    return page_not_found(request, exception)


handler404 = not_found
