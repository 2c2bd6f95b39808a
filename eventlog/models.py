"""Tables of the shared kernel: the abstract outbox and checkpoint rows every context reuses,
and the central append-only event log (in the ``eventlog`` database).
"""

from __future__ import annotations

from typing import ClassVar, Self

from django.db import models


class StoredEvent(models.Model):
    """An event with its metadata (brief section 4), as both the outboxes and the log store it."""

    #: Every concrete subclass has it (Django adds it); declared so code typed on the base can use it.
    objects: ClassVar[models.Manager[Self]]

    event_id = models.UUIDField(unique=True)
    stream_id = models.UUIDField()
    stream_type = models.CharField(max_length=64)
    version = models.PositiveIntegerField()
    type = models.CharField(max_length=64)
    data = models.JSONField()
    occurred_at = models.DateTimeField()
    correlation_id = models.UUIDField()
    causation_id = models.UUIDField(null=True)
    saga_id = models.UUIDField(null=True)

    class Meta:
        abstract = True


#: The columns an outbox row and a log row share, in order.
EVENT_COLUMNS: tuple[str, ...] = tuple(field.name for field in StoredEvent._meta.local_fields)


class OutboxEvent(StoredEvent):
    """A context's event store, which is also its transactional outbox.

    ``unique(stream_id, version)`` is the optimistic-concurrency guard; ``relayed_at`` stays
    null until the relay has copied the row into the central log.
    """

    id = models.BigAutoField(primary_key=True)
    relayed_at = models.DateTimeField(null=True)

    class Meta:
        abstract = True
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(fields=("stream_id", "version"), name="%(app_label)s_outbox_stream_version"),
        ]
        indexes = [
            # The relay's work queue: only rows not yet in the central log.
            models.Index(fields=("id",), condition=models.Q(relayed_at__isnull=True), name="%(app_label)s_outbox_unrelayed"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.stream_id} v{self.version}"


class LogEvent(StoredEvent):
    """The central, append-only event log; ``position`` is the global order readers follow.

    Appends are serialised (``eventlog.relay.log_append``), so positions become visible in
    order and a reader that remembers "last seen = N" never skips a lower position.
    """

    position = models.BigAutoField(primary_key=True)
    # Traces are read by correlation (a business transaction) and by saga.
    correlation_id = models.UUIDField(db_index=True)
    saga_id = models.UUIDField(null=True, db_index=True)
    recorded_at = models.DateTimeField()

    class Meta:
        ordering = ("position",)
        constraints = [
            models.UniqueConstraint(fields=("stream_id", "version"), name="eventlog_stream_version_uniq"),
        ]

    def __str__(self) -> str:
        return f"#{self.position} {self.type} {self.stream_id} v{self.version}"


class Checkpoint(models.Model):
    """A subscriber's position in the log, kept in the subscriber's own database.

    It is written in the same transaction as the subscriber's effects, and only moves forward.
    """

    #: Every concrete subclass has it (Django adds it); declared so code typed on the base can use it.
    objects: ClassVar[models.Manager[Self]]

    subscriber = models.CharField(max_length=100, primary_key=True)
    position = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.subscriber} @ {self.position}"


class ProcessedCommand(models.Model):
    """A command a participant has handled, with the reply it gave.

    Written in the same transaction as the command's effects: a redelivered command finds its
    row and gets the recorded reply again, without acting twice.
    """

    #: Every concrete subclass has it (Django adds it); declared so code typed on the base can use it.
    objects: ClassVar[models.Manager[Self]]

    command_id = models.UUIDField(primary_key=True)
    name = models.CharField(max_length=100)
    saga_id = models.UUIDField(null=True)
    reply = models.JSONField()
    processed_at = models.DateTimeField()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.name} {self.command_id}"


class ParkedEvent(models.Model):
    """An event a subscriber's handler failed on: counted while it is retried, then parked.

    A handler that keeps failing on one event must not hold up the rest of the log for ever.
    Each failure is counted here, in the same transaction that keeps the checkpoint just before
    the event; after ``Subscriber.max_failures`` the event is *parked* (``parked_at``) and the
    subscriber moves past it. An operator retries it (``manage.py retry_parked_events``) once the
    cause is fixed; ``resolved_at`` records when the retry succeeded.
    """

    #: Every concrete subclass has it (Django adds it); declared so code typed on the base can use it.
    objects: ClassVar[models.Manager[Self]]

    id = models.BigAutoField(primary_key=True)
    subscriber = models.CharField(max_length=100)
    position = models.BigIntegerField()
    event_id = models.UUIDField()
    event_type = models.CharField(max_length=64)
    correlation_id = models.UUIDField(db_index=True)
    saga_id = models.UUIDField(null=True, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField()
    parked_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ("position",)
        constraints = [models.UniqueConstraint(fields=("subscriber", "position"), name="%(app_label)s_parked_subscriber_position")]

    def __str__(self) -> str:
        return f"{self.subscriber} @ {self.position} {self.event_type} ({'parked' if self.parked_at else 'failing'})"


class IdempotencyRecord(models.Model):
    """The first answer to a request that carried an ``Idempotency-Key``, per user.

    Each context that starts work on a client's request keeps its own, written in the same
    transaction as the work (``eventlog.idempotency``).
    """

    #: Every concrete subclass has it (Django adds it); declared so code typed on the base can use it.
    objects: ClassVar[models.Manager[Self]]

    user_id = models.BigIntegerField()
    key = models.CharField(max_length=200)
    fingerprint = models.CharField(max_length=64)
    status_code = models.PositiveSmallIntegerField()
    body = models.JSONField()
    headers = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        abstract = True
        constraints = [models.UniqueConstraint(fields=("user_id", "key"), name="%(app_label)s_idempotency_key")]
