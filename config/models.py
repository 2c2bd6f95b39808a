"""The project's own table, on Django's ``default`` database beside the users: the audit log of
what operators did from the dashboard (who, when, what, and how it went)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class OperatorAction(models.Model):
    """One operator action, recorded after it ran (a dry run is not an action)."""

    at = models.DateTimeField(db_index=True)
    #: The user, and their name as it was (the row outlives a renamed or deleted user).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150)
    action = models.CharField(max_length=40)
    #: What it acted on: a saga id, a parked event's id, a projection's name.
    target = models.CharField(max_length=200)
    #: The saga it concerns, if any: the saga page lists its actions by this.
    saga_id = models.UUIDField(null=True, blank=True, db_index=True)
    ok = models.BooleanField()
    outcome = models.TextField(blank=True, default="")

    class Meta:
        ordering = ("-at", "-id")

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.username} {self.action} {self.target} {'ok' if self.ok else 'failed'}"
