"""A saga drawn as SVG on the server: no JavaScript, no CDN, nothing to load.

An orchestrated saga is drawn from its definition: the forward steps left to right (the pivot
and the retriable steps labelled), each compensation under the step it undoes, and this saga's
state on top: what succeeded, where it stands now (the step it awaits, ringed and marked
"now"), what failed or was refused, and the compensation path it took (right to left along
the bottom row). A saga without a definition (a choreographed flow's trace, a 2PC
transaction's phases) is drawn as the chain of its steps. Every text is escaped.
"""

from __future__ import annotations

from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT, GAP, TOP, MARGIN = 236, 50, 40, 34, 16
COMPENSATION_Y = TOP + HEIGHT + 62

STYLE = """
.box{stroke:#555;stroke-width:1.5;rx:6}
.pending{fill:#f3f3f3;stroke:#bbb}.done{fill:#d9f2dc;stroke:#2e7d32}.now{fill:#dceaff;stroke:#1565c0;stroke-width:4}
.retrying{fill:#fff3cd;stroke:#b26a00;stroke-width:4}.failed{fill:#fde0e0;stroke:#c62828;stroke-width:3}.refused{fill:#ffe9d6;stroke:#d84315}
.label{font:13px sans-serif;fill:#222}.small{font:11px sans-serif;fill:#555}.mark{font:bold 12px sans-serif;fill:#1565c0}
.arrow{stroke:#999;stroke-width:1.5;fill:none;marker-end:url(#arrow)}.taken{stroke:#2e7d32;stroke-width:2.5}
.comp{stroke-dasharray:5 4}.comptaken{stroke:#6a1b9a;stroke-width:2.5;stroke-dasharray:none}
.end{font:bold 13px sans-serif}
"""

CLASSES = {"SUCCEEDED": "done", "WAITING": "now", "RETRY_WAIT": "retrying", "FAILED": "failed", "REFUSED": "refused"}


def saga_diagram(saga: dict[str, Any], outline: list[dict[str, Any]] | None) -> SafeString:
    """The SVG of ``saga`` (a ``sagas.selectors.saga_get`` answer) and its definition ``outline``."""
    if outline:
        return _definition_diagram(saga, outline)
    return _chain_diagram(saga)


def _status(saga: dict[str, Any], name: str, kind: str) -> str | None:
    found = [step["status"] for step in saga["steps"] if step["name"] == name and step["kind"] == kind]
    return str(found[-1]) if found else None


def _box(x: int, y: int, title: str, subtitle: str, css: str, *, now: bool = False, attempts: int | None = None) -> str:
    parts = [
        f'<g class="step {css}" data-step="{escape(title)}">',
        f'<rect class="box {css}" x="{x}" y="{y}" width="{WIDTH}" height="{HEIGHT}" rx="6"/>',
        f'<text class="label" x="{x + 10}" y="{y + 20}">{escape(title)}</text>',
        f'<text class="small" x="{x + 10}" y="{y + 38}">{escape(subtitle)}</text>',
    ]
    if attempts and attempts > 1:
        parts.append(f'<text class="small" x="{x + WIDTH - 10}" y="{y + 20}" text-anchor="end">x{attempts}</text>')
    if now:
        parts.append(f'<text class="mark" x="{x + WIDTH / 2}" y="{y - 8}" text-anchor="middle">&#9660; now</text>')
    parts.append("</g>")
    return "".join(parts)


def _svg(width: int, height: int, body: list[str], title: str) -> SafeString:
    defs = '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#777"/></marker></defs>'
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="saga-diagram" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}">'
        f"<title>{escape(title)}</title><style>{STYLE}</style>{defs}{''.join(body)}</svg>"
    )
    return mark_safe(svg)  # noqa: S308 - every text above went through escape()


def _attempts(saga: dict[str, Any], name: str, kind: str) -> int | None:
    found = [step["attempts"] for step in saga["steps"] if step["name"] == name and step["kind"] == kind]
    return int(found[-1]) if found else None


def _definition_diagram(saga: dict[str, Any], outline: list[dict[str, Any]]) -> SafeString:
    awaiting = saga.get("awaiting") or {}
    body: list[str] = []
    xs = [MARGIN + i * (WIDTH + GAP) for i in range(len(outline))]
    for i, step in enumerate(outline):
        status = _status(saga, step["name"], "forward")
        css = CLASSES.get(status or "", "pending")
        now = awaiting.get("step") == step["name"] and awaiting.get("kind") == "forward"
        role = {"pivot": "pivot", "retriable": "retriable"}.get(step["role"], "compensatable")
        body.append(_box(xs[i], TOP, step["name"], f"{role} · {step['command']}", css, now=now, attempts=_attempts(saga, step["name"], "forward")))
        if i:
            taken = " taken" if status else ""
            body.append(f'<path class="arrow{taken}" d="M{xs[i - 1] + WIDTH},{TOP + HEIGHT / 2} L{xs[i] - 2},{TOP + HEIGHT / 2}"/>')
        if step["compensation"]:
            comp_status = _status(saga, step["name"], "compensation")
            comp_css = CLASSES.get(comp_status or "", "pending")
            comp_now = awaiting.get("step") == step["name"] and awaiting.get("kind") == "compensation"
            body.append(_box(xs[i], COMPENSATION_Y, f"undo {step['name']}", step["compensation"], comp_css, now=comp_now, attempts=_attempts(saga, step["name"], "compensation")))
            taken = " comptaken" if comp_status else ""
            body.append(f'<path class="arrow comp{taken}" d="M{xs[i] + WIDTH / 2},{TOP + HEIGHT} L{xs[i] + WIDTH / 2},{COMPENSATION_Y - 2}"/>')
            previous = next((j for j in range(i - 1, -1, -1) if outline[j]["compensation"]), None)
            if previous is not None:
                went_on = comp_status == "SUCCEEDED" and _status(saga, outline[previous]["name"], "compensation") is not None
                body.append(f'<path class="arrow comp{" comptaken" if went_on else ""}" d="M{xs[i]},{COMPENSATION_Y + HEIGHT / 2} L{xs[previous] + WIDTH + 2},{COMPENSATION_Y + HEIGHT / 2}"/>')
    width = xs[-1] + WIDTH + MARGIN + 110
    height = COMPENSATION_Y + HEIGHT + MARGIN + 10
    state = str(saga["state"])
    end_x = xs[-1] + WIDTH + 18
    colour = {"COMPLETED": "#2e7d32", "COMPENSATED": "#6a1b9a", "FAILED": "#c62828"}.get(state, "#1565c0")
    body.append(f'<text class="end" x="{end_x}" y="{TOP + HEIGHT / 2 + 5}" fill="{colour}">{escape(state)}</text>')
    return _svg(width, height, body, f"{saga['type']} v{saga['definition_version']}: {state}")


def _chain_diagram(saga: dict[str, Any]) -> SafeString:
    steps = saga["steps"] or [{"name": "(no step yet)", "status": None, "kind": "forward", "attempts": 0}]
    body: list[str] = []
    per_row = 5
    for i, step in enumerate(steps):
        row, col = divmod(i, per_row)
        x, y = MARGIN + col * (WIDTH + GAP), TOP + row * (HEIGHT + 50)
        css = CLASSES.get(str(step.get("status") or ""), "pending")
        now = step.get("status") in ("WAITING", "RETRY_WAIT", "FAILED") and i == len(steps) - 1 and saga["state"] in ("RUNNING", "COMPENSATING")
        subtitle = str(step.get("context") or step.get("kind") or "")
        body.append(_box(x, y, str(step["name"]), subtitle, css, now=now, attempts=step.get("attempts")))
        if col:
            body.append(f'<path class="arrow taken" d="M{x - GAP},{y + HEIGHT / 2} L{x - 2},{y + HEIGHT / 2}"/>')
    rows = (len(steps) + per_row - 1) // per_row
    width = MARGIN * 2 + min(len(steps), per_row) * (WIDTH + GAP) + 90
    height = TOP + rows * (HEIGHT + 50) + MARGIN
    last_col = (len(steps) - 1) % per_row
    end_x = MARGIN + last_col * (WIDTH + GAP) + WIDTH + 14
    end_y = TOP + (rows - 1) * (HEIGHT + 50) + HEIGHT / 2 + 5
    body.append(f'<text class="end" x="{end_x}" y="{end_y}">{escape(str(saga["state"]))}</text>')
    return _svg(width, height, body, f"{saga['mode']} {saga['type']}: {saga['state']}")
