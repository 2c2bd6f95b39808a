"""Check every invariant of the system and print a report; exit 1 on any violation."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from config.verify import CHECKS

EXAMPLES = 20


class Command(BaseCommand):
    help = (
        "Verify the invariants: state rows equal the fold of their events; stream versions are 1..n; "
        "every outbox event is in the log exactly once; reserved credit = the totals of each customer's APPROVED "
        "and CANCEL_PENDING orders (exactly, for orders with no saga in flight), never twice for one order; each read model "
        "equals a fresh replay of the log. Exits 1 if anything is violated."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--max-examples", type=int, default=EXAMPLES, help="Violations shown per check.")

    def handle(self, *args: Any, **options: Any) -> None:
        failed = 0
        for check in CHECKS:
            started = time.perf_counter()
            result = check()
            seconds = time.perf_counter() - started
            if result.violations:
                failed += 1
                self.stdout.write(self.style.ERROR(f"FAIL  {result.name}: {len(result.violations)} violation(s) in {result.checked} checked ({seconds:.1f}s)"))
                for violation in result.violations[: options["max_examples"]]:
                    self.stdout.write(f"        {violation}")
                if len(result.violations) > options["max_examples"]:
                    self.stdout.write(f"        ... and {len(result.violations) - options['max_examples']} more")
            else:
                self.stdout.write(self.style.SUCCESS(f"ok    {result.name} ({result.checked} checked, {seconds:.1f}s)"))
        if failed:
            raise CommandError(f"{failed} of {len(CHECKS)} invariant checks failed")
        self.stdout.write(self.style.SUCCESS(f"All {len(CHECKS)} invariant checks passed."))
