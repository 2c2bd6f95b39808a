"""The dashboard's pages, each served by the view module of the same name."""

from __future__ import annotations

from django.urls import path

from config.dashboard.views.actions import action_page
from config.dashboard.views.events import event_list_page
from config.dashboard.views.overview import overview, summary_fragment
from config.dashboard.views.projections import projection_list_page
from config.dashboard.views.saga import saga_detail_page
from config.dashboard.views.sagas import saga_list_page

app_name = "dashboard"
urlpatterns = [
    path("", overview, name="overview"),
    path("summary/", summary_fragment, name="summary"),
    path("sagas/", saga_list_page, name="saga-list"),
    path("sagas/<str:saga_id>/", saga_detail_page, name="saga-detail"),
    path("events/", event_list_page, name="event-list"),
    path("projections/", projection_list_page, name="projection-list"),
    path("actions/<str:name>/", action_page, name="action"),
]
