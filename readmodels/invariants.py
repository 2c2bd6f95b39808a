"""Invariant of the read side: each read model equals a fresh replay of the log.

The replay is built into ``__verify`` shadow tables (one pass over the log for every
projection) up to each live projection's position, then compared row by row while that live
checkpoint is locked, so both sides stand at one position.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import Model

from eventlog.invariants import CheckResult, Violation
from eventlog.subscriptions import subscriber_get, subscriber_position
from readmodels.models import ProjectionCheckpoint
from readmodels.projections import ALIAS, PROJECTIONS, subscriber_name
from readmodels.rebuild import DEFAULT_BATCH_SIZE, shadow_catch_up, shadow_drop, shadow_prepare

SUFFIX = "__verify"
EXAMPLES = 5


def _rows(model: type[Model]) -> dict[Any, tuple[Any, ...]]:
    names = [f.attname for f in model._meta.local_fields]
    return {row[0]: row for row in model._default_manager.using(ALIAS).order_by("pk").values_list("pk", *names)}


def readmodels_replay_check(*, batch_size: int = DEFAULT_BATCH_SIZE) -> CheckResult:
    violations: list[Violation] = []
    checked = 0
    projections = list(PROJECTIONS.values())
    try:
        replays = [shadow_prepare(projection, suffix=SUFFIX, fresh=True) for projection in projections]
        # One pass for all of them up to the slowest live projection, then each on its own.
        shadow_catch_up(replays, batch_size=batch_size, until=min(subscriber_position(subscriber_get(subscriber_name(p))) for p in projections))
        for projection, replay in zip(projections, replays, strict=True):
            live_name = subscriber_name(projection)
            with transaction.atomic(using=ALIAS):
                live_checkpoint = ProjectionCheckpoint.objects.using(ALIAS).select_for_update().filter(subscriber=live_name).first()
                position = live_checkpoint.position if live_checkpoint else 0
                shadow_catch_up(replay, batch_size=batch_size, until=position)
                for live in projection.tables:
                    expected, actual = _rows(replay.target.table(live)), _rows(live)
                    checked += len(expected)
                    subject = f"{live._meta.db_table} @ position {position}"
                    missing = sorted(map(str, expected.keys() - actual.keys()))
                    extra = sorted(map(str, actual.keys() - expected.keys()))
                    changed = sorted(str(pk) for pk in expected.keys() & actual.keys() if expected[pk][1:] != actual[pk][1:])
                    for label, keys in (("missing rows", missing), ("rows a replay would not have", extra), ("rows that differ from a replay", changed)):
                        if keys:
                            violations.append(Violation("read model = replay", subject, f"{len(keys)} {label}, e.g. {', '.join(keys[:EXAMPLES])}"))
    finally:
        for projection in projections:
            shadow_drop(projection, suffix=SUFFIX)
    return CheckResult(name="read models equal a fresh replay of the log", checked=checked, violations=violations)
