"""List the events subscribers parked after their handler kept failing, and retry them."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from eventlog.subscriptions import parked_events, parked_retry, parked_retry_select, subscriber_get


class Command(BaseCommand):
    help = (
        "Without arguments, list the events that subscribers (the choreography handlers) are failing on or have parked. "
        "With --all, or event ids, run each parked event's handler again (fix the cause first); its effects and the "
        "record that it is resolved commit together, so a retry never acts twice. --dry-run lists what would be retried."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("event_ids", nargs="*", metavar="EVENT_ID", help="Retry these parked events.")
        parser.add_argument("--all", action="store_true", help="Retry every parked event (of --subscriber, if given).")
        parser.add_argument("--subscriber", help="Only this subscriber's events, e.g. orders.choreography.")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be retried, retry nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["subscriber"]:
            try:
                subscriber_get(options["subscriber"])
            except LookupError as exc:
                raise CommandError(str(exc)) from None
        try:
            wanted = {uuid.UUID(value) for value in options["event_ids"]}
        except ValueError:
            raise CommandError("event ids are UUIDs") from None
        records = parked_events(subscriber=options["subscriber"])
        if not wanted and not options["all"]:
            for record in records:
                state = "parked" if record.parked_at else "failing"
                self.stdout.write(f"{state} {record.subscriber} #{record.position} {record.event_type} {record.event_id} saga {record.saga_id} after {record.attempts} attempt(s): {record.error[:200]}")
            self.stdout.write(f"{len(records)} event(s) failing or parked")
            return
        try:
            chosen = parked_retry_select(event_ids=wanted, every=options["all"], subscriber=options["subscriber"])
        except LookupError as exc:
            raise CommandError(str(exc)) from None
        failed = 0
        for record in chosen:
            if options["dry_run"]:
                self.stdout.write(f"would retry {record.subscriber} #{record.position} {record.event_type} {record.event_id}")
                continue
            error = parked_retry(record)
            if error is None:
                self.stdout.write(self.style.SUCCESS(f"retried {record.subscriber} #{record.position} {record.event_type} {record.event_id}: done"))
            else:
                failed += 1
                self.stdout.write(self.style.ERROR(f"retried {record.subscriber} #{record.position} {record.event_type} {record.event_id}: failed again: {error[:300]}"))
        if failed:
            raise CommandError(f"{failed} of {len(chosen)} parked event(s) failed again; they stay parked")
