"""Rebuild read models from the central event log, by default without downtime."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from eventlog.selectors import log_head
from readmodels.projections import PROJECTIONS
from readmodels.rebuild import projection_rebuild


class Command(BaseCommand):
    help = (
        "Rebuild every projection (or --projection NAME) from the event log. By default the rebuild "
        "goes into shadow tables while the live ones keep serving, then swaps them in one transaction; "
        "an interrupted rebuild resumes where it stopped. --in-place empties the live tables instead."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--projection", action="append", choices=sorted(PROJECTIONS), help="Only this projection (repeatable).")
        parser.add_argument("--in-place", action="store_true", help="Truncate and rebuild the live tables (readers see partial data meanwhile).")
        parser.add_argument("--fresh", action="store_true", help="Discard an interrupted rebuild's progress and start from position 0.")
        parser.add_argument("--batch-size", type=int, default=5000, help="Events per transaction (default 5000).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (logs, CI).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        names = options["projection"] or list(PROJECTIONS)
        head = log_head()
        self.stdout.write(f"Replaying {len(names)} projection(s) from the event log (head at position {head}), {'in place' if options['in_place'] else 'into shadow tables, then swapping'}.")
        for name in names:
            started = time.perf_counter()
            bar = tqdm(total=head, desc=name, unit="ev", unit_scale=True, disable=options["no_progress"], dynamic_ncols=True)

            def progress(position: int, target: int, bar: tqdm = bar) -> None:  # type: ignore[type-arg]
                bar.total = max(bar.total, target)
                bar.n = min(position, bar.total)
                bar.refresh()

            try:
                report = projection_rebuild(name, in_place=options["in_place"], batch_size=options["batch_size"], fresh=options["fresh"], progress=progress)
            except KeyboardInterrupt:
                bar.close()
                raise CommandError(f"{name}: interrupted; run the command again to resume where it stopped") from None
            bar.n = bar.total = max(bar.total, report.position)
            bar.close()
            seconds = time.perf_counter() - started
            rate = report.events / seconds if seconds > 0 else 0.0
            rows = ", ".join(f"{table}: {count}" for table, count in report.rows.items())
            resumed = f", resumed from position {report.resumed_from}" if report.resumed_from else ""
            self.stdout.write(self.style.SUCCESS(f"{name}: {report.events} events in {seconds:.1f}s ({rate:,.0f} events/s){resumed}; now at position {report.position}; rows: {rows}"))
