"""``make run``'s preparation, in one process (one Django start-up, not four): migrate every
alias, collect the static files, make sure someone can log in, and empty the cache.

The launcher (config/launcher.py) runs it before it starts the workers. Its last line on
stdout, ``LOGIN_LINE`` followed by how to log in, is for the launcher's banner.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import BaseCommand

from config.launcher import LOGIN_LINE


class Command(BaseCommand):
    help = "Migrate every alias, collect static files, create an admin on first run, clear the cache (make run does it)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--var-dir", required=True, help="Where the first run's admin password is kept (admin-password.txt).")
        parser.add_argument("--clear-cache", action="store_true", help="Empty the cache (the embedded broker kept it across a restart; the tables may have changed).")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate_all")
        call_command("collectstatic", interactive=False, verbosity=0)
        login = ensure_login(Path(options["var_dir"]))
        if options["clear_cache"]:
            cache.clear()
        self.stdout.write(LOGIN_LINE + login)


def ensure_login(var_dir: Path) -> str:
    """On first run, create an ``admin`` superuser with a random password, kept in var/."""
    password_file = var_dir / "admin-password.txt"
    users = get_user_model()
    if users.objects.filter(is_superuser=True).exists():
        if password_file.exists():
            base = Path(settings.BASE_DIR)
            return f"user 'admin', password in {password_file.relative_to(base) if password_file.is_relative_to(base) else password_file}"
        return "your superuser (manage.py createsuperuser made it)"
    password = secrets.token_urlsafe(12)
    users.objects.create_superuser("admin", "admin@localhost", password)
    password_file.write_text(password + "\n")
    password_file.chmod(0o600)
    return f"user 'admin', password {password} (kept in {password_file})"
