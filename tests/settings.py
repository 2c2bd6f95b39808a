"""Settings for the test run: the project's own, with a var/ folder of the tests' own.

Only ``VAR_DIR`` changes, so the embedded broker, the cache on it and the SQLite files of a
test run never touch those of a ``make run`` on the same checkout. Every other difference comes
from the environment, exactly as in production (the PostgreSQL + Redis tier sets the URLs).
"""

import os
from pathlib import Path

os.environ.setdefault("VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test-env"))
# The test client and every process a test starts speak plain HTTP to 127.0.0.1 (the HTTPS
# defaults of production are tested by tests/config/test_deploy.py, in a process of its own).
os.environ.setdefault("DJANGO_LOCAL_HTTP", "true")

from config.settings import *  # noqa: E402,F403
