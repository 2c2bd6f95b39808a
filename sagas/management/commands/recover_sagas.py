"""Resume or time out stuck sagas now, and let an operator retry a FAILED one."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from sagas.engine import ALIAS, SagaConflict, saga_retry, saga_sweep
from sagas.models import SagaInstance, SagaState


class Command(BaseCommand):
    help = (
        "Handle every overdue saga step now (re-send a due retry, time out a missing reply), as the periodic "
        "sweep does, and report sagas by state. --retry SAGA_ID runs a FAILED saga's compensation again."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--retry", metavar="SAGA_ID", action="append", default=[], help="Retry this FAILED saga (repeatable).")
        parser.add_argument("--retry-all-failed", action="store_true", help="Retry every FAILED saga.")

    def handle(self, *args: Any, **options: Any) -> None:
        retries = list(options["retry"])
        if options["retry_all_failed"]:
            retries += [str(i) for i in SagaInstance.objects.using(ALIAS).filter(state=SagaState.FAILED).values_list("id", flat=True)]
        for value in retries:
            try:
                saga = saga_retry(uuid.UUID(value))
            except ValueError:
                raise CommandError(f"not a saga id: {value!r}") from None
            except (LookupError, SagaConflict) as exc:
                raise CommandError(str(exc)) from None
            self.stdout.write(f"retrying {saga.type} {saga.id}: now {saga.state}")
        outcomes = saga_sweep()
        self.stdout.write("overdue steps: " + (", ".join(f"{n} {what}" for what, n in sorted(outcomes.items())) or "none"))
        by_state = dict(SagaInstance.objects.using(ALIAS).values_list("state").annotate(n=Count("id")).values_list("state", "n"))
        self.stdout.write("sagas: " + ", ".join(f"{state} {by_state.get(state, 0)}" for state in SagaState.values))
        failed = by_state.get(SagaState.FAILED, 0)
        if failed:
            self.stdout.write(self.style.WARNING(f"{failed} FAILED saga(s) need an operator: recover_sagas --retry SAGA_ID (after fixing the cause)"))
