"""Writes to the preference data. Every function here is a transaction: it writes all of its
rows or none of them."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet

from annotation.models import Comparison, Completion, Prompt, PromptBatch, Ranking
from annotation.rankings import InvalidRanking, expand_pairs, normalize_groups, validate_partition


class RankingConflict(Exception):
    """This annotator (or this imported id) already ranked the prompt differently."""

    def __init__(self, message: str, *, existing: Ranking) -> None:
        super().__init__(message)
        self.existing = existing


def ranking_submit(
    *,
    prompt: Prompt,
    groups: object,
    annotator: User | None = None,
    external_id: str = "",
    not_rankable: bool = False,
    display_order: Sequence[int] | None = None,
    duration_ms: int | None = None,
    rationale: str = "",
    flags: Mapping[Any, Sequence[str]] | None = None,
    first_for_annotator: bool = False,
) -> Ranking:
    """Record a ranking of `prompt`'s completions and its C(K, 2) comparisons.

    `groups` lists completion ids best first, a group of several being a tie (a flat list is a
    strict order). A ranking with an annotator is human; without one it is imported and needs
    `external_id`. A not-rankable ranking ("none is acceptable") has no comparisons; its groups
    may be empty.

    Idempotent: the same annotator (or imported id) submitting the same ranking again gets the
    first one back, also when the two submissions race; a different ranking raises
    RankingConflict. Invalid input raises InvalidRanking and writes nothing.

    `first_for_annotator` skips the look for an earlier ranking, for a caller that knows
    there is none: one holding the row lock of the annotator's open assignment for this
    prompt (an annotator gets a prompt once, and the lock serialises a double submit). The
    unique constraint still decides, should the caller be wrong.
    """
    completion_ids = _completion_ids(prompt)
    if prompt.attention_check_id is not None:
        # Taken out of the submission by annotation.quality: it never becomes a comparison.
        completion_ids = [pk for pk in completion_ids if pk != prompt.attention_check_id]
    clean_groups = _clean_groups(groups, completion_ids, not_rankable=not_rankable)
    _check_k(prompt.batch, len(completion_ids))
    if annotator is None and not external_id:
        raise InvalidRanking("an imported ranking needs an external id")
    clean_order = _clean_display_order(display_order, completion_ids)
    clean_flags = _clean_flags(flags, completion_ids)
    if duration_ms is not None and duration_ms < 0:
        raise InvalidRanking("duration_ms must not be negative")

    candidate = Ranking(
        prompt=prompt,
        annotator=annotator,
        origin=Ranking.Origin.HUMAN if annotator is not None else Ranking.Origin.IMPORTED,
        external_id=external_id if annotator is None else "",
        groups=clean_groups,
        k=len(completion_ids),
        not_rankable=not_rankable,
        display_order=clean_order,
        duration_ms=duration_ms,
        rationale=rationale,
        flags=clean_flags,
        guidelines_version=prompt.batch.guidelines_version,
    )
    if not first_for_annotator and (existing := _existing_ranking(candidate)):
        return _same_or_conflict(existing, candidate)
    try:
        with transaction.atomic():
            candidate.save()
            Comparison.objects.bulk_create(_comparisons(candidate))
    except IntegrityError:
        # A racing submission of the same ranking committed first: the unique constraint on
        # (prompt, annotator) or (prompt, external_id) made this insert wait for it and fail.
        existing = _existing_ranking(candidate)
        if existing is None:
            raise
        return _same_or_conflict(existing, candidate)
    return candidate


@dataclass
class CompletionRecord:
    text: str
    source: str = ""


@dataclass
class RankingRecord:
    """One imported ranking of a prompt, in completion *indices*, with the lossless fields a
    `rankings` export carries so that an export re-imports to the same rankings."""

    groups: list[list[int]]  # best first; empty for a not-rankable ranking
    external_id: str = ""  # default: the prompt's external id
    not_rankable: bool = False
    flags: dict[int, list[str]] = field(default_factory=dict)  # completion index -> labels
    rationale: str = ""
    display_order: list[int] = field(default_factory=list)
    duration_ms: int | None = None
    guidelines_version: int | None = None  # default: the batch's


@dataclass
class PromptRecord:
    """One prompt of an import, already validated by `annotation.imports`."""

    text: str
    messages: list[dict[str, str]]
    completions: list[CompletionRecord]
    external_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    # Its imported rankings: none, one, or several from an export (one line per ranking).
    rankings: list[RankingRecord] = field(default_factory=list)


@dataclass
class ImportResult:
    batch: PromptBatch
    prompts: int
    completions: int
    rankings: int
    comparisons: int
    skipped_existing: int


def batch_create(
    *,
    name: str,
    k_min: int = 4,
    k_max: int = 9,
    overlap: int = 3,
    priority: int = 0,
    guidelines: str = "",
    status: str = PromptBatch.Status.DRAFT,
    created_by: User | None = None,
) -> PromptBatch:
    batch = PromptBatch(
        name=name,
        k_min=k_min,
        k_max=k_max,
        overlap=overlap,
        priority=priority,
        guidelines=guidelines,
        status=status,
        created_by=created_by,
    )
    batch.full_clean()
    batch.save()
    return batch


def batches_publish(*, batches: QuerySet[PromptBatch]) -> int:
    """Open the draft batches among `batches` to annotators; returns how many were drafts.
    Batches in any other state keep it (a paused or closed batch is reopened on purpose)."""
    return batches.filter(status=PromptBatch.Status.DRAFT).update(
        status=PromptBatch.Status.PUBLISHED
    )


@transaction.atomic
def batch_import_records(
    *, batch: PromptBatch, records: Sequence[PromptRecord], chunk_size: int = 2000
) -> ImportResult:
    """Write validated prompts, their completions and their imported rankings into `batch`.

    Prompts whose external id the batch already holds are skipped, so importing the same file
    again adds nothing. Everything is bulk-inserted in one transaction: all or nothing.
    """
    existing_ids = set(
        Prompt.objects.filter(batch=batch)
        .exclude(external_id="")
        .values_list("external_id", flat=True)
    )
    fresh = [record for record in records if record.external_id not in existing_ids]
    for record in fresh:
        _check_k(batch, len(record.completions))

    prompts = Prompt.objects.bulk_create(
        [
            Prompt(
                batch=batch,
                text=record.text,
                messages=record.messages,
                external_id=record.external_id,
                metadata=record.metadata,
            )
            for record in fresh
        ],
        batch_size=chunk_size,
    )
    completions = Completion.objects.bulk_create(
        [
            Completion(
                prompt=prompt, text=completion.text, source=completion.source, position=position
            )
            for prompt, record in zip(prompts, fresh, strict=True)
            for position, completion in enumerate(record.completions)
        ],
        batch_size=chunk_size,
    )
    completion_iter = iter(completions)
    rankings: list[Ranking] = []
    for prompt, record in zip(prompts, fresh, strict=True):
        ids = [next(completion_iter).pk for _ in record.completions]
        rankings.extend(
            Ranking(
                prompt=prompt,
                origin=Ranking.Origin.IMPORTED,
                external_id=ranking.external_id or record.external_id or f"prompt-{prompt.pk}",
                groups=[[ids[index] for index in group] for group in ranking.groups],
                k=len(ids),
                not_rankable=ranking.not_rankable,
                flags={str(ids[index]): labels for index, labels in ranking.flags.items()},
                rationale=ranking.rationale,
                display_order=[ids[index] for index in ranking.display_order],
                duration_ms=ranking.duration_ms,
                guidelines_version=ranking.guidelines_version or batch.guidelines_version,
            )
            for ranking in record.rankings
        )
    Ranking.objects.bulk_create(rankings, batch_size=chunk_size)
    comparisons = Comparison.objects.bulk_create(
        [comparison for ranking in rankings for comparison in _comparisons(ranking)],
        batch_size=chunk_size,
    )
    return ImportResult(
        batch=batch,
        prompts=len(prompts),
        completions=len(completions),
        rankings=len(rankings),
        comparisons=len(comparisons),
        skipped_existing=len(records) - len(fresh),
    )


def _comparisons(ranking: Ranking) -> list[Comparison]:
    if ranking.not_rankable:
        return []
    return [
        Comparison(
            ranking=ranking,
            prompt_id=ranking.prompt_id,
            winner_id=pair.winner,
            loser_id=pair.loser,
            rank_gap=pair.rank_gap,
            is_tie=pair.is_tie,
            annotator_id=ranking.annotator_id,
        )
        for pair in expand_pairs(ranking.groups)
    ]


def _completion_ids(prompt: Prompt) -> list[int]:
    # Plain SQL: `ranking_submit` is on the annotation loop's hot path (see annotation.leases).
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id FROM {Completion._meta.db_table} WHERE prompt_id = %s", [prompt.pk]
        )
        return [pk for (pk,) in cursor.fetchall()]


def _check_k(batch: PromptBatch, k: int) -> None:
    if not batch.k_min <= k <= batch.k_max:
        raise InvalidRanking(
            f"the prompt has K={k} completions, outside batch {batch.name!r}'s range "
            f"{batch.k_min}..{batch.k_max}"
        )


def _clean_groups(
    groups: object, completion_ids: list[int], *, not_rankable: bool
) -> list[list[int]]:
    if not_rankable and groups in (None, []):
        return []
    clean = normalize_groups(groups)
    validate_partition(clean, completion_ids)
    return clean


def _clean_display_order(order: Sequence[int] | None, completion_ids: list[int]) -> list[int]:
    if order is None:
        return []
    order = list(order)
    if sorted(order) != sorted(completion_ids):
        raise InvalidRanking(
            "display_order must list each of the prompt's completions exactly once"
        )
    return order


def _clean_flags(
    flags: Mapping[Any, Sequence[str]] | None, completion_ids: list[int]
) -> dict[str, list[str]]:
    if not flags:
        return {}
    known = {str(pk) for pk in completion_ids}
    clean: dict[str, list[str]] = {}
    for key, labels in flags.items():
        if str(key) not in known:
            raise InvalidRanking(f"flags name {key!r}, which is not a completion of this prompt")
        if not isinstance(labels, list | tuple) or not all(
            isinstance(label, str) for label in labels
        ):
            raise InvalidRanking(f"flags for completion {key} must be a list of labels")
        clean[str(key)] = sorted(set(labels))
    return clean


def _existing_ranking(candidate: Ranking) -> Ranking | None:
    rankings = Ranking.objects.filter(prompt_id=candidate.prompt_id)
    if candidate.annotator_id is not None:
        return rankings.filter(annotator_id=candidate.annotator_id).first()
    return rankings.filter(
        origin=Ranking.Origin.IMPORTED, external_id=candidate.external_id
    ).first()


def _same_or_conflict(existing: Ranking, candidate: Ranking) -> Ranking:
    if existing.groups == candidate.groups and existing.not_rankable == candidate.not_rankable:
        return existing
    who = (
        f"annotator {candidate.annotator}"
        if candidate.annotator_id
        else f"id {candidate.external_id!r}"
    )
    raise RankingConflict(
        f"{who} already ranked prompt {candidate.prompt_id} differently (ranking {existing.pk})",
        existing=existing,
    )
