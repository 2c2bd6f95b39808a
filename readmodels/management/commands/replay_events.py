"""Rebuild read models from the central event log, by default without downtime."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from eventlog.selectors import log_head
from readmodels.projections import PROJECTIONS
from readmodels.rebuild import DEFAULT_BATCH_SIZE, projections_rebuild


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
        parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"Events per transaction (default {DEFAULT_BATCH_SIZE}).")
        parser.add_argument("--no-progress", action="store_true", help="No progress bar (logs, CI).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        names = list(dict.fromkeys(options["projection"] or PROJECTIONS))
        head = log_head()
        how = "in place" if options["in_place"] else "into shadow tables, then swapping"
        self.stdout.write(f"Replaying {', '.join(names)} from the event log in one pass (head at position {head}), {how}.")
        started = time.perf_counter()
        bar = tqdm(total=head, desc="replay", unit="ev", unit_scale=True, disable=options["no_progress"], dynamic_ncols=True)

        def progress(position: int, target: int) -> None:
            bar.total = max(bar.total, target)
            bar.n = min(position, bar.total)
            bar.refresh()

        try:
            reports = projections_rebuild(names, in_place=options["in_place"], batch_size=options["batch_size"], fresh=options["fresh"], progress=progress)
        except KeyboardInterrupt:
            bar.close()
            raise CommandError("interrupted; run the command again to resume where it stopped") from None
        bar.n = bar.total = max([bar.total, *(report.position for report in reports)])
        bar.close()
        seconds = time.perf_counter() - started
        for report in reports:
            rows = ", ".join(f"{table}: {count}" for table, count in report.rows.items())
            resumed = f", resumed from position {report.resumed_from}" if report.resumed_from else ""
            self.stdout.write(self.style.SUCCESS(f"{report.projection}: {report.events} events{resumed}; now at position {report.position}; rows: {rows}"))
        events = max((report.events for report in reports), default=0)
        rate = events / seconds if seconds > 0 else 0.0
        self.stdout.write(self.style.SUCCESS(f"{events} events in {seconds:.1f}s ({rate:,.0f} events/s)"))
