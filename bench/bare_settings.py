"""Settings for bench/query.py: the project's settings, plus the bench's bare view (bench/bare_urls.py).

``BENCH_NO_THROTTLE=1`` also turns DRF's throttle classes off: a diagnostic run that shows what
the throttle costs per request (the project's own settings always throttle).
"""

from config.settings import *  # noqa: F401,F403
from config.settings import REST_FRAMEWORK, env

ROOT_URLCONF = "bench.bare_urls"

if env.bool("BENCH_NO_THROTTLE", default=False):
    REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
