"""Reads behind the research API's list endpoints: batches, prompts, rankings, comparisons.

Every filter is a keyword argument mapped to one fixed ORM lookup, so no request parameter ever
chooses a lookup (`?annotator__password=...` cannot reach the ORM). Annotators are filtered by
pseudonym, which is mapped back to user ids by hashing (`annotation.pseudonyms`).
"""

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypeVar

from django.db.models import Count, Prefetch, QuerySet

from annotation.models import (
    Comparison,
    Completion,
    DatasetSnapshot,
    Prompt,
    PromptBatch,
    Ranking,
)
from annotation.pseudonyms import user_ids_for_pseudonym

Q = TypeVar("Q", bound=QuerySet[Any])


def batch_list(
    *,
    batches: Sequence[str] = (),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[PromptBatch]:
    queryset = PromptBatch.objects.annotate(prompt_count=Count("prompts")).order_by("id")
    if batches:
        queryset = queryset.filter(name__in=batches)
    if created_after is not None:
        queryset = queryset.filter(created_at__gte=created_after)
    if created_before is not None:
        queryset = queryset.filter(created_at__lt=created_before)
    return queryset


def prompt_list(
    *,
    batches: Sequence[str] = (),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    k: int | None = None,
) -> QuerySet[Prompt]:
    # Attention checks (annotation/quality.py) are not data: researchers never see them.
    checks = Prompt.objects.filter(attention_check__isnull=False).values("attention_check")
    real = Completion.objects.exclude(pk__in=checks)
    queryset = Prompt.objects.select_related("batch").prefetch_related(
        Prefetch("completions", queryset=real)
    )
    if batches:
        queryset = queryset.filter(batch__name__in=batches)
    if created_after is not None:
        queryset = queryset.filter(created_at__gte=created_after)
    if created_before is not None:
        queryset = queryset.filter(created_at__lt=created_before)
    if k is not None:
        queryset = queryset.alias(k=Count("completions")).filter(k=k)
    return queryset.order_by("id")


def ranking_list(
    *,
    batches: Sequence[str] = (),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    annotator: str | None = None,
    origin: str | None = None,
    k: int | None = None,
) -> QuerySet[Ranking]:
    queryset = Ranking.objects.select_related("prompt__batch")
    return _filter_rankings(
        queryset,
        prefix="",
        batches=batches,
        created_after=created_after,
        created_before=created_before,
        annotator=annotator,
        origin=origin,
        k=k,
    ).order_by("id")


def comparison_list(
    *,
    batches: Sequence[str] = (),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    annotator: str | None = None,
    origin: str | None = None,
    k: int | None = None,
) -> QuerySet[Comparison]:
    queryset = Comparison.objects.select_related("prompt__batch")
    return _filter_rankings(
        queryset,
        prefix="ranking__",
        batches=batches,
        created_after=created_after,
        created_before=created_before,
        annotator=annotator,
        origin=origin,
        k=k,
    ).order_by("id")


def snapshot_list() -> QuerySet[DatasetSnapshot]:
    # The id array can hold millions of ids; list and detail pages show the manifest instead.
    return DatasetSnapshot.objects.defer("ranking_ids").order_by("id")


def _filter_rankings(
    queryset: Q,
    *,
    prefix: str,
    batches: Sequence[str],
    created_after: datetime | None,
    created_before: datetime | None,
    annotator: str | None,
    origin: str | None,
    k: int | None,
) -> Q:
    # `prefix` is "" or "ranking__", fixed by the callers above, never taken from a request.
    if batches:
        queryset = queryset.filter(**{f"{prefix}prompt__batch__name__in": batches})
    if created_after is not None:
        queryset = queryset.filter(**{f"{prefix}created_at__gte": created_after})
    if created_before is not None:
        queryset = queryset.filter(**{f"{prefix}created_at__lt": created_before})
    if annotator is not None:
        queryset = queryset.filter(
            **{f"{prefix}annotator_id__in": user_ids_for_pseudonym(annotator)}
        )
    if origin is not None:
        queryset = queryset.filter(**{f"{prefix}origin": origin})
    if k is not None:
        queryset = queryset.filter(**{f"{prefix}k": k})
    return queryset
