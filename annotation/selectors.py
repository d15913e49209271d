"""Reads of the annotation data. Permission checks live here, once per object: every page and
endpoint that touches an assignment fetches it through `assignment_get_for_annotator`."""

from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import User
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from annotation.models import Assignment, Completion, Prompt, PromptBatch


def assignment_get_for_annotator(
    *, user: User, assignment_id: int, for_update: bool = False
) -> Assignment:
    """The assignment if `user` holds it; Assignment.DoesNotExist otherwise, so that someone
    else's assignment looks exactly like a missing one (a 404, not a 403).

    `for_update` locks the assignment's row (not its prompt's) until the transaction ends.
    """
    assignments = Assignment.objects.select_related("prompt__batch")
    if for_update:
        assignments = assignments.select_for_update(of=("self",))
    return assignments.get(
        pk=assignment_id,
        annotator=user,
    )


_PROMPT_COMPLETIONS_SQL = f"SELECT * FROM {Completion._meta.db_table} WHERE prompt_id = %s"


def assignment_completions(*, assignment: Assignment) -> list[Completion]:
    """The prompt's completions in the order this annotator was shown them."""
    # Raw SQL for the reason annotation.leases gives: this runs on every next-assignment call.
    by_id = {
        c.pk: c for c in Completion.objects.raw(_PROMPT_COMPLETIONS_SQL, [assignment.prompt_id])
    }
    shown = [by_id[pk] for pk in assignment.display_order if pk in by_id]
    # Completions added after the lease was taken would otherwise be invisible yet required.
    shown += [c for pk, c in sorted(by_id.items()) if pk not in assignment.display_order]
    return shown


@dataclass(frozen=True)
class Progress:
    done_today: int
    left_in_batch: int


def annotator_done_today(*, user: User, now: datetime | None = None) -> int:
    """Rankings `user` submitted since midnight, in the site's time zone."""
    midnight = timezone.localtime(now or timezone.now()).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return Assignment.objects.filter(
        annotator=user, status=Assignment.Status.SUBMITTED, finished_at__gte=midnight
    ).count()


def annotator_progress(*, user: User, batch: PromptBatch, now: datetime | None = None) -> Progress:
    """Rankings `user` submitted today, and the prompts of `batch` that still want rankings
    and that `user` has not finished (the one they hold now counts as left)."""
    done_today = annotator_done_today(user=user, now=now)
    had = Assignment.objects.filter(prompt=OuterRef("pk"), annotator=user).exclude(
        status=Assignment.Status.ACTIVE
    )
    left = (
        Prompt.objects.filter(
            batch=batch,
            gold_ranking__isnull=True,
            human_ranking_count__lt=F("batch__overlap") + F("extra_overlap"),
        )
        .exclude(Exists(had))
        .count()
    )
    return Progress(done_today=done_today, left_in_batch=left)
