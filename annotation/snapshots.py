"""Dataset snapshots: freeze the rankings an export or a training run used, describe them in a
manifest, and read them back identically later.

A snapshot stores the ranking ids that matched its filters when it was made (see
`DatasetSnapshot` for why ids and not filters), the filters and split options that selected
them, and a manifest with the counts and the sha256 of the snapshot's `rankings` JSONL export.
Exports are deterministic (ordered by id, no export-time values), so exporting a snapshot again
gives the same bytes, as long as its rankings still exist and the pseudonym key is the same
(`snapshot_verify` checks). The split is stored too, so a training run and a later evaluation
see the same train and test prompts.

On PostgreSQL the ids, counts and export are SQL over the id array; on another database (the
embedded SQLite of the demo) `export_portable` computes the same through the ORM, so a reward
run can train on a snapshot there too.

These are services and selectors for one subdomain; they live apart from `services.py` so that
the modules stay short and the annotator workspace can change those without touching these.
"""

import hashlib
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

import orjson
from django.contrib.auth.models import User
from django.db import connection, transaction

from annotation import export_portable
from annotation.export_queries import ranking_where_sql
from annotation.exports import (
    ExportOptions,
    Format,
    Kind,
    Pairs,
    RankingFilter,
    Split,
    Style,
    Ties,
    export_stream,
    ranking_lines,
)
from annotation.models import DatasetSnapshot
from annotation.pseudonyms import key_fingerprint


@transaction.atomic
def snapshot_create(
    *,
    name: str = "",
    batches: Iterable[str] | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    annotator: str | None = None,
    origin: str | None = None,
    k: int | None = None,
    split_test: float | None = None,
    seed: int = 0,
    created_by: User | None = None,
) -> DatasetSnapshot:
    """Freeze the rankings that match the filters (all of them without filters)."""
    ranking_filter = RankingFilter(
        batches=tuple(batches or ()),
        created_after=created_after,
        created_before=created_before,
        annotator=annotator,
        origin=origin,
        k=k,
    )
    # Validates the split options the same way an export does.
    ExportOptions(
        kind=Kind.RANKINGS,
        filter=ranking_filter,
        split_test=split_test,
        split=Split.TRAIN if split_test is not None else None,
    )
    options = {"filter": ranking_filter.as_json(), "split_test": split_test, "seed": seed}
    snapshot = DatasetSnapshot.objects.create(
        name=name, ranking_ids=[], options=options, created_by=created_by
    )
    selection = ExportOptions(kind=Kind.RANKINGS, filter=ranking_filter)
    if connection.vendor == "postgresql":
        # The ids go from the query straight into the array, never through Python.
        where, params = ranking_where_sql(selection)
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE annotation_datasetsnapshot SET ranking_ids = ("
                "  SELECT coalesce(array_agg(r.id ORDER BY r.id), '{}')"
                "  FROM annotation_ranking r"
                "  JOIN annotation_prompt p ON p.id = r.prompt_id"
                "  JOIN annotation_promptbatch b ON b.id = p.batch_id"
                f"  WHERE {where}"
                ") WHERE id = %s",
                [*params, snapshot.pk],
            )
        manifest = _manifest(snapshot.pk)
    else:
        # The embedded SQLite: the same ids and counts, computed through the ORM.
        ids = export_portable.snapshot_ids(selection)
        DatasetSnapshot.objects.filter(pk=snapshot.pk).update(ranking_ids=ids)
        manifest = export_portable.snapshot_manifest(ids)
    sha256 = _content_sha256(snapshot.pk)
    manifest.update(
        options=options, content_sha256=sha256, pseudonym_key_fingerprint=key_fingerprint()
    )
    DatasetSnapshot.objects.filter(pk=snapshot.pk).update(manifest=manifest, content_sha256=sha256)
    return DatasetSnapshot.objects.defer("ranking_ids").get(pk=snapshot.pk)


def snapshot_get(*, snapshot_id: int) -> DatasetSnapshot:
    """A snapshot without its (possibly million-long) id array."""
    return DatasetSnapshot.objects.defer("ranking_ids").get(pk=snapshot_id)


def snapshot_export_options(
    *,
    snapshot: DatasetSnapshot,
    kind: Kind,
    format: Format = Format.JSONL,
    pairs: Pairs = Pairs.ALL,
    ties: Ties | None = None,
    style: Style = Style.STANDARD,
    split: Split | None = None,
) -> ExportOptions:
    """Export options for a snapshot: its frozen rankings, and its split when asked for one."""
    split_test = snapshot.options.get("split_test")
    if split is not None and split_test is None:
        raise ValueError(f"snapshot {snapshot.pk} was made without a split")
    return ExportOptions(
        kind=kind,
        format=format,
        filter=RankingFilter(snapshot_id=snapshot.pk),
        pairs=pairs,
        ties=ties,
        style=style,
        split_test=split_test if split is not None else None,
        seed=snapshot.options.get("seed", 0),
        split=split,
    )


def snapshot_rankings(
    *, snapshot: DatasetSnapshot, split: Split | None = None
) -> Iterator[dict[str, Any]]:
    """The snapshot's rankings in the reward model's JSONL shape (one dict a ranking: prompt,
    messages, completions, best-first groups of completion indices, and provenance), streamed.
    What a training run reads."""
    return ranking_lines(
        snapshot_export_options(snapshot=snapshot, kind=Kind.RANKINGS, split=split)
    )


def snapshot_verify(*, snapshot: DatasetSnapshot) -> bool:
    """Whether the snapshot still exports to the bytes its manifest hashed."""
    return _content_sha256(snapshot.pk) == snapshot.content_sha256


def _content_sha256(snapshot_id: int) -> str:
    digest = hashlib.sha256()
    options = ExportOptions(kind=Kind.RANKINGS, filter=RankingFilter(snapshot_id=snapshot_id))
    for chunk in export_stream(options):
        digest.update(chunk)
    return digest.hexdigest()


_MANIFEST_SQL = """
WITH r AS (
  SELECT r.* FROM annotation_ranking r
  WHERE r.id IN (SELECT unnest(ranking_ids) FROM annotation_datasetsnapshot WHERE id = %(id)s)
)
SELECT
  (SELECT count(*) FROM r),
  (SELECT count(DISTINCT prompt_id) FROM r),
  (SELECT count(DISTINCT annotator_id) FROM r),
  (SELECT count(*) FROM r WHERE not_rankable),
  (SELECT count(*) FILTER (WHERE NOT c.is_tie) FROM annotation_comparison c
     WHERE c.ranking_id IN (SELECT id FROM r)),
  (SELECT count(*) FILTER (WHERE c.is_tie) FROM annotation_comparison c
     WHERE c.ranking_id IN (SELECT id FROM r)),
  (SELECT coalesce(json_object_agg(k, n ORDER BY k), '{}') FROM
     (SELECT k, count(*) AS n FROM r GROUP BY k) hist),
  (SELECT coalesce(json_object_agg(origin, n ORDER BY origin), '{}') FROM
     (SELECT origin, count(*) AS n FROM r GROUP BY origin) origins),
  (SELECT coalesce(json_object_agg(name, n ORDER BY name), '{}') FROM
     (SELECT b.name, count(*) AS n FROM r JOIN annotation_prompt p ON p.id = r.prompt_id
      JOIN annotation_promptbatch b ON b.id = p.batch_id GROUP BY b.name) batches),
  (SELECT min(created_at) FROM r),
  (SELECT max(created_at) FROM r)
"""


def _manifest(snapshot_id: int) -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute(_MANIFEST_SQL, {"id": snapshot_id})
        row = cursor.fetchone()
    assert row is not None
    (rankings, prompts, annotators, not_rankable, comparisons, ties) = row[:6]
    k_histogram, origins, batches, first, last = row[6:]
    return {
        "rankings": rankings,
        "prompts": prompts,
        "annotators": annotators,
        "not_rankable": not_rankable,
        "comparisons": comparisons,
        "tied_comparisons": ties,
        "k_histogram": _json(k_histogram),
        "origins": _json(origins),
        "batches": _json(batches),
        "rankings_created_from": first.isoformat() if first else None,
        "rankings_created_until": last.isoformat() if last else None,
    }


def _json(value: Any) -> Any:
    return orjson.loads(value) if isinstance(value, str) else value
