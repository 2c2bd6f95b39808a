"""Resume or time out stuck sagas now, and let an operator retry, resume or abort one.

The dashboard's actions call the same engine services (``sagas.engine``), with the same dry run.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from sagas.engine import ALIAS, OperatorOutcome, SagaConflict, saga_abort, saga_resume, saga_retry, saga_sweep, sagas_failed
from sagas.models import SagaInstance, SagaState

ACTIONS = {"retry": saga_retry, "resume": saga_resume, "abort": saga_abort}


class Command(BaseCommand):
    help = (
        "Handle every overdue saga step now (re-send a due retry, time out a missing reply), as the periodic "
        "sweep does, and report sagas by state. --retry SAGA_ID runs a FAILED saga's failed step again; --resume "
        "SAGA_ID moves a stuck one on now; --abort SAGA_ID compensates a running one before its pivot. --dry-run "
        "says what each would do and does nothing."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--retry", metavar="SAGA_ID", action="append", default=[], help="Retry this FAILED saga (repeatable).")
        parser.add_argument("--retry-all-failed", action="store_true", help="Retry every FAILED saga.")
        parser.add_argument("--resume", metavar="SAGA_ID", action="append", default=[], help="Send this stuck saga's awaited step now, or time out its awaited reply now.")
        parser.add_argument("--abort", metavar="SAGA_ID", action="append", default=[], help="Compensate this RUNNING orchestrated saga (before its pivot only).")
        parser.add_argument("--dry-run", action="store_true", help="Say what the actions would do; change nothing (and skip the sweep).")

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        requests = [(name, value) for name in ACTIONS for value in options[name]]
        if options["retry_all_failed"]:
            requests += [("retry", str(saga_id)) for saga_id in sagas_failed()]
        for name, value in requests:
            try:
                outcome = ACTIONS[name](uuid.UUID(value), dry_run=dry_run, operator="manage.py recover_sagas")
            except ValueError:
                raise CommandError(f"not a saga id: {value!r}") from None
            except (LookupError, SagaConflict) as exc:
                raise CommandError(str(exc)) from None
            self._report(name, outcome)
        if dry_run:
            return
        outcomes = saga_sweep()
        self.stdout.write("overdue steps: " + (", ".join(f"{n} {what}" for what, n in sorted(outcomes.items())) or "none"))
        by_state = dict(SagaInstance.objects.using(ALIAS).values_list("state").annotate(n=Count("id")).values_list("state", "n"))
        self.stdout.write("sagas: " + ", ".join(f"{state} {by_state.get(state, 0)}" for state in SagaState.values))
        failed = by_state.get(SagaState.FAILED, 0)
        if failed:
            self.stdout.write(self.style.WARNING(f"{failed} FAILED saga(s) need an operator: recover_sagas --retry SAGA_ID (after fixing the cause)"))

    def _report(self, name: str, outcome: OperatorOutcome) -> None:
        verb = {"retry": "retrying", "resume": "resuming", "abort": "aborting"}[name]
        prefix = "would be " if outcome.dry_run else ""
        self.stdout.write(f"{prefix}{verb} {outcome.saga_type} {outcome.saga_id}: {'would be' if outcome.dry_run else 'now'} {outcome.state}")
        for line in outcome.did:
            self.stdout.write(f"  {line}")
