from django.apps import AppConfig


class ReadmodelsConfig(AppConfig):
    """The query side: projections of the central log into denormalised tables."""

    name = "readmodels"
    verbose_name = "Read models"

    def ready(self) -> None:
        from eventlog.subscriptions import Subscriber, subscriber_register
        from readmodels import projections
        from readmodels.models import ProjectionCheckpoint

        for name, handle, types in (
            ("readmodels.order_summary", projections.order_summary_project, projections.ORDER_SUMMARY_TYPES),
            ("readmodels.customer_credit", projections.customer_credit_project, projections.CUSTOMER_CREDIT_TYPES),
        ):
            subscriber_register(
                Subscriber(name=name, alias=projections.ALIAS, queue="readmodels", checkpoint_model=ProjectionCheckpoint, handle=handle, types=types)
            )
