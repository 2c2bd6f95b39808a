"""The project app: project-wide management commands, system checks, the dashboard, and the
audit log of operator actions (its one table, on ``default``).

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
        from orders.choreography import order_choreography_cancel, order_choreography_in_flight, order_choreography_place
        from orders.domain import OrderMode
        from orders.workflows import order_workflow_use
        from sagas.coordinator import order_two_phase_cancel, order_two_phase_place
        from sagas.services import order_saga_cancel, order_saga_place, order_saga_placing, order_sagas_in_flight

        # Wake-up windows as SET NX PX on the shared Redis, to the millisecond.
        window_flags_use(cache_add)
        # Who carries an order through, per mode: the orchestrator's sagas, the contexts'
        # reactions to each other's events, or the two-phase commit coordinator. The two that
        # work after they answer say how many they have on their way (admission control); 2PC
        # is bounded by the web workers, since it answers when it is done.
        order_workflow_use(OrderMode.ORCHESTRATION, place=order_saga_place, cancel=order_saga_cancel, in_flight=order_sagas_in_flight, placing=order_saga_placing)
        order_workflow_use(OrderMode.CHOREOGRAPHY, place=order_choreography_place, cancel=order_choreography_cancel, in_flight=order_choreography_in_flight)
        order_workflow_use(OrderMode.TWO_PHASE_COMMIT, place=order_two_phase_place, cancel=order_two_phase_cancel)
