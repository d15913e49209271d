"""The research API's list endpoints, its permissions, its parameter whitelist and its schema."""

import pytest
from rest_framework.test import APIClient

from annotation.models import Ranking
from annotation.pseudonyms import annotator_pseudonym
from annotation.roles import Role
from tests.annotation.research_support import client_for, ranked_prompts
from tests.factories import BatchFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres")]

ENDPOINTS = [
    "/api/v1/batches/",
    "/api/v1/prompts/",
    "/api/v1/rankings/",
    "/api/v1/comparisons/",
    "/api/v1/exports/rankings.jsonl",
    "/api/v1/exports/comparisons.csv",
    "/api/v1/exports/preference.parquet",
    "/api/v1/snapshots/",
]


@pytest.mark.parametrize("url", ENDPOINTS)
def test_annotators_get_403_and_strangers_401(url: str) -> None:
    assert client_for(Role.ANNOTATOR).get(url).status_code == 403
    assert APIClient().get(url).status_code == 401


def test_annotators_cannot_freeze_a_snapshot() -> None:
    response = client_for(Role.ANNOTATOR).post("/api/v1/snapshots/create/", {}, format="json")
    assert response.status_code == 403


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.ADMIN])
def test_researchers_and_admins_list_rankings_by_pseudonym(role: Role) -> None:
    # given two annotators who ranked three prompts each
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    ranked_prompts(BatchFactory(name="b1"), [alice, bob])

    # when
    response = client_for(role).get("/api/v1/rankings/")

    # then
    assert response.status_code == 200
    rows = response.json()["results"]
    assert len(rows) == Ranking.objects.count() == 6
    assert {row["annotator"] for row in rows} == {
        annotator_pseudonym(alice.pk),
        annotator_pseudonym(bob.pk),
    }
    assert "alice" not in response.content.decode()
    assert rows[0]["batch"] == "b1"
    assert rows[0]["groups"] == Ranking.objects.get(pk=rows[0]["id"]).groups


def test_filters_by_pseudonym_batch_k_origin_and_date() -> None:
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    ranked_prompts(BatchFactory(name="b1"), [alice, bob], k=4)
    ranked_prompts(BatchFactory(name="b2"), [alice], k=3)
    client = client_for(Role.RESEARCHER)

    def count(url: str) -> int:
        response = client.get(url)
        assert response.status_code == 200, response.content
        return len(response.json()["results"])

    alice_pseudonym = annotator_pseudonym(alice.pk)
    assert count(f"/api/v1/rankings/?annotator={alice_pseudonym}") == 6
    assert count(f"/api/v1/rankings/?annotator={alice_pseudonym}&batch=b1") == 3
    assert count("/api/v1/rankings/?batch=b1&batch=b2") == 9
    assert count("/api/v1/rankings/?k=3") == 3
    assert count("/api/v1/rankings/?origin=imported") == 0
    assert count("/api/v1/rankings/?created_after=2000-01-01&created_before=2000-01-02") == 0
    assert count("/api/v1/rankings/?annotator=ann-000000000000") == 0
    assert count("/api/v1/comparisons/?k=3&page_size=1000") == 3 * 3
    assert count("/api/v1/prompts/?k=3") == 3
    assert count("/api/v1/prompts/?batch=b2") == 3
    assert count("/api/v1/batches/?batch=b2") == 1


def test_pages_follow_a_cursor() -> None:
    ranked_prompts(BatchFactory(name="b1"), [UserFactory()], prompts=5)
    client = client_for(Role.RESEARCHER)

    first = client.get("/api/v1/rankings/?page_size=2").json()
    second = client.get(first["next"]).json()

    assert [row["id"] for row in first["results"] + second["results"]] == list(
        Ranking.objects.order_by("id").values_list("id", flat=True)[:4]
    )


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("annotator__password=x", "annotator__password"),
        ("annotator__username__startswith=a", "annotator__username__startswith"),
        ("ordering=-id", "ordering"),
        ("k=four", "k"),
        ("origin=robot", "origin"),
        ("created_after=yesterday", "created_after"),
    ],
)
def test_a_parameter_outside_the_whitelist_is_a_400_naming_it(query: str, parameter: str) -> None:
    client = client_for(Role.RESEARCHER)
    for url in ("/api/v1/rankings/", "/api/v1/comparisons/", "/api/v1/exports/rankings.jsonl"):
        response = client.get(f"{url}?{query}")
        assert response.status_code == 400, url
        assert response["Content-Type"] == "application/json"
        assert set(response.json()) == {parameter, "detail"}  # the field, and a sentence
        assert response.json()["detail"].startswith(f"{parameter}: ")


def test_the_schema_and_its_documentation_page_are_served() -> None:
    client = client_for(Role.RESEARCHER)

    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert "/api/v1/exports/{kind}.{fmt}" in paths
    assert "/api/v1/rankings/" in paths
    names = {p["name"] for p in paths["/api/v1/exports/{kind}.{fmt}"]["get"]["parameters"]}
    assert {"batch", "annotator", "pairs", "ties", "split_test", "seed", "snapshot"} <= names
    assert docs.status_code == 200
    # its scripts come from this server, never from a CDN
    page = docs.content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/" in page
    assert "cdn" not in page.lower()
