"""The project app: project-wide management commands and system checks; it has no tables.

It is also where the composition root plugs the project's pieces into the kernel's interfaces,
so that the kernel (eventlog) never imports the wiring.
"""

from django.apps import AppConfig


class ProjectConfig(AppConfig):
    name = "config"
    label = "config"
    verbose_name = "Project"

    def ready(self) -> None:
        from config import checks  # noqa: F401  (registers the checks)
        from config.fastcache import add as cache_add
        from eventlog.messaging import window_flags_use
        from orders.domain import OrderMode
        from orders.workflows import order_workflow_use
        from sagas.services import order_saga_cancel, order_saga_place

        # Wake-up windows as SET NX PX on the shared Redis, to the millisecond.
        window_flags_use(cache_add)
        # Who carries an order through, per mode. Choreography and 2PC arrive with their issues;
        # until then the orders API answers 501 for them.
        order_workflow_use(OrderMode.ORCHESTRATION, place=order_saga_place, cancel=order_saga_cancel)
