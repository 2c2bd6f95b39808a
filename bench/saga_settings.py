"""Settings for bench/sagas.py: the project's settings, plus the floor's no-op tasks.

Every process of the saga bench (both workers, beat, gunicorn) runs with these, in the saga run
and in the floor run alike, so the only difference between the two runs is the work the tasks do.

``BENCH_PROFILE_DIR`` (a directory) makes each worker cProfile its task-running thread from
``worker_ready`` to shutdown and write ``<dir>/worker-<pid>.prof`` (bench/noop_tasks.py does it).
"""

from config.settings import *  # noqa: F401,F403
from config.settings import CELERY_TASK_ROUTES, env

# Loaded by every worker at start-up, next to the project's autodiscovered tasks.
CELERY_IMPORTS = ("bench.noop_tasks",)
# The floor's hops name their queue at send time (the saga's queue sequence); this is the default.
CELERY_TASK_ROUTES = {**CELERY_TASK_ROUTES, "bench.*": {"queue": "sagas"}}

BENCH_PROFILE_DIR = env.str("BENCH_PROFILE_DIR", default="")
