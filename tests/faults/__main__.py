"""``python -m tests.faults [--short] [--orders N]``: the fault run (tests/faults/run.py)."""

from tests.faults.run import main

raise SystemExit(main())
