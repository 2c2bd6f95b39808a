"""A real 2PC coordinator process for the fault tests: places (or cancels) one order and stops
at a named point of the protocol, so the test can SIGKILL it exactly there.

    python -m tests.e2e.twophase_coordinator --stop-at prepared:orders place CUSTOMER_ID TOTAL
    python -m tests.e2e.twophase_coordinator --stop-at decided cancel ORDER_ID CUSTOMER_ID TOTAL

At the point it prints ``STOPPED <point> <transaction id>`` and waits for a line on stdin (the
test either kills it, or writes a line to let it go on). At the end it prints ``RESULT <json>``.
The databases come from the environment, as for every process of the system.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from decimal import Decimal


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--stop-at", default="")
    parser.add_argument("action", choices=["place", "cancel"])
    parser.add_argument("args", nargs="+")
    options = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from sagas import coordinator

    def observe(point: str, transaction_id: uuid.UUID) -> None:
        if point == options.stop_at:
            print(f"STOPPED {point} {transaction_id}", flush=True)
            sys.stdin.readline()

    coordinator.phase_observers.append(observe)
    if options.action == "place":
        customer_id, total = options.args
        result = coordinator.order_two_phase_place(order_id=uuid.uuid4(), customer_id=uuid.UUID(customer_id), total=Decimal(total), mode="2pc", idempotency=None)
    else:
        order_id, customer_id, total = options.args
        result = coordinator.order_two_phase_cancel(order_id=uuid.UUID(order_id), customer_id=uuid.UUID(customer_id), total=Decimal(total))
    print("RESULT " + json.dumps({"order_id": str(result.order_id), "saga_id": str(result.saga_id), "outcome": result.outcome}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
