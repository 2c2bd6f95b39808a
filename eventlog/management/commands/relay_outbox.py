"""Relay every outbox (or one) into the central log now, and wake the subscribers."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from eventlog.relay import StreamVersionConflict, outbox_backlog, outbox_relay, outboxes
from eventlog.selectors import log_head
from eventlog.subscriptions import subscriber_advance, subscriber_lag, subscribers


class Command(BaseCommand):
    help = (
        "Copy unrelayed outbox events into the central event log (exactly once, in order). "
        "Safe to run at any time, also while workers run."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--source", choices=sorted(o.source for o in outboxes()), help="Relay this context's outbox only.")
        parser.add_argument("--batch-size", type=int, default=1000)
        parser.add_argument("--advance", action="store_true", help="Also catch every subscriber up with the log, in this process.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["batch_size"] < 1:
            raise CommandError("--batch-size must be at least 1")
        sources = [options["source"]] if options["source"] else [o.source for o in outboxes()]
        backlog = outbox_backlog()
        for source in sources:
            try:
                relayed = outbox_relay(source, batch_size=options["batch_size"])
            except StreamVersionConflict as exc:
                raise CommandError(f"{source}: {exc}") from exc
            self.stdout.write(f"{source}: relayed {relayed} event(s) ({backlog[source]} were pending)")
        self.stdout.write(f"log head: position {log_head()}")
        if options["advance"]:
            for subscriber in subscribers():
                consumed = subscriber_advance(subscriber.name, batch_size=options["batch_size"])
                self.stdout.write(f"{subscriber.name}: applied {consumed} event(s), lag {subscriber_lag(subscriber)}")
        self.stdout.write(self.style.SUCCESS("done"))
