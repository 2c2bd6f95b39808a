"""Migrate every database alias: each context's tables on its own database, Django's on default."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Apply migrations on every database alias (default and one per bounded context)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--check", action="store_true", help="Exit non-zero if any alias has unapplied migrations.")

    def handle(self, *args: Any, **options: Any) -> None:
        for alias in settings.DATABASES:
            self.stdout.write(self.style.MIGRATE_HEADING(f"Database '{alias}':"))
            call_command("migrate", database=alias, interactive=False, verbosity=max(options["verbosity"] - 1, 0), check_unapplied=options["check"])
        self.stdout.write(self.style.SUCCESS(f"Migrated {len(settings.DATABASES)} databases: {', '.join(settings.DATABASES)}"))
