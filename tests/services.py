"""What ``scripts/services.sh start DIR`` leaves for its callers: the environment file it writes."""

from __future__ import annotations

from pathlib import Path


def env_file(path: Path) -> dict[str, str]:
    """The variables of an ``env.sh`` that ``scripts/services.sh`` wrote (``export NAME=value`` lines)."""
    values = {}
    for line in path.read_text().splitlines():
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            values[name] = value.strip("'\"")
    return values
