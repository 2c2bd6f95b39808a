from django.apps import AppConfig


class ReadmodelsConfig(AppConfig):
    """The query side: projections of the central log into denormalised tables."""

    name = "readmodels"
    verbose_name = "Read models"

    def ready(self) -> None:
        from eventlog.subscriptions import Subscriber, subscriber_register
        from readmodels import projections
        from readmodels.models import ProjectionCheckpoint

        for projection in projections.PROJECTIONS.values():
            subscriber_register(
                Subscriber(
                    name=projections.subscriber_name(projection),
                    alias=projections.ALIAS,
                    queue="readmodels",
                    checkpoint_model=ProjectionCheckpoint,
                    handle=projection.project,
                    types=projection.types,
                )
            )
