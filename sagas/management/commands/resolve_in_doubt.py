"""Finish the two-phase commit transactions that their coordinator left in doubt."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from sagas.coordinator import in_doubt_resolve, node_name, two_phase_problems


class Command(BaseCommand):
    help = (
        "Commit every prepared 2PC transaction of this node that the coordinator log says COMMIT; roll back those "
        "it says ABORT, or never decided once older than TWO_PC_SAFETY_INTERVAL_SECONDS (presumed abort). Every "
        "action is written to the coordinator log. Prepared transactions of other nodes or applications are only "
        "reported, with their age. The periodic sweep does the same."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Say what would be done; change nothing.")
        parser.add_argument(
            "--safety-interval", type=float, metavar="SECONDS", default=None,
            help="Presume abort only for undecided transactions older than this (default: TWO_PC_SAFETY_INTERVAL_SECONDS). "
            "Shorter is only safe when no coordinator can still be running.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        problems = two_phase_problems()
        if problems:
            self.stdout.write("Two-phase commit is not available here (" + "; ".join(problems) + "): nothing can be in doubt.")
            return
        if options["safety_interval"] is not None and options["safety_interval"] < 0:
            raise CommandError("--safety-interval must be zero or more seconds")
        report = in_doubt_resolve(safety_seconds=options["safety_interval"], dry_run=options["dry_run"])
        prefix = "would " if options["dry_run"] else ""
        for gid in report.committed:
            self.stdout.write(f"{prefix}commit {gid}")
        for gid in report.rolled_back:
            self.stdout.write(f"{prefix}roll back {gid}")
        for line in report.waiting:
            self.stdout.write(f"left alone: {line}")
        now = timezone.now()
        for prepared in report.foreign:
            age = (now - prepared.prepared_at).total_seconds()
            self.stdout.write(self.style.WARNING(
                f"not ours (node {node_name()!r}), left alone: {prepared.gid!r} in {prepared.database}, owner {prepared.owner}, "
                f"prepared {age:.0f}s ago; it holds its locks and holds back VACUUM until its owner finishes it"
            ))
        for line in report.errors:
            self.stderr.write(self.style.ERROR(line))
        counts = report.counts()
        self.stdout.write(
            f"{prefix}committed {counts['committed']}, {prefix}rolled back {counts['rolled_back']}, ended {counts['ended']} transaction(s); "
            f"{counts['waiting']} left alone, {counts['foreign']} not ours, {counts['errors']} error(s)"
        )
        if report.errors:
            raise CommandError(f"{len(report.errors)} transaction(s) could not be finished now; run again once the database answers")
