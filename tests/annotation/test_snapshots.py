"""Dataset snapshots: freezing rankings through the API, their manifest, byte-identical
re-exports, frozen splits, and the reader a training run uses."""

import hashlib

import pytest

from annotation.exports import Split
from annotation.models import DatasetSnapshot, Ranking
from annotation.pseudonyms import annotator_pseudonym
from annotation.roles import Role
from annotation.snapshots import snapshot_create, snapshot_rankings, snapshot_verify
from tests.annotation.research_support import body, client_for, jsonl, ranked_prompts
from tests.factories import BatchFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres")]


def test_freezing_a_snapshot_records_its_rankings_and_manifest() -> None:
    # given two batches; b1 has a tie in each of the first annotator's rankings
    alice, bob = UserFactory(), UserFactory()
    ranked_prompts(BatchFactory(name="b1"), [alice, bob], prompts=3, k=4)
    ranked_prompts(BatchFactory(name="b2"), [alice], prompts=2, k=3)
    client = client_for(Role.RESEARCHER)

    # when
    response = client.post(
        "/api/v1/snapshots/create/",
        {"name": "rm-v1", "batch": ["b1"], "split_test": 0.2, "seed": 3},
        format="json",
    )

    # then
    assert response.status_code == 201, response.content
    data = response.json()
    snapshot = DatasetSnapshot.objects.get(pk=data["id"])
    expected = list(
        Ranking.objects.filter(prompt__batch__name="b1").order_by("id").values_list("id", flat=True)
    )
    assert snapshot.ranking_ids == expected
    assert snapshot.name == "rm-v1"
    manifest = data["manifest"]
    assert manifest["rankings"] == 6
    assert manifest["prompts"] == 3
    assert manifest["annotators"] == 2
    assert manifest["comparisons"] == 6 * 6 - 3
    assert manifest["tied_comparisons"] == 3
    assert manifest["k_histogram"] == {"4": 6}
    assert manifest["batches"] == {"b1": 6}
    assert manifest["options"]["split_test"] == 0.2
    assert manifest["options"]["filter"]["batches"] == ["b1"]
    export = body(client.get(f"/api/v1/exports/rankings.jsonl?snapshot={snapshot.pk}"))
    assert (
        data["content_sha256"] == manifest["content_sha256"] == hashlib.sha256(export).hexdigest()
    )
    listed = client.get("/api/v1/snapshots/").json()["results"]
    assert [row["id"] for row in listed] == [snapshot.pk]
    assert client.get(f"/api/v1/snapshots/{snapshot.pk}/").json()["manifest"] == manifest


@pytest.mark.parametrize(
    "query",
    ["rankings.jsonl", "comparisons.jsonl", "comparisons.csv", "preference.parquet"],
)
def test_a_snapshot_exports_the_same_bytes_after_new_rankings_arrive(query: str) -> None:
    alice = UserFactory()
    batch = BatchFactory(name="b1")
    ranked_prompts(batch, [alice], prompts=3)
    snapshot = snapshot_create(batches=["b1"])
    client = client_for(Role.RESEARCHER)
    url = f"/api/v1/exports/{query}?snapshot={snapshot.pk}"
    before = body(client.get(url))

    # when more rankings land in the same batch
    ranked_prompts(batch, [UserFactory()], prompts=2)

    # then the snapshot is unchanged, and an export by filters sees the new rankings
    assert body(client.get(url)) == before
    assert len(body(client.get(f"/api/v1/exports/{query}?batch=b1"))) > len(before)
    assert snapshot_verify(snapshot=snapshot)


def test_a_snapshot_split_is_frozen_disjoint_and_read_by_training() -> None:
    ranked_prompts(BatchFactory(name="b1"), [UserFactory(), UserFactory()], prompts=30, k=3)
    snapshot = snapshot_create(split_test=0.3, seed=11)
    client = client_for(Role.RESEARCHER)

    train = jsonl(
        body(client.get(f"/api/v1/exports/rankings.jsonl?snapshot={snapshot.pk}&split=train"))
    )
    test = jsonl(
        body(client.get(f"/api/v1/exports/rankings.jsonl?snapshot={snapshot.pk}&split=test"))
    )
    read = list(snapshot_rankings(snapshot=snapshot, split=Split.TEST))

    assert {r["prompt_id"] for r in train}.isdisjoint({r["prompt_id"] for r in test})
    assert len(train) + len(test) == 60
    assert [r["ranking_id"] for r in read] == [r["ranking_id"] for r in test]
    # the reward model's shape: prompt, completions and best-first groups of indices
    first = read[0]
    assert set(first) >= {"prompt", "messages", "completions", "ranking"}
    assert sorted(i for group in first["ranking"] for i in group) == list(range(3))


def test_deleting_a_frozen_ranking_fails_verification() -> None:
    ranked_prompts(BatchFactory(name="b1"), [UserFactory()], prompts=2)
    snapshot = snapshot_create()

    first_id = DatasetSnapshot.objects.get(pk=snapshot.pk).ranking_ids[0]
    Ranking.objects.filter(pk=first_id).delete()

    assert not snapshot_verify(snapshot=snapshot)


def test_a_snapshot_with_filters_or_a_new_split_is_a_400() -> None:
    alice = UserFactory()
    ranked_prompts(BatchFactory(name="b1"), [alice], prompts=1)
    snapshot = snapshot_create()
    client = client_for(Role.RESEARCHER)

    with_filter = client.get(f"/api/v1/exports/rankings.jsonl?snapshot={snapshot.pk}&batch=b1")
    new_split = client.get(
        f"/api/v1/exports/rankings.jsonl?snapshot={snapshot.pk}&split_test=0.5&split=test"
    )
    no_split = client.get(f"/api/v1/exports/rankings.jsonl?snapshot={snapshot.pk}&split=test")
    by_pseudonym = client.post(
        "/api/v1/snapshots/create/", {"annotator": annotator_pseudonym(alice.pk)}, format="json"
    )

    assert (with_filter.status_code, sorted(with_filter.json())) == (400, ["batch", "detail"])
    assert (new_split.status_code, sorted(new_split.json())) == (400, ["detail", "split_test"])
    assert (no_split.status_code, sorted(no_split.json())) == (400, ["detail", "split"])
    assert by_pseudonym.json()["manifest"]["rankings"] == 1
