from django.apps import AppConfig


class CustomersConfig(AppConfig):
    """The customers bounded context: credit limits and credit reservations."""

    name = "customers"
    verbose_name = "Customers"

    def ready(self) -> None:
        from customers.models import CustomerEvent
        from customers.repository import ALIAS
        from eventlog.relay import outbox_register

        outbox_register(source="customers", model=CustomerEvent, alias=ALIAS)

        from customers import choreography, twophase

        choreography.register()
        twophase.register()
