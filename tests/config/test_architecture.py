"""Dependencies point one way: the wiring (config) -> the contexts -> the kernel (eventlog).

Every module's imports are read from its source (``ast``, so an import inside a function counts
too, and nothing is imported to find out): the kernel imports no context and no wiring; a
context imports the kernel and nothing of another context or of the wiring; config may import
anything, since wiring the contexts together is its job. Contexts talk to each other through
commands by name and events in the log, never through each other's modules.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
WIRING = "config"
KERNEL = "eventlog"
CONTEXTS = tuple(label for label in settings.BOUNDED_CONTEXTS if label != KERNEL)
#: Top-level packages outside the layers: they may import anything.
OUTSIDE = {"tests", "bench", "scripts", "docs", "templates", "var"}

#: Known edges against the direction, each with the reason it stays for now. Empty is the goal.
ALLOWED = {
    # The Redis pipeline of the hot read path lives beside the cache settings; readmodels/cache.py
    # is being reworked on another branch, so moving the module waits for that to land.
    ("readmodels.cache", "config.fastcache"),
}


def modules(package: str) -> Iterator[tuple[str, Path]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, absolute, wherever the import statement stands.

    ``from config import fastcache`` counts as an import of ``config.fastcache`` (a module),
    ``from config.api import MoneyField`` as one of ``config.api``.
    """
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                parts = module.split(".")
                base = parts[: len(parts) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            submodules = {f"{target}.{alias.name}" for alias in node.names if is_module(f"{target}.{alias.name}")}
            found.update(submodules or {target})
    return found


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def top(name: str) -> str:
    return name.split(".", 1)[0]


def refused(importer: str, imported: str) -> str | None:
    """Why ``importer`` may not import ``imported``, or ``None`` if it may."""
    source, target = top(importer), top(imported)
    if source == target or target not in {WIRING, KERNEL, *CONTEXTS}:
        return None
    if source == KERNEL:
        return "the kernel imports no context and no wiring"
    if source in CONTEXTS and target == WIRING:
        return "a context imports no wiring (config wires contexts, not the reverse)"
    if source in CONTEXTS and target in CONTEXTS:
        return "a context imports no other context (commands by name, events in the log)"
    return None


def violations() -> list[str]:
    found = []
    for package in (WIRING, KERNEL, *CONTEXTS):
        for module, path in modules(package):
            for imported in sorted(imports(module, path)):
                reason = refused(module, imported)
                if reason and not any(module == a and (imported == b or imported.startswith(b + ".")) for a, b in ALLOWED):
                    found.append(f"{module} imports {imported}: {reason}")
    return found


def test_dependencies_point_one_way() -> None:
    found = violations()
    assert not found, "imports against the direction:\n" + "\n".join(found)


def test_every_top_level_package_is_in_a_layer() -> None:
    """A new app cannot slip past the rule by not being listed."""
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages - OUTSIDE <= {WIRING, KERNEL, *CONTEXTS}, packages


def test_each_allowed_exception_still_exists() -> None:
    """An exception that has been fixed is taken off the list, so the list only shrinks."""
    for importer, imported in ALLOWED:
        path = ROOT / (importer.replace(".", "/") + ".py")
        assert any(name == imported or name.startswith(imported + ".") for name in imports(importer, path)), (importer, imported)


#: What the dashboard (config/dashboard/) may import from a context or the kernel: reads through
#: selectors, actions through services (the engine's operator services, the rebuild, the
#: subscriptions' parked-event retry, the relay's backlog count, the 2PC coordinator's
#: recovery). Never a context's tables.
DASHBOARD = "config.dashboard"
DASHBOARD_MAY_USE = ("selectors", "services", "engine", "rebuild", "subscriptions", "relay", "coordinator")


def dashboard_refusal(imported: str) -> str | None:
    if top(imported) not in {KERNEL, *CONTEXTS}:
        return None
    if imported.rsplit(".", 1)[-1] in DASHBOARD_MAY_USE:
        return None
    return "the dashboard reads a context through its selectors and acts through its services"


def test_the_dashboard_reads_through_selectors_and_acts_through_services() -> None:
    found = [
        f"{module} imports {imported}: {reason}"
        for module, path in modules(DASHBOARD.replace(".", "/"))
        for imported in sorted(imports(module, path))
        if (reason := dashboard_refusal(imported))
    ]
    assert not found, "\n".join(found)
    assert dashboard_refusal("sagas.models") and dashboard_refusal("orders.models") and not dashboard_refusal("sagas.selectors")  # a control


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("eventlog.messaging", "config.celery_app", False),
        ("eventlog.apis", "orders.domain", False),
        ("sagas.apis", "readmodels.selectors", False),
        ("orders.apis", "config.api", False),
        ("orders.apis", "eventlog.errors", True),
        ("config.urls", "sagas.apis", True),
        ("readmodels.projections", "readmodels.models", True),
        ("tests.api.helpers", "customers.models", True),
    ],
)
def test_the_rule_itself(importer: str, imported: str, allowed: bool) -> None:
    """The checker refuses what the brief refuses and allows what it allows (a control)."""
    assert (refused(importer, imported) is None) is allowed
