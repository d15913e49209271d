"""The rankings query without PostgreSQL: the same rows as `export_queries.rankings_query`,
read through the ORM, for the embedded SQLite of a laptop or the demo.

Only what a dataset snapshot needs goes through here (the rankings, hence the preference pairs
derived from them, and the snapshot's ids and manifest); the comparisons export stays on
PostgreSQL's COPY. The rows are the tuples the PostgreSQL query returns, JSON columns as text,
so `exports._ranking_record` shapes both alike. The split is the same seeded md5 bucket of the
prompt text, computed in Python: a prompt lands on the same side on either database.
"""

import hashlib
from collections import Counter
from collections.abc import Iterator
from itertools import islice
from typing import Any

import orjson
from django.db.models import QuerySet

from annotation.export_options import ExportOptions, Split
from annotation.models import Comparison, Completion, DatasetSnapshot, Ranking
from annotation.pseudonyms import pseudonyms_of_all_users, user_ids_for_pseudonym

# Ids per query: well below SQLite's limit on bound parameters.
CHUNK = 500


def split_bucket(text: str, seed: int) -> int:
    """The prompt's bucket in [0, 2**60): the first 15 hex digits of md5(seed + ':' + text), as
    PostgreSQL computes it in `export_queries.ranking_where_sql`."""
    return int(hashlib.md5(f"{seed}:{text}".encode()).hexdigest()[:15], 16)


def ranking_chunks(options: ExportOptions) -> Iterator[list[Ranking]]:
    """The matching rankings, ascending by id, with prompt and batch, CHUNK at a time."""
    f = options.filter
    queryset = Ranking.objects.select_related("prompt__batch").order_by("id")
    if f.batches:
        queryset = queryset.filter(prompt__batch__name__in=list(f.batches))
    if f.created_after is not None:
        queryset = queryset.filter(created_at__gte=f.created_after)
    if f.created_before is not None:
        queryset = queryset.filter(created_at__lt=f.created_before)
    if f.annotator is not None:
        queryset = queryset.filter(annotator_id__in=user_ids_for_pseudonym(f.annotator))
    if f.origin is not None:
        queryset = queryset.filter(origin=f.origin)
    if f.k is not None:
        queryset = queryset.filter(k=f.k)
    for chunk in _id_chunks(queryset, f.snapshot_id):
        rankings = [r for r in chunk if _on_side(r, options)]
        if rankings:
            yield rankings


def _id_chunks(queryset: QuerySet[Ranking], snapshot_id: int | None) -> Iterator[list[Ranking]]:
    if snapshot_id is not None:
        ids = iter(
            DatasetSnapshot.objects.values_list("ranking_ids", flat=True).get(pk=snapshot_id)
        )
        while batch := list(islice(ids, CHUNK)):
            yield list(queryset.filter(id__in=batch))
        return
    last = 0
    while chunk := list(queryset.filter(id__gt=last)[:CHUNK]):
        yield chunk
        last = chunk[-1].pk


def _on_side(ranking: Ranking, options: ExportOptions) -> bool:
    if options.split_test is None:
        return True
    in_test = split_bucket(ranking.prompt.text, options.seed) < int(options.split_test * 2**60)
    return in_test == (options.split == Split.TEST)


def ranking_rows(options: ExportOptions) -> Iterator[list[tuple[Any, ...]]]:
    """Chunks of rows shaped like `export_queries.rankings_query`'s."""
    pseudonyms = pseudonyms_of_all_users()
    for rankings in ranking_chunks(options):
        completions: dict[int, list[list[Any]]] = {}
        for completion in Completion.objects.filter(
            prompt_id__in={r.prompt_id for r in rankings}
        ).order_by("prompt_id", "position"):
            completions.setdefault(completion.prompt_id, []).append(
                [completion.pk, completion.text, completion.source]
            )
        yield [_row(r, pseudonyms, completions.get(r.prompt_id)) for r in rankings]


def _row(
    ranking: Ranking, pseudonyms: dict[int, str], completions: list[list[Any]] | None
) -> tuple[Any, ...]:
    prompt = ranking.prompt
    return (
        ranking.pk,
        ranking.external_id,
        ranking.origin,
        pseudonyms.get(ranking.annotator_id) if ranking.annotator_id else None,
        _text(ranking.groups),
        ranking.not_rankable,
        _text(ranking.display_order),
        ranking.duration_ms,
        ranking.rationale,
        _text(ranking.flags),
        ranking.guidelines_version,
        ranking.created_at,
        prompt.pk,
        prompt.external_id,
        prompt.text,
        _text(prompt.messages),
        _text(prompt.metadata),
        prompt.batch.name,
        _text(completions) if completions is not None else None,
    )


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def snapshot_ids(options: ExportOptions) -> list[int]:
    return [r.pk for rankings in ranking_chunks(options) for r in rankings]


def snapshot_manifest(ranking_ids: list[int]) -> dict[str, Any]:
    """The manifest's counts, as `snapshots._MANIFEST_SQL` computes them on PostgreSQL."""
    prompts: set[int] = set()
    annotators: set[int | None] = set()
    k_histogram: Counter[str] = Counter()
    origins: Counter[str] = Counter()
    batches: Counter[str] = Counter()
    not_rankable = comparisons = ties = 0
    first = last = None
    for start in range(0, len(ranking_ids), CHUNK):
        chunk = ranking_ids[start : start + CHUNK]
        for ranking in Ranking.objects.filter(id__in=chunk).select_related("prompt__batch"):
            prompts.add(ranking.prompt_id)
            annotators.add(ranking.annotator_id)
            k_histogram[str(ranking.k)] += 1
            origins[ranking.origin] += 1
            batches[ranking.prompt.batch.name] += 1
            not_rankable += ranking.not_rankable
            first = ranking.created_at if first is None else min(first, ranking.created_at)
            last = ranking.created_at if last is None else max(last, ranking.created_at)
        for is_tie in Comparison.objects.filter(ranking_id__in=chunk).values_list(
            "is_tie", flat=True
        ):
            ties += is_tie
            comparisons += not is_tie
    return {
        "rankings": len(ranking_ids),
        "prompts": len(prompts),
        # count(DISTINCT annotator_id) leaves out NULL (imported rankings have no annotator)
        "annotators": len(annotators - {None}),
        "not_rankable": not_rankable,
        "comparisons": comparisons,
        "tied_comparisons": ties,
        "k_histogram": dict(sorted(k_histogram.items(), key=lambda item: int(item[0]))),
        "origins": dict(sorted(origins.items())),
        "batches": dict(sorted(batches.items())),
        "rankings_created_from": first.isoformat() if first else None,
        "rankings_created_until": last.isoformat() if last else None,
    }
