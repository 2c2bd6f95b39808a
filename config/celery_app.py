"""The Celery application every worker and beat process runs (``celery -A config.celery_app``)."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("config")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The default app of every thread: the kernel sends through ``celery.current_app``, which is
# thread-local and, in a thread that never set one (the wake-up notifier), falls back to this.
app.set_default()
