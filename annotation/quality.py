"""Annotation quality: gold prompts, attention checks, agreement figures kept up to date, and
extra annotators for prompts people disagree on.

What touches the annotation hot path is kept small and lives here, called from
`annotation.leases`:

- `gold_claim` runs once per claim, before the ordinary queue: one SQL statement that says
  whether the annotator is paused and, at the batch's gold rate, leases them a gold prompt.
- `submission_screen` and `ranking_screened` run inside the submit transaction. They cost no
  query for an ordinary prompt (the prompt row is already loaded); a gold prompt or one with an
  attention check writes one quality row, and a gold prompt updates the annotator's standing.

Agreement is not computed in the request. `quality_refresh` recomputes the prompts whose human
ranking count moved since their figures were stored (a beat task every minute, and reports
before they read), so a page view never recomputes a batch from scratch.
"""

import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q, Sum
from django.db.models.functions import Length
from django.utils import timezone

from annotation.agreement import (
    RankingInput,
    attention_passed,
    gold_score,
    prompts_agreement,
)
from annotation.lease_sql import LEASED_CTE
from annotation.models import (
    AnnotatorQuality,
    Assignment,
    Completion,
    Prompt,
    PromptBatch,
    PromptQuality,
    Ranking,
    RankingQuality,
)
from annotation.rankings import normalize_groups, validate_partition

log = logging.getLogger(__name__)

REFRESH_CHUNK = 500


# --- the claim ------------------------------------------------------------------------------

# Paused or not, and (when the draw falls under a published batch's gold rate) a gold prompt
# the annotator never had, leased like any other: its lease counter moves, its completions are
# shuffled. A gold prompt is not bound by the batch's overlap: everyone gets to see it.
_GOLD_CLAIM_SQL = f"""
WITH paused AS (
    SELECT EXISTS (
        SELECT 1 FROM annotation_annotatorquality q
        WHERE q.annotator_id = %(annotator)s AND q.status = 'paused'
    ) AS yes
), candidate AS (
    SELECT p.id
    FROM annotation_prompt p
    JOIN annotation_promptbatch b ON b.id = p.batch_id
    WHERE p.gold_ranking IS NOT NULL
      AND b.status = 'published'
      AND b.gold_rate > %(draw)s
      AND NOT (SELECT yes FROM paused)
      AND NOT EXISTS (
          SELECT 1 FROM annotation_assignment a
          WHERE a.prompt_id = p.id AND a.annotator_id = %(annotator)s
      )
    ORDER BY b.priority DESC, random()
    LIMIT 1
    FOR NO KEY UPDATE OF p SKIP LOCKED
), slot AS (
    UPDATE annotation_prompt p SET lease_count = p.lease_count + 1
    FROM candidate WHERE p.id = candidate.id
    RETURNING p.id
),{LEASED_CTE}
SELECT (SELECT yes FROM paused), (SELECT id FROM leased)
"""


@dataclass(frozen=True)
class GoldClaim:
    paused: bool
    assignment: Assignment | None


def gold_claim(*, annotator: User, now: datetime, expires: datetime) -> GoldClaim:
    """Whether `annotator` is paused, and else perhaps a lease on a gold prompt. Call before
    the ordinary claim, outside any prompt lock; one statement on PostgreSQL."""
    draw = random.random()
    if connection.vendor != "postgresql":
        return _gold_claim_portable(annotator=annotator, draw=draw, now=now, expires=expires)
    params: dict[str, Any] = {
        "annotator": annotator.pk,
        "draw": draw,
        "now": now,
        "expires": expires,
    }
    # One statement is atomic on its own; inside a caller's transaction, a savepoint keeps a
    # unique violation from breaking it (as the ordinary claim does).
    atomic = transaction.atomic() if connection.in_atomic_block else nullcontext()
    try:
        with atomic, connection.cursor() as cursor:
            cursor.execute(_GOLD_CLAIM_SQL, params)
            paused, assignment_id = cursor.fetchone()
    except IntegrityError:
        # The same annotator claimed in another tab a moment ago (one active lease each).
        mine = Assignment.objects.filter(annotator=annotator, status=Assignment.Status.ACTIVE)
        return GoldClaim(paused=False, assignment=mine.select_related("prompt__batch").first())
    if assignment_id is None:
        return GoldClaim(paused=bool(paused), assignment=None)
    assignment = Assignment.objects.select_related("prompt__batch").get(pk=assignment_id)
    return GoldClaim(paused=False, assignment=assignment)


@transaction.atomic
def _gold_claim_portable(
    *, annotator: User, draw: float, now: datetime, expires: datetime
) -> GoldClaim:
    """The same in the ORM, for SQLite."""
    if AnnotatorQuality.objects.filter(
        annotator=annotator, status=AnnotatorQuality.Status.PAUSED
    ).exists():
        return GoldClaim(paused=True, assignment=None)
    prompt = (
        Prompt.objects.filter(
            gold_ranking__isnull=False,
            batch__status=PromptBatch.Status.PUBLISHED,
            batch__gold_rate__gt=draw,
        )
        .exclude(assignments__annotator=annotator)
        .order_by("-batch__priority", "?")
        .first()
    )
    if prompt is None:
        return GoldClaim(paused=False, assignment=None)
    Prompt.objects.filter(pk=prompt.pk).update(lease_count=F("lease_count") + 1)
    order = list(prompt.completions.values_list("id", flat=True))
    random.shuffle(order)
    assignment = Assignment.objects.create(
        prompt=prompt, annotator=annotator, lease_expires_at=expires, display_order=order
    )
    return GoldClaim(paused=False, assignment=assignment)


# --- the submit -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Screened:
    """A submission with the attention check taken out: what `ranking_submit` stores."""

    groups: object
    display_order: list[int]
    attention_passed: bool | None


def submission_screen(*, prompt: Prompt, groups: object, display_order: Sequence[int]) -> Screened:
    """Take the prompt's attention check (if it has one) out of the submitted ranking and the
    order shown, and say whether it was ranked last. No query: `prompt` is loaded already."""
    check = prompt.attention_check_id
    if check is None:
        return Screened(groups=groups, display_order=list(display_order), attention_passed=None)
    shown = [pk for pk in display_order if pk != check]
    if groups in (None, []):  # "none acceptable" without a ranking: nothing to check
        return Screened(groups=groups, display_order=shown, attention_passed=None)
    clean = normalize_groups(groups)
    passed = attention_passed(clean, check)
    stripped = [[pk for pk in group if pk != check] for group in clean]
    return Screened(
        groups=[group for group in stripped if group], display_order=shown, attention_passed=passed
    )


def ranking_screened(*, ranking: Ranking, prompt: Prompt, screen: Screened) -> None:
    """Record a submitted ranking's gold and attention-check results. Call in the submit
    transaction; an ordinary prompt costs nothing."""
    gold = None
    if prompt.gold_ranking and not ranking.not_rankable:
        items = [pk for group in ranking.groups for pk in group]
        gold = gold_score(ranking.groups, prompt.gold_ranking, items)
    if gold is None and screen.attention_passed is None:
        return
    assert ranking.annotator_id is not None
    RankingQuality.objects.bulk_create(
        [
            RankingQuality(
                ranking=ranking,
                prompt_id=prompt.pk,
                batch_id=prompt.batch_id,
                annotator_id=ranking.annotator_id,
                gold_tau=gold,
                attention_passed=screen.attention_passed,
            )
        ],
        update_conflicts=True,
        unique_fields=["ranking"],
        update_fields=["gold_tau", "attention_passed"],
    )
    if gold is not None:
        annotator_gold_update(annotator_id=ranking.annotator_id)


def annotator_gold_update(*, annotator_id: int) -> AnnotatorQuality:
    """Recompute an annotator's gold score and standing: warned below
    RANKLOOP_GOLD_WARN_BELOW, paused below RANKLOOP_GOLD_PAUSE_BELOW, once they have ranked
    RANKLOOP_GOLD_MIN_RANKINGS gold prompts. A pause lasts until an admin resumes them."""
    standing, _ = AnnotatorQuality.objects.select_for_update().get_or_create(
        annotator_id=annotator_id
    )
    golds = RankingQuality.objects.filter(annotator_id=annotator_id, gold_tau__isnull=False)
    if standing.gold_since is not None:
        golds = golds.filter(created_at__gte=standing.gold_since)
    taus = [tau for tau in golds.values_list("gold_tau", flat=True) if tau is not None]
    standing.gold_count = len(taus)
    standing.gold_score = sum(taus) / len(taus) if taus else None
    judged = standing.gold_score is not None and len(taus) >= settings.GOLD_MIN_RANKINGS
    if standing.status != AnnotatorQuality.Status.PAUSED and judged:
        assert standing.gold_score is not None
        if standing.gold_score < settings.GOLD_PAUSE_BELOW:
            standing.status = AnnotatorQuality.Status.PAUSED
        elif standing.gold_score < settings.GOLD_WARN_BELOW:
            standing.status = AnnotatorQuality.Status.WARNED
        else:
            standing.status = AnnotatorQuality.Status.OK
    standing.save()
    return standing


def annotator_standing(*, user: User) -> str:
    """ "ok", "warned" or "paused": what the ranking page tells the annotator."""
    status = (
        AnnotatorQuality.objects.filter(annotator=user).values_list("status", flat=True).first()
    )
    return status or AnnotatorQuality.Status.OK


# --- admin decisions ------------------------------------------------------------------------


@transaction.atomic
def annotator_resume(*, annotator: User, decided_by: User | None) -> AnnotatorQuality:
    """An admin lets a paused (or warned) annotator work again; their gold score starts afresh
    from their next gold ranking."""
    now = timezone.now()
    standing, _ = AnnotatorQuality.objects.select_for_update().get_or_create(annotator=annotator)
    standing.status = AnnotatorQuality.Status.OK
    standing.gold_since = now
    standing.gold_score = None
    standing.gold_count = 0
    standing.decided_by = decided_by
    standing.decided_at = now
    standing.save()
    return standing


def gold_ranking_clean(*, prompt: Prompt, groups: object) -> list[list[int]]:
    """The reference ranking as groups, checked against the prompt's real completions."""
    clean = normalize_groups(groups)
    validate_partition(clean, _real_completion_ids(prompt))
    return clean


@transaction.atomic
def gold_reference_set(*, prompt: Prompt, groups: object | None) -> Prompt:
    """Make `prompt` a gold prompt with this reference ranking (None: an ordinary prompt
    again). Raises InvalidRanking for a ranking that is not a partition of its completions."""
    clean = None if groups is None else gold_ranking_clean(prompt=prompt, groups=groups)
    prompt.gold_ranking = clean
    prompt.save(update_fields=["gold_ranking"])
    return prompt


def _real_completion_ids(prompt: Prompt) -> list[int]:
    return list(
        prompt.completions.exclude(pk=prompt.attention_check_id or 0).values_list("id", flat=True)
    )


ATTENTION_KINDS = ("truncated", "other_prompt")


@transaction.atomic
def attention_checks_add(*, batch: PromptBatch, share: float, seed: int = 0) -> int:
    """Give `share` of the batch's untouched prompts one degraded completion that must rank
    last: half of them a good answer cut off mid-sentence, half the answer to another prompt.
    Only prompts nobody has leased yet take one (earlier annotators saw them without), and
    never gold prompts. Returns how many were added."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    eligible = list(
        Prompt.objects.filter(
            batch=batch,
            attention_check__isnull=True,
            gold_ranking__isnull=True,
            human_ranking_count=0,
            lease_count=0,
        )
        .exclude(assignments__isnull=False)
        .order_by("id")
        .values_list("id", flat=True)
    )
    rng = random.Random(seed)
    chosen = sorted(rng.sample(eligible, round(len(eligible) * share))) if eligible else []
    if not chosen:
        return 0
    texts: dict[int, list[tuple[int, str]]] = defaultdict(list)
    for prompt_id, position, text in Completion.objects.filter(prompt__batch=batch).values_list(
        "prompt_id", "position", "text"
    ):
        texts[prompt_id].append((position, text))
    donors = sorted(texts)
    checks = []
    for index, prompt_id in enumerate(chosen):
        own = texts[prompt_id]
        kind = ATTENTION_KINDS[index % 2] if len(donors) > 1 else "truncated"
        if kind == "truncated":
            text = _cut_mid_sentence(max(own, key=lambda item: len(item[1]))[1])
        else:
            donor = rng.choice([pk for pk in donors if pk != prompt_id])
            text = rng.choice(texts[donor])[1]
        checks.append(
            Completion(
                prompt_id=prompt_id,
                text=text,
                source="attention-check",
                position=max(position for position, _ in own) + 1,
            )
        )
    Completion.objects.bulk_create(checks)
    for check in checks:
        Prompt.objects.filter(pk=check.prompt_id).update(attention_check=check)
    return len(checks)


def _cut_mid_sentence(text: str) -> str:
    words = text.split()
    if len(words) < 4:
        return " ".join(words[: max(1, len(words) - 1)])
    return " ".join(words[: max(2, len(words) * 2 // 5)]).rstrip(".!?,;:")


# --- agreement, refreshed -------------------------------------------------------------------


def quality_refresh(*, batch_ids: Iterable[int] | None = None) -> int:
    """Recompute the figures of every prompt whose human ranking count changed since they were
    stored (of these batches, or all), then give low-agreement prompts an extra annotator.
    Returns how many prompts were recomputed."""
    stale = Prompt.objects.filter(human_ranking_count__gt=0).filter(
        Q(quality__isnull=True) | ~Q(quality__human_rankings=F("human_ranking_count"))
    )
    if batch_ids is not None:
        stale = stale.filter(batch_id__in=list(batch_ids))
    prompt_ids = list(stale.order_by("id").values_list("id", flat=True))
    for start in range(0, len(prompt_ids), REFRESH_CHUNK):
        _refresh_prompts(prompt_ids[start : start + REFRESH_CHUNK])
    return len(prompt_ids)


@transaction.atomic
def _refresh_prompts(prompt_ids: list[int]) -> None:
    # The counts are read before the rankings: a ranking that arrives in between makes the
    # stored count lag, so the prompt is recomputed once more next time, never skipped.
    prompts = {
        row["id"]: row
        for row in Prompt.objects.filter(pk__in=prompt_ids)
        .annotate(prompt_chars=Length("text"))
        .values("id", "batch_id", "human_ranking_count", "attention_check_id", "prompt_chars")
    }
    completions: dict[int, list[int]] = defaultdict(list)
    chars = {pk: row["prompt_chars"] for pk, row in prompts.items()}
    for prompt_id, completion_id, length in Completion.objects.filter(
        prompt_id__in=prompt_ids
    ).values_list("prompt_id", "id", Length("text")):
        chars[prompt_id] += length
        if completion_id != prompts[prompt_id]["attention_check_id"]:
            completions[prompt_id].append(completion_id)
    rankings: dict[int, list[tuple[int, int, list[list[int]], list[int], int | None]]] = (
        defaultdict(list)
    )
    for ranking_id, prompt_id, annotator_id, groups, shown, duration in (
        Ranking.objects.filter(prompt_id__in=prompt_ids, origin=Ranking.Origin.HUMAN)
        .order_by("id")
        .values_list("id", "prompt_id", "annotator_id", "groups", "display_order", "duration_ms")
    ):
        rankings[prompt_id].append((ranking_id, annotator_id, groups, shown, duration))

    prompt_rows, ranking_rows = [], []
    all_figures = prompts_agreement(
        [
            (
                sorted(completions[prompt_id]),
                [
                    RankingInput(key=r[0], groups=r[2], display_order=r[3])
                    for r in rankings[prompt_id]
                ],
            )
            for prompt_id in prompts
        ]
    )
    for (prompt_id, prompt), figures in zip(prompts.items(), all_figures, strict=True):
        own = rankings[prompt_id]
        prompt_rows.append(
            PromptQuality(
                prompt_id=prompt_id,
                batch_id=prompt["batch_id"],
                human_rankings=prompt["human_ranking_count"],
                raters=figures.raters,
                kendall_w=figures.kendall_w,
                pair_agreement=figures.pair_agreement,
                consensus=figures.consensus,
                consensus_scores={str(k): round(v, 6) for k, v in figures.scores.items()},
            )
        )
        for ranking_id, annotator_id, _, _, duration in own:
            agreement = figures.rankings.get(ranking_id)
            ranking_rows.append(
                RankingQuality(
                    ranking_id=ranking_id,
                    prompt_id=prompt_id,
                    batch_id=prompt["batch_id"],
                    annotator_id=annotator_id,
                    loo_tau=agreement.loo_tau if agreement else None,
                    pair_hits=agreement.pair_hits if agreement else 0,
                    pair_total=agreement.pair_total if agreement else 0,
                    position_tau=agreement.position_tau if agreement else None,
                    copied_order=agreement.copied_order if agreement else None,
                    ms_per_kchar=(
                        duration * 1000 / chars[prompt_id]
                        if duration is not None and chars[prompt_id]
                        else None
                    ),
                )
            )
    PromptQuality.objects.bulk_create(
        prompt_rows,
        update_conflicts=True,
        unique_fields=["prompt"],
        update_fields=[
            "human_rankings",
            "raters",
            "kendall_w",
            "pair_agreement",
            "consensus",
            "consensus_scores",
            "updated_at",
        ],
    )
    RankingQuality.objects.bulk_create(
        ranking_rows,
        update_conflicts=True,
        unique_fields=["ranking"],
        update_fields=[
            "loo_tau",
            "pair_hits",
            "pair_total",
            "position_tau",
            "copied_order",
            "ms_per_kchar",
        ],
    )
    _add_extra_annotators(prompt_ids)


def _add_extra_annotators(prompt_ids: list[int]) -> int:
    """One more annotator for each fully ranked prompt whose agreement is below its batch's
    threshold, up to the batch's cap. Raising the target only frees a slot, so the queue's
    counters stay within it without the prompt lock."""
    return Prompt.objects.filter(
        pk__in=prompt_ids,
        gold_ranking__isnull=True,
        quality__kendall_w__lt=F("batch__agreement_threshold"),
        extra_overlap__lt=F("batch__extra_annotators_max"),
        human_ranking_count__gte=F("batch__overlap") + F("extra_overlap"),
    ).update(extra_overlap=F("extra_overlap") + 1)


def batch_extra_annotators(*, batch: PromptBatch) -> int:
    return int(Prompt.objects.filter(batch=batch).aggregate(n=Sum("extra_overlap"))["n"] or 0)
