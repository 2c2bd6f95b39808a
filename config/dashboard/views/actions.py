"""``/dashboard/actions/<name>/``: one action's page. GET shows what it will do (its dry run)
and a confirmation form; only a POST of that form (with its CSRF token) runs it, and the run
is audited. A GET never acts."""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from config.dashboard.access import staff_only
from config.dashboard.actions import ACTIONS, Refused, audit_record


def _params(query: Any) -> dict[str, Any]:
    params: dict[str, Any] = {name: query.get(name, "") for name in query}
    if "saga" in query and len(query.getlist("saga")) > 1:
        params["saga"] = query.getlist("saga")
    return params


@staff_only
@require_http_methods(["GET", "POST"])
def action_page(request: HttpRequest, name: str) -> HttpResponse:
    action = ACTIONS.get(name)
    if action is None:
        raise Http404("no such action")
    if request.method == "POST":
        params = _params(request.POST)
        if name == "sagas-retry-failed":
            params["saga"] = request.POST.getlist("saga")
        outcome = action.run(params, request.user.get_username())
        audit_record(user=request.user, action=action, outcome=outcome)
        for line in outcome.lines[:50]:
            messages.add_message(request, messages.SUCCESS if outcome.ok else messages.ERROR, f"{action.title}: {line}")
        return redirect(action.back(params))
    params = _params(request.GET)
    try:
        plan, refusal = action.preview(params), None
    except Refused as exc:
        plan, refusal = None, str(exc)
    return render(request, "dashboard/actions/confirm.html", {"action": action, "plan": plan, "refusal": refusal, "back": action.back(params)})
