"""The assignment queue: leasing prompts to annotators, and closing leases by submitting,
skipping or letting them expire.

How overlap stays exact with many annotators claiming at once: each prompt row carries two
counters, `human_ranking_count` and `lease_count`. A claim walks one batch in queue order
with `SELECT ... FOR UPDATE SKIP LOCKED` (two claimers never wait on each other, they take
different rows), then bumps `lease_count` with a conditional UPDATE that re-reads the newest
row version: a prompt whose last slot a concurrent transaction took is refused there, and the
claim moves on. Every write to the counters happens under that prompt row's lock, so
`human_ranking_count + lease_count <= overlap` holds at every commit. SQLite (the embedded
single-user default) has no row locks: it ignores FOR UPDATE and serialises writers on the
whole database, and the same conditional UPDATE keeps the counters exact there too.

Lock order, to stay free of deadlocks: assignment row, then prompt row. Reaping runs in its
own short transaction before a claim, never inside one.
"""

import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef
from django.utils import timezone

from annotation.models import Assignment, Completion, Prompt, PromptBatch, Ranking
from annotation.services import RankingConflict, ranking_submit

# A claim that loses every candidate it locks to a concurrent claimer tries again, this many
# times, before reporting that nothing is left. Each retry sees the other claims committed.
CLAIM_ATTEMPTS = 5
# Candidates locked per scan. SKIP LOCKED already steps over rows others hold; a few spares
# cover prompts whose last slot went to a transaction that committed after our snapshot.
CLAIM_CANDIDATES = 3


class AssignmentClosed(Exception):
    """The assignment can no longer be submitted or skipped (HTTP 409)."""

    def __init__(self, message: str, *, assignment: Assignment) -> None:
        super().__init__(message)
        self.assignment = assignment


@dataclass(frozen=True)
class SubmittedRanking:
    ranking: Ranking
    comparisons: int


def lease_duration() -> timedelta:
    return timedelta(minutes=settings.ANNOTATION_LEASE_MINUTES)


def assignment_next(*, annotator: User) -> Assignment | None:
    """The annotator's active lease if they hold one, else a new lease on the next prompt in
    the queue, else None when no published batch has a prompt left for them.

    Queue order: higher batch priority first, then the prompts with the fewest submitted
    rankings, then the oldest.
    """
    now = timezone.now()
    current = _active_assignment(annotator=annotator, now=now)
    if current is not None:
        return current
    # Also closes this annotator's own lapsed lease, which the partial unique index (one
    # active assignment per annotator) requires before they get a new one.
    assignments_reap_expired(now=now)
    for _ in range(CLAIM_ATTEMPTS):
        try:
            claimed = _claim(annotator=annotator, now=now)
        except IntegrityError:
            # The same annotator claimed in another tab a moment ago: one active lease per
            # annotator (a partial unique index) refused ours; hand them theirs.
            current = _active_assignment(annotator=annotator, now=timezone.now())
            if current is not None:
                return current
            continue
        if claimed is not _CONTENDED:
            return claimed  # type: ignore[return-value]
    return None


class _Contended:
    """Every candidate seen was taken by a concurrent claim: look again."""


_CONTENDED = _Contended()


@transaction.atomic
def _claim(*, annotator: User, now: datetime) -> Assignment | _Contended | None:
    published = PromptBatch.objects.filter(status=PromptBatch.Status.PUBLISHED)
    levels: dict[int, list[int]] = {}
    for batch_id, priority in published.values_list("id", "priority"):
        levels.setdefault(priority, []).append(batch_id)
    already_had = Assignment.objects.filter(prompt=OuterRef("pk"), annotator=annotator)
    saw_candidates = False
    for priority in sorted(levels, reverse=True):
        candidates = list(
            Prompt.objects.filter(batch_id__in=levels[priority])
            .alias(taken=F("human_ranking_count") + F("lease_count"))
            .filter(taken__lt=F("batch__overlap"))
            .exclude(Exists(already_had))
            .order_by("human_ranking_count", "created_at", "id")
            .select_for_update(skip_locked=True, of=("self",))
            .values_list("pk", "batch__overlap")[:CLAIM_CANDIDATES]
        )
        saw_candidates = saw_candidates or bool(candidates)
        for prompt_id, overlap in candidates:
            # Re-checked on the newest row version: our snapshot may predate a claim that
            # committed after it and took the last slot.
            took_slot = (
                Prompt.objects.filter(pk=prompt_id)
                .filter(human_ranking_count__lt=overlap - F("lease_count"))
                .update(lease_count=F("lease_count") + 1)
            )
            if not took_slot:
                continue
            display_order = list(
                Completion.objects.filter(prompt_id=prompt_id).values_list("id", flat=True)
            )
            random.shuffle(display_order)
            return Assignment.objects.create(
                prompt=Prompt.objects.select_related("batch").get(pk=prompt_id),
                annotator=annotator,
                lease_expires_at=now + lease_duration(),
                display_order=display_order,
            )
    return _CONTENDED if saw_candidates else None


def assignments_reap_expired(*, now: datetime | None = None) -> int:
    """Close every lease past its expiry and give its prompt's slot back. Returns how many.

    Its own transaction, taken before any prompt lock (see the module's lock order).
    """
    now = now or timezone.now()
    with transaction.atomic():
        expired = list(
            Assignment.objects.filter(status=Assignment.Status.ACTIVE, lease_expires_at__lte=now)
            .select_for_update(skip_locked=True)
            .values_list("pk", flat=True)
        )
        if not expired:
            return 0
        Assignment.objects.filter(pk__in=expired).update(
            status=Assignment.Status.EXPIRED, finished_at=now
        )
        per_prompt = (
            Assignment.objects.filter(pk__in=expired)
            .values("prompt_id")
            .annotate(n=Count("id"))
            .order_by("prompt_id")
        )
        for row in per_prompt:
            Prompt.objects.filter(pk=row["prompt_id"]).update(
                lease_count=F("lease_count") - row["n"]
            )
    return len(expired)


@transaction.atomic
def assignment_submit(
    *,
    assignment: Assignment,
    groups: object,
    not_rankable: bool = False,
    flags: dict[str, list[str]] | None = None,
    rationale: str = "",
    duration_ms: int | None = None,
) -> SubmittedRanking:
    """Record the annotator's ranking for their leased prompt and close the lease, in one
    transaction: the ranking, its comparisons, the assignment and the prompt's counters all
    commit together or not at all.

    Raises AssignmentClosed when the lease is no longer active (submitted, skipped, expired),
    InvalidRanking when the ranking is not a partition of the prompt's completions.
    """
    locked = _lock_open(assignment)
    prompt = Prompt.objects.select_related("batch").get(pk=locked.prompt_id)
    try:
        ranking = ranking_submit(
            prompt=prompt,
            groups=groups,
            annotator=locked.annotator,
            not_rankable=not_rankable,
            display_order=locked.display_order,
            duration_ms=duration_ms,
            rationale=rationale,
            flags=flags,
        )
    except RankingConflict as exc:
        raise AssignmentClosed(str(exc), assignment=locked) from exc
    now = timezone.now()
    Assignment.objects.filter(pk=locked.pk).update(
        status=Assignment.Status.SUBMITTED, ranking=ranking, finished_at=now
    )
    Prompt.objects.filter(pk=prompt.pk).update(
        lease_count=F("lease_count") - 1, human_ranking_count=F("human_ranking_count") + 1
    )
    k = ranking.k
    comparisons = 0 if ranking.not_rankable else k * (k - 1) // 2
    return SubmittedRanking(ranking=ranking, comparisons=comparisons)


@transaction.atomic
def assignment_skip(*, assignment: Assignment, reason: str = "") -> Assignment:
    """Give the leased prompt back to the pool; the annotator will not be offered it again."""
    locked = _lock_open(assignment)
    locked.status = Assignment.Status.SKIPPED
    locked.skip_reason = reason
    locked.finished_at = timezone.now()
    locked.save(update_fields=["status", "skip_reason", "finished_at"])
    Prompt.objects.filter(pk=locked.prompt_id).update(lease_count=F("lease_count") - 1)
    return locked


def _lock_open(assignment: Assignment) -> Assignment:
    """Lock the assignment row and check that its lease is still open. Call inside a
    transaction; the lock serialises a double submit, a submit racing a skip, and reaping."""
    locked = (
        Assignment.objects.select_for_update(of=("self",))
        .select_related("annotator")
        .get(pk=assignment.pk)
    )
    if locked.status == Assignment.Status.SUBMITTED:
        raise AssignmentClosed(
            f"assignment {locked.pk} was already submitted (ranking {locked.ranking_id})",
            assignment=locked,
        )
    if locked.status == Assignment.Status.SKIPPED:
        raise AssignmentClosed(f"assignment {locked.pk} was skipped", assignment=locked)
    if locked.status == Assignment.Status.EXPIRED or locked.lease_expires_at <= timezone.now():
        raise AssignmentClosed(
            f"the lease on assignment {locked.pk} expired at "
            f"{locked.lease_expires_at.isoformat(timespec='seconds')}; "
            "the prompt went back to the pool",
            assignment=locked,
        )
    return locked


def _active_assignment(*, annotator: User, now: datetime) -> Assignment | None:
    return (
        Assignment.objects.filter(
            annotator=annotator, status=Assignment.Status.ACTIVE, lease_expires_at__gt=now
        )
        .select_related("prompt__batch")
        .first()
    )
