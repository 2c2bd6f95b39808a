from django.apps import AppConfig


class OrdersConfig(AppConfig):
    """The orders bounded context: the Order aggregate and its life cycle."""

    name = "orders"
    verbose_name = "Orders"

    def ready(self) -> None:
        from eventlog.relay import outbox_register
        from orders.models import OrderEvent
        from orders.repository import ALIAS

        outbox_register(source="orders", model=OrderEvent, alias=ALIAS)

        from orders import choreography, twophase

        choreography.register()
        twophase.register()
