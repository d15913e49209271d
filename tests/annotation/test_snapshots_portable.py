"""The portable path of snapshots (the ORM, for the embedded SQLite) against the PostgreSQL one:
run on PostgreSQL, both must select the same rankings, split them the same way, count the same
manifest and produce the same rows. The demo test (tests/demo) runs the portable path on
SQLite itself, through a reward run."""

from datetime import timedelta

import orjson
import pytest
from django.utils import timezone

from annotation import export_portable, exports, snapshots
from annotation.exports import ExportOptions, Kind, RankingFilter, Split, ranking_lines
from annotation.models import Ranking
from annotation.pseudonyms import annotator_pseudonym
from annotation.services import CompletionRecord, PromptRecord, RankingRecord, batch_import_records
from tests.annotation.research_support import ranked_prompts
from tests.factories import BatchFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres")]


@pytest.fixture
def alice():
    alice, bob = UserFactory(), UserFactory()
    ranked_prompts(BatchFactory(name="b1"), [alice, bob], prompts=12, k=4)
    ranked_prompts(BatchFactory(name="b2"), [alice], prompts=5, k=3)
    batch = BatchFactory(name="imported", k_min=2)
    batch_import_records(
        batch=batch,
        records=[
            PromptRecord(
                text=f"imported {n}",
                messages=[{"role": "user", "content": f"imported {n}"}],
                completions=[CompletionRecord(text="yes"), CompletionRecord(text="no")],
                external_id=f"i{n}",
                rankings=[RankingRecord(groups=[[1], [0]])],
            )
            for n in range(4)
        ],
    )
    return alice


def portable_lines(options: ExportOptions) -> list[bytes]:
    return [
        orjson.dumps(exports._ranking_record(row).line)
        for chunk in export_portable.ranking_rows(options)
        for row in chunk
    ]


def filters(alice) -> list[RankingFilter]:
    return [
        RankingFilter(),
        RankingFilter(batches=("b1", "imported")),
        RankingFilter(annotator=annotator_pseudonym(alice.pk)),
        RankingFilter(origin=Ranking.Origin.IMPORTED, k=2),
        RankingFilter(created_after=timezone.now() - timedelta(hours=1), k=4),
    ]


def test_the_portable_rows_are_the_postgresql_rows(alice) -> None:
    for ranking_filter in filters(alice):
        for split in (None, Split.TRAIN, Split.TEST):
            options = ExportOptions(
                kind=Kind.RANKINGS,
                filter=ranking_filter,
                split_test=0.3 if split else None,
                seed=7,
                split=split,
            )

            expected = [orjson.dumps(line) for line in ranking_lines(options)]

            assert portable_lines(options) == expected, (ranking_filter, split)
            assert expected or split == Split.TEST


def test_the_portable_snapshot_ids_and_manifest_are_postgresql_s(alice) -> None:
    for ranking_filter in filters(alice):
        snapshot = snapshots.snapshot_create(
            batches=ranking_filter.batches,
            created_after=ranking_filter.created_after,
            annotator=ranking_filter.annotator,
            origin=ranking_filter.origin,
            k=ranking_filter.k,
        )
        ids = snapshots.DatasetSnapshot.objects.get(pk=snapshot.pk).ranking_ids

        portable_ids = export_portable.snapshot_ids(
            ExportOptions(kind=Kind.RANKINGS, filter=ranking_filter)
        )

        assert portable_ids == ids
        assert export_portable.snapshot_manifest(ids) == snapshots._manifest(snapshot.pk)
        # and the portable reader of a snapshot reads the frozen ids
        frozen = ExportOptions(kind=Kind.RANKINGS, filter=RankingFilter(snapshot_id=snapshot.pk))
        assert [orjson.loads(line)["ranking_id"] for line in portable_lines(frozen)] == ids


def test_the_split_bucket_is_postgresql_s() -> None:
    from django.db import connection

    texts = ["", "Prompt 1 of b1", "ünïcode ✓", "x" * 500]
    with connection.cursor() as cursor:
        for text in texts:
            cursor.execute(
                "SELECT ('x' || left(md5(%s::text || %s), 15))::bit(60)::bigint", ["3:", text]
            )
            (expected,) = cursor.fetchone()
            assert export_portable.split_bucket(text, 3) == expected
