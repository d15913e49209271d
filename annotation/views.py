"""The annotator's pages. The ranking page is rendered here, on the server, markdown included;
its script (static/annotation/annotate.js) only reorders cards and talks to the API."""

from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone

from annotation.leases import assignment_next
from annotation.models import Assignment
from annotation.quality import annotator_standing
from annotation.rendering import markdown_to_html
from annotation.roles import Role, user_role
from annotation.selectors import (
    annotator_done_today,
    annotator_progress,
    assignment_completions,
)

FLAG_CHOICES = [
    ("unsafe", "Unsafe"),
    ("factually_wrong", "Factually wrong"),
    ("off_topic", "Off-topic"),
    ("other", "Other"),
]
# A completion longer than this starts collapsed (the annotator expands it with a click or E).
LONG_CHARS = 1200
LONG_LINES = 24


@login_required
def annotate_page(request: HttpRequest) -> HttpResponse:
    if user_role(request.user) not in (Role.ANNOTATOR, Role.ADMIN):
        return render(request, "annotation/forbidden.html", status=403)
    context = _workspace(request.user)  # type: ignore[arg-type]
    return render(request, "annotation/annotate.html", context)


@login_required
def annotate_next_fragment(request: HttpRequest) -> HttpResponse:
    """The workspace for the next assignment, swapped into the page after a submit or skip."""
    if user_role(request.user) not in (Role.ANNOTATOR, Role.ADMIN):
        return render(request, "annotation/forbidden.html", status=403)
    context = _workspace(request.user)  # type: ignore[arg-type]
    return render(request, "annotation/_workspace.html", context)


def _workspace(user: User) -> dict[str, Any]:
    assignment = assignment_next(annotator=user)
    # Gold standing: warned annotators see a notice, paused ones why they get no work.
    standing = annotator_standing(user=user)
    if assignment is None:
        return {
            "assignment": None,
            "done_today": annotator_done_today(user=user),
            "standing": standing,
        }
    return {**_assignment_context(user, assignment), "standing": standing}


def _assignment_context(user: User, assignment: Assignment) -> dict[str, Any]:
    prompt = assignment.prompt
    batch = prompt.batch
    messages = prompt.messages if isinstance(prompt.messages, list) else []
    turns = [
        {
            "role": str(turn.get("role", "user")) if isinstance(turn, dict) else "user",
            "html": markdown_to_html(
                str(turn.get("content", "")) if isinstance(turn, dict) else str(turn)
            ),
        }
        for turn in messages
    ] or [{"role": "user", "html": markdown_to_html(prompt.text)}]
    cards = [
        {
            "id": completion.pk,
            "label": chr(ord("A") + index) if index < 26 else str(index + 1),
            "html": markdown_to_html(completion.text),
            "long": len(completion.text) > LONG_CHARS or completion.text.count("\n") > LONG_LINES,
        }
        for index, completion in enumerate(assignment_completions(assignment=assignment))
    ]
    return {
        "assignment": assignment,
        "batch": batch,
        "turns": turns,
        "cards": cards,
        "guidelines_html": markdown_to_html(batch.guidelines) if batch.guidelines else "",
        "progress": annotator_progress(user=user, batch=batch),
        "flag_choices": FLAG_CHOICES,
        "now": timezone.now(),
    }
