"""The assignment queue: leasing prompts to annotators, and closing leases by submitting,
skipping or letting them expire.

How overlap stays exact with many annotators claiming at once: each prompt row carries two
counters, `human_ranking_count` and `lease_count`. A claim walks one batch in queue order
with `SELECT ... FOR NO KEY UPDATE SKIP LOCKED` (two claimers never wait on each other, they
take different rows), then bumps `lease_count` with a conditional UPDATE that re-reads the
newest row version: a prompt whose last slot a concurrent transaction took is refused there,
and the claim moves on. Every write to the counters happens under that prompt row's lock, so
`human_ranking_count + lease_count <= overlap + extra_overlap` holds at every commit (extra
annotators for low agreement raise `extra_overlap`; gold prompts, served by
`annotation.quality.gold_claim` before the queue, are outside it). NO KEY UPDATE, not
UPDATE: the stronger lock would also block the foreign-key checks of a submit's inserts, so
claims would skip rows needlessly, and where locks wait, a submit and a claim could deadlock.
SQLite (the embedded single-user default) has no row locks: it ignores FOR UPDATE and
serialises writers on the whole database, and the same conditional UPDATE keeps the counters
exact there too. On PostgreSQL the claim is one SQL statement (see `_claim_sql`).

Lock order, to stay free of deadlocks: assignment row, then prompt row. Reaping runs in its
own short transaction before a claim, never inside one.
"""

import random
from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import (
    Exists,
    F,
    OuterRef,
    QuerySet,
    prefetch_related_objects,
)
from django.utils import timezone

from annotation import quality
from annotation.lease_sql import LEASED_CTE
from annotation.models import Assignment, Prompt, PromptBatch, Ranking
from annotation.selectors import assignment_get_for_annotator
from annotation.services import RankingConflict, ranking_submit
from annotation.transactions import retry_aborted_transaction

# A claim that loses every candidate it locks to a concurrent claimer tries again, this many
# times, before reporting that nothing is left. Each retry sees the other claims committed.
CLAIM_ATTEMPTS = 5


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


@retry_aborted_transaction()
def assignment_next(*, annotator: User) -> Assignment | None:
    """The annotator's active lease if they hold one, else a new lease on the next prompt in
    the queue, else None when no published batch has a prompt left for them.

    Queue order: higher batch priority first, then the prompts with the fewest submitted
    rankings, then the oldest.
    """
    now = timezone.now()
    # One indexed look answers two questions: does the annotator hold a lease, and has any
    # lease anywhere lapsed (usually none has) so that its slot must go back before a claim.
    live = _live_leases(annotator_id=annotator.pk, now=now)
    mine = next((row for row in live if row[1] == annotator.pk), None)
    if mine is not None and mine[2] > now:
        return _with_prompt(Assignment.objects.filter(pk=mine[0])).get()
    if live:
        # Closes their own lapsed lease too, which the partial unique index (one active
        # assignment per annotator) requires before they get a new one.
        _close_lapsed(Assignment.objects.all(), now=now)
    gold = quality.gold_claim(annotator=annotator, now=now, expires=now + lease_duration())
    if gold.paused:
        return None
    if gold.assignment is not None:
        return gold.assignment
    for _ in range(CLAIM_ATTEMPTS):
        try:
            claimed = _claim(annotator=annotator, now=now)
        except IntegrityError:
            # The same annotator claimed in another tab a moment ago: one active lease per
            # annotator (a partial unique index) refused ours; hand them theirs.
            return _with_prompt(
                Assignment.objects.filter(annotator=annotator, status=Assignment.Status.ACTIVE)
            ).first()
        if claimed is not _CONTENDED:
            return claimed  # type: ignore[return-value]
    return None


# Raw SQL on the claim path, here and in `_claim_sql`: it runs on every request of the
# annotation loop, and composing these statements through the ORM costs several times the CPU
# of running them (measured in bench/annotate_load.py). Plain SQL that SQLite runs too.
_LIVE_LEASES_SQL = f"""
    SELECT id, annotator_id, lease_expires_at FROM {Assignment._meta.db_table}
    WHERE status = '{Assignment.Status.ACTIVE}' AND (annotator_id = %s OR lease_expires_at <= %s)
    ORDER BY CASE WHEN annotator_id = %s THEN 0 ELSE 1 END
    LIMIT 2
"""
_PUBLISHED_BATCHES_SQL = f"""
    SELECT id, priority FROM {PromptBatch._meta.db_table}
    WHERE status = '{PromptBatch.Status.PUBLISHED}'
"""


def _live_leases(*, annotator_id: int, now: datetime) -> list[tuple[int, int, datetime]]:
    """The annotator's active lease and any active lease past its expiry (at most 2 rows,
    the annotator's first): (id, annotator_id, lease_expires_at)."""
    with connection.cursor() as cursor:
        cursor.execute(_LIVE_LEASES_SQL, [annotator_id, now, annotator_id])
        return [(pk, owner, _aware(expires)) for pk, owner, expires in cursor.fetchall()]


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes (in UTC), PostgreSQL aware ones.
    return timezone.make_aware(moment, UTC) if timezone.is_naive(moment) else moment


def _with_prompt(assignments: QuerySet[Assignment]) -> QuerySet[Assignment]:
    """What answering with an assignment reads: its prompt and the prompt's batch."""
    return assignments.select_related("prompt__batch")


class _Contended:
    """Every candidate seen was taken by a concurrent claim: look again."""


_CONTENDED = _Contended()


def _claim(*, annotator: User, now: datetime) -> Assignment | _Contended | None:
    levels: dict[int, list[int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_PUBLISHED_BATCHES_SQL)
        for batch_id, priority in cursor.fetchall():
            levels.setdefault(priority, []).append(batch_id)
    claim = _claim_in_one_statement if _has_skip_locked() else _claim_portable
    saw_candidates = False
    for priority in sorted(levels, reverse=True):
        saw, assignment = claim(annotator=annotator, batch_ids=levels[priority], now=now)
        if assignment is not None:
            return assignment
        saw_candidates = saw_candidates or saw
    return _CONTENDED if saw_candidates else None


def _has_skip_locked() -> bool:
    return connection.features.has_select_for_update_skip_locked


# The claim on PostgreSQL, as one statement: it is the hot path of the annotation loop, and one
# round trip instead of seven (begin, find, lock, count, read, insert, commit) is most of its
# cost. Each CTE does one step of `_claim_portable`, which reads the same in the ORM:
#   candidate  the first prompt in queue order that has a free slot and that this annotator
#              never had, locked; SKIP LOCKED steps over rows other claims hold;
#   slot       takes the slot, re-checked on the newest row version (our snapshot may predate
#              a claim that committed after it and took the last slot);
#   leased     the assignment, its completions shuffled by the database (annotation/lease_sql.py,
#              shared with the gold claim in annotation.quality).
def _claim_sql(*, one_batch: bool) -> tuple[str, str]:
    """The claim statement and the look that follows it when it found no candidate.

    One batch (the usual case) is compared with `=`: only then does PostgreSQL walk the queue
    index (batch, rankings, created) in order and stop at the first free prompt; `= ANY` of
    several batches sorts every open prompt of those batches instead.
    """
    batch_filter = "p.batch_id = %(batch_id)s" if one_batch else "p.batch_id = ANY(%(batch_ids)s)"
    open_to_annotator = f"""
        FROM annotation_prompt p
        JOIN annotation_promptbatch b ON b.id = p.batch_id
        WHERE {batch_filter}
          AND p.human_ranking_count + p.lease_count < b.overlap + p.extra_overlap
          AND p.gold_ranking IS NULL
          AND NOT EXISTS (
              SELECT 1 FROM annotation_assignment a
              WHERE a.prompt_id = p.id AND a.annotator_id = %(annotator)s
          )
    """
    claim = f"""
    WITH candidate AS (
        SELECT p.id
        {open_to_annotator}
        ORDER BY p.human_ranking_count, p.created_at, p.id
        LIMIT 1
        FOR NO KEY UPDATE OF p SKIP LOCKED
    ), slot AS (
        UPDATE annotation_prompt p
        SET lease_count = p.lease_count + 1
        FROM candidate, annotation_promptbatch b
        WHERE p.id = candidate.id
          AND b.id = p.batch_id
          AND p.human_ranking_count + p.lease_count < b.overlap + p.extra_overlap
        RETURNING p.id
    ),{LEASED_CTE}
    SELECT (SELECT count(*) FROM candidate), (SELECT id FROM leased)
    """
    # SKIP LOCKED also steps over the last open prompts while a submit or a claim holds them
    # for a moment: without a candidate, this non-locking look says whether to try again.
    any_open = f"SELECT EXISTS (SELECT 1 {open_to_annotator})"
    return claim, any_open


_CLAIM_ONE_BATCH = _claim_sql(one_batch=True)
_CLAIM_BATCHES = _claim_sql(one_batch=False)


def _claim_in_one_statement(
    *, annotator: User, batch_ids: list[int], now: datetime
) -> tuple[bool, Assignment | None]:
    claim_sql, any_open_sql = _CLAIM_ONE_BATCH if len(batch_ids) == 1 else _CLAIM_BATCHES
    params: dict[str, Any] = {
        "batch_id": batch_ids[0],
        "batch_ids": batch_ids,
        "annotator": annotator.pk,
        "expires": now + lease_duration(),
        "now": now,
    }
    # Inside a caller's transaction, a savepoint, so that a unique violation (the same
    # annotator claiming in two tabs at once) does not break that transaction; on its own,
    # the statement is atomic and needs no BEGIN/COMMIT round trips.
    atomic = transaction.atomic() if connection.in_atomic_block else nullcontext()
    with atomic, connection.cursor() as cursor:
        cursor.execute(claim_sql, params)
        seen, assignment_id = cursor.fetchone()
        if assignment_id is None and not seen:
            cursor.execute(any_open_sql, params)
            (seen,) = cursor.fetchone()
    if assignment_id is None:
        return bool(seen), None
    return True, _with_prompt(Assignment.objects.filter(pk=assignment_id)).get()


@transaction.atomic
def _claim_portable(
    *, annotator: User, batch_ids: list[int], now: datetime
) -> tuple[bool, Assignment | None]:
    """The claim in the ORM, for SQLite (the embedded single-user default). SQLite ignores
    FOR UPDATE and lets one writer at a time; the conditional UPDATE keeps the slot count
    exact all the same. It is also correct, if slower, on PostgreSQL."""
    already_had = Assignment.objects.filter(prompt=OuterRef("pk"), annotator=annotator)
    candidates = list(
        Prompt.objects.filter(batch_id__in=batch_ids, gold_ranking__isnull=True)
        .select_related("batch")
        .alias(taken=F("human_ranking_count") + F("lease_count"))
        .filter(taken__lt=F("batch__overlap") + F("extra_overlap"))
        .exclude(Exists(already_had))
        .order_by("human_ranking_count", "created_at", "id")
        # One row at a time: where locks wait (PostgreSQL without SKIP LOCKED in the tests),
        # two claims that each held one row and wanted the other's would deadlock.
        .select_for_update(skip_locked=_has_skip_locked(), of=("self",), no_key=True)[:1]
    )
    for prompt in candidates:
        took_slot = (
            Prompt.objects.filter(pk=prompt.pk)
            .filter(
                human_ranking_count__lt=prompt.batch.overlap + F("extra_overlap") - F("lease_count")
            )
            .update(lease_count=F("lease_count") + 1)
        )
        if not took_slot:
            continue
        # Loaded here once: the API answers with these completions right away.
        prefetch_related_objects([prompt], "completions")
        display_order = [completion.pk for completion in prompt.completions.all()]
        random.shuffle(display_order)
        assignment = Assignment.objects.create(
            prompt=prompt,
            annotator=annotator,
            lease_expires_at=now + lease_duration(),
            display_order=display_order,
        )
        return True, assignment
    return bool(candidates), None


def assignments_reap_expired(*, now: datetime | None = None) -> int:
    """Close every lease past its expiry and give its prompt's slot back. Returns how many.

    Runs before each claim. Usually nothing has lapsed, and one indexed probe outside any
    transaction says so; the locking transaction runs only when there is something to close.
    """
    now = now or timezone.now()
    lapsed = Assignment.objects.filter(status=Assignment.Status.ACTIVE, lease_expires_at__lte=now)
    if not lapsed.exists():
        return 0
    return _close_lapsed(lapsed, now=now)


@transaction.atomic
def _close_lapsed(assignments: QuerySet[Assignment], *, now: datetime) -> int:
    """Mark the lapsed ones among `assignments` expired and give their slots back.

    Its own transaction, taken before any prompt lock (see the module's lock order). Rows
    another transaction holds are skipped: a submit or skip of them is deciding their fate.
    """
    expired = list(
        assignments.filter(status=Assignment.Status.ACTIVE, lease_expires_at__lte=now)
        .select_for_update(skip_locked=True)
        .values_list("pk", "prompt_id")
    )
    if not expired:
        return 0
    Assignment.objects.filter(pk__in=[pk for pk, _ in expired]).update(
        status=Assignment.Status.EXPIRED, finished_at=now
    )
    per_prompt = Counter(prompt_id for _, prompt_id in expired)
    for prompt_id in sorted(per_prompt):  # one order for all reapers: no deadlock between them
        Prompt.objects.filter(pk=prompt_id).update(
            lease_count=F("lease_count") - per_prompt[prompt_id]
        )
    return len(expired)


# The two writes that close a submitted lease, in plain SQL for the reason `_LIVE_LEASES_SQL`
# gives.
_CLOSE_SUBMITTED_SQL = f"""
    UPDATE {Assignment._meta.db_table}
    SET status = '{Assignment.Status.SUBMITTED}', ranking_id = %s, finished_at = %s
    WHERE id = %s
"""
_COUNT_SUBMITTED_SQL = f"""
    UPDATE {Prompt._meta.db_table}
    SET lease_count = lease_count - 1, human_ranking_count = human_ranking_count + 1
    WHERE id = %s
"""


@retry_aborted_transaction()
@transaction.atomic
def assignment_submit(
    *,
    annotator: User,
    assignment_id: int,
    groups: object,
    not_rankable: bool = False,
    flags: dict[str, list[str]] | None = None,
    rationale: str = "",
    duration_ms: int | None = None,
) -> SubmittedRanking:
    """Record the annotator's ranking for their leased prompt and close the lease, in one
    transaction: the ranking, its comparisons, the assignment and the prompt's counters all
    commit together or not at all.

    Raises Assignment.DoesNotExist when `annotator` holds no such assignment, AssignmentClosed
    when the lease is no longer active (submitted, skipped, expired), InvalidRanking when the
    ranking is not a partition of the prompt's completions.
    """
    locked = _lock_open(annotator=annotator, assignment_id=assignment_id)
    prompt = locked.prompt
    screened = quality.submission_screen(
        prompt=prompt, groups=groups, display_order=locked.display_order
    )
    try:
        ranking = ranking_submit(
            prompt=prompt,
            groups=screened.groups,
            annotator=annotator,
            not_rankable=not_rankable,
            display_order=screened.display_order,
            duration_ms=duration_ms,
            rationale=rationale,
            flags=flags,
            first_for_annotator=True,  # we hold the open assignment's row lock
        )
    except RankingConflict as exc:
        raise AssignmentClosed(str(exc), assignment=locked) from exc
    quality.ranking_screened(ranking=ranking, prompt=prompt, screen=screened)
    with connection.cursor() as cursor:
        cursor.execute(_CLOSE_SUBMITTED_SQL, [ranking.pk, timezone.now(), locked.pk])
        cursor.execute(_COUNT_SUBMITTED_SQL, [prompt.pk])
    k = ranking.k
    comparisons = 0 if ranking.not_rankable else k * (k - 1) // 2
    return SubmittedRanking(ranking=ranking, comparisons=comparisons)


@retry_aborted_transaction()
@transaction.atomic
def assignment_skip(*, annotator: User, assignment_id: int, reason: str = "") -> Assignment:
    """Give the leased prompt back to the pool; the annotator will not be offered it again.

    Raises Assignment.DoesNotExist or AssignmentClosed as `assignment_submit` does.
    """
    locked = _lock_open(annotator=annotator, assignment_id=assignment_id)
    locked.status = Assignment.Status.SKIPPED
    locked.skip_reason = reason
    locked.finished_at = timezone.now()
    locked.save(update_fields=["status", "skip_reason", "finished_at"])
    Prompt.objects.filter(pk=locked.prompt_id).update(lease_count=F("lease_count") - 1)
    return locked


def _lock_open(*, annotator: User, assignment_id: int) -> Assignment:
    """Fetch the annotator's assignment with its row locked, and check that its lease is still
    open. Call inside a transaction; the lock serialises a double submit, a submit racing a
    skip, and reaping."""
    locked = assignment_get_for_annotator(
        user=annotator, assignment_id=assignment_id, for_update=True
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
