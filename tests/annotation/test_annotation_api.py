"""The annotation API through HTTP: payloads, queue order, leases, and errors that are JSON,
readable, and change nothing."""

from datetime import timedelta

import pytest
from django.utils import timezone

from annotation.models import Assignment, Comparison, Prompt, PromptBatch, Ranking
from tests.annotation.conftest import client_for, make_annotator
from tests.factories import BatchFactory, PromptFactory, UserFactory, completion_ids

pytestmark = pytest.mark.django_db

NEXT = "/api/v1/assignments/next/"


def ranking_url(assignment_id: int) -> str:
    return f"/api/v1/assignments/{assignment_id}/ranking/"


def skip_url(assignment_id: int) -> str:
    return f"/api/v1/assignments/{assignment_id}/skip/"


def test_next_returns_the_prompt_its_completions_shuffled_and_the_lease(api, annotator) -> None:
    # given
    batch = BatchFactory(guidelines="Prefer **honest** answers.", overlap=2)
    prompt = PromptFactory(batch=batch, k=6)

    # when
    response = api.get(NEXT)

    # then
    assert response.status_code == 200
    body = response.json()
    assignment = Assignment.objects.get(pk=body["id"])
    assert assignment.annotator == annotator
    assert assignment.status == Assignment.Status.ACTIVE
    assert body["batch"]["id"] == batch.pk
    assert body["guidelines"] == "Prefer **honest** answers."
    assert body["prompt"] == {"id": prompt.pk, "text": prompt.text, "messages": prompt.messages}
    shown = [c["id"] for c in body["completions"]]
    assert shown == assignment.display_order
    assert sorted(shown) == sorted(completion_ids(prompt))
    assert all(c["text"].startswith("Answer ") for c in body["completions"])
    expires = assignment.lease_expires_at
    assert timedelta(minutes=29) < expires - timezone.now() <= timedelta(minutes=30)
    assert Prompt.objects.get(pk=prompt.pk).lease_count == 1


def test_next_gives_back_the_active_lease_to_an_annotator_who_returns(api) -> None:
    PromptFactory.create_batch(3, batch=BatchFactory(), k=4)

    first = api.get(NEXT).json()
    again = api.get(NEXT).json()

    assert again["id"] == first["id"]
    assert again["completions"] == first["completions"]
    assert Assignment.objects.count() == 1


def test_next_is_204_when_nothing_is_left(api) -> None:
    BatchFactory(status=PromptBatch.Status.DRAFT)
    PromptFactory(batch=BatchFactory(status=PromptBatch.Status.PAUSED))

    response = api.get(NEXT)

    assert response.status_code == 204
    assert not Assignment.objects.exists()


def test_queue_order_is_priority_then_fewest_submitted_rankings_then_oldest() -> None:
    # given: a low-priority batch, and a high one whose first prompt already has a ranking
    low = BatchFactory(priority=0, overlap=2)
    high = BatchFactory(priority=5, overlap=2)
    low_prompt = PromptFactory(batch=low, k=3)
    ranked_once, fresh_old, fresh_new = (PromptFactory(batch=high, k=3) for _ in range(3))
    submit_one(make_annotator(), expect_prompt=ranked_once)

    # when / then: the high batch's unranked prompts, oldest first, until their slots are
    # leased; then the one with a ranking; the low batch last
    claims = [claim(make_annotator()) for _ in range(6)]
    assert claims == [
        fresh_old.pk,
        fresh_old.pk,
        fresh_new.pk,
        fresh_new.pk,
        ranked_once.pk,
        low_prompt.pk,
    ]


def submit_one(user, *, expect_prompt: Prompt | None = None) -> dict:
    api = client_for(user)
    body = api.get(NEXT).json()
    if expect_prompt is not None:
        assert body["prompt"]["id"] == expect_prompt.pk
    response = api.post(
        ranking_url(body["id"]), {"order": [c["id"] for c in body["completions"]]}, format="json"
    )
    assert response.status_code == 201, response.content
    return body


def claim(user) -> int:
    return client_for(user).get(NEXT).json()["prompt"]["id"]


def test_overlap_counts_active_leases_and_an_annotator_never_gets_a_prompt_twice() -> None:
    # given: one prompt wanting two rankings
    prompt = PromptFactory(batch=BatchFactory(overlap=2), k=3)
    first, second, third = make_annotator(), make_annotator(), make_annotator()

    # when: two annotators lease it, the first submits
    submit_one(first, expect_prompt=prompt)
    assert claim(second) == prompt.pk

    # then: nobody else gets it while the second holds the lease, and the first not again
    assert client_for(third).get(NEXT).status_code == 204
    assert client_for(first).get(NEXT).status_code == 204


def test_an_expired_lease_goes_back_to_the_pool_and_cannot_be_submitted() -> None:
    # given: the only slot of a prompt leased by someone who walked away
    prompt = PromptFactory(batch=BatchFactory(overlap=1), k=3)
    walker, other = make_annotator(), make_annotator()
    body = client_for(walker).get(NEXT).json()
    Assignment.objects.filter(pk=body["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    # when: someone else asks, and the walker comes back and submits
    assert claim(other) == prompt.pk
    response = client_for(walker).post(
        ranking_url(body["id"]), {"order": completion_ids(prompt)}, format="json"
    )

    # then
    assert response.status_code == 409
    assert "expired" in response.json()["detail"]
    assert response.json()["status"] == "expired"
    assert not Ranking.objects.exists()
    assert Assignment.objects.get(pk=body["id"]).status == Assignment.Status.EXPIRED
    assert Prompt.objects.get(pk=prompt.pk).lease_count == 1


def test_submitting_a_lease_that_lapsed_unreaped_is_409_and_changes_nothing(api) -> None:
    prompt = PromptFactory(batch=BatchFactory(), k=3)
    body = api.get(NEXT).json()
    Assignment.objects.filter(pk=body["id"]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )

    response = api.post(ranking_url(body["id"]), {"order": completion_ids(prompt)}, format="json")

    assert response.status_code == 409
    assert response.json()["status"] == "expired"
    assert not Ranking.objects.exists()
    assignment = Assignment.objects.get(pk=body["id"])
    assert assignment.status == Assignment.Status.ACTIVE


def test_submit_writes_the_ranking_its_comparisons_and_closes_the_lease(api, annotator) -> None:
    # given
    prompt = PromptFactory(batch=BatchFactory(guidelines="g"), k=4)
    body = api.get(NEXT).json()
    a, b, c, d = (c["id"] for c in body["completions"])

    # when: b best, a and d tied, c worst; flags and a rationale
    response = api.post(
        ranking_url(body["id"]),
        {
            "ranking": [[b], [a, d], [c]],
            "flags": {str(c): ["unsafe", "off_topic"]},
            "rationale": "c is rude",
            "duration_ms": 12345,
        },
        format="json",
    )

    # then
    assert response.status_code == 201
    ranking = Ranking.objects.get(pk=response.json()["ranking_id"])
    assert response.json()["comparisons"] == 6
    assert ranking.annotator == annotator
    assert ranking.groups == [[b], [a, d], [c]]
    assert ranking.display_order == [a, b, c, d]
    assert ranking.flags == {str(c): ["off_topic", "unsafe"]}
    assert ranking.rationale == "c is rude"
    assert ranking.duration_ms == 12345
    assert Comparison.objects.filter(ranking=ranking).count() == 6
    assert Comparison.objects.get(ranking=ranking, is_tie=True).rank_gap == 0
    assignment = Assignment.objects.get(pk=body["id"])
    assert assignment.status == Assignment.Status.SUBMITTED
    assert assignment.ranking == ranking
    prompt.refresh_from_db()
    assert (prompt.human_ranking_count, prompt.lease_count) == (1, 0)


def test_none_acceptable_needs_no_ranking_and_writes_no_comparisons(api) -> None:
    PromptFactory(batch=BatchFactory(), k=3)
    body = api.get(NEXT).json()

    response = api.post(ranking_url(body["id"]), {"not_rankable": True}, format="json")

    assert response.status_code == 201
    assert response.json()["comparisons"] == 0
    assert Ranking.objects.get().not_rankable
    assert not Comparison.objects.exists()


def test_a_second_submission_is_409_and_changes_nothing(api) -> None:
    prompt = PromptFactory(batch=BatchFactory(), k=3)
    body = api.get(NEXT).json()
    order = completion_ids(prompt)
    first = api.post(ranking_url(body["id"]), {"order": order}, format="json")

    again = api.post(ranking_url(body["id"]), {"order": order[::-1]}, format="json")

    assert again.status_code == 409
    assert again.json()["ranking_id"] == first.json()["ranking_id"]
    assert "already submitted" in again.json()["detail"]
    assert Ranking.objects.get().groups == [[pk] for pk in order]
    assert Comparison.objects.count() == 3


def test_someone_elses_assignment_is_404(api) -> None:
    PromptFactory(batch=BatchFactory(), k=3)
    theirs = client_for(make_annotator()).get(NEXT).json()

    response = api.post(
        ranking_url(theirs["id"]),
        {"order": [c["id"] for c in theirs["completions"]]},
        format="json",
    )
    skip = api.post(skip_url(theirs["id"]), {}, format="json")

    assert response.status_code == 404
    assert skip.status_code == 404
    assert "no assignment" in response.json()["detail"]
    assert Assignment.objects.get().status == Assignment.Status.ACTIVE


def test_an_id_out_of_range_is_404_not_500(api) -> None:
    response = api.post(ranking_url(10**30), {"order": [1]}, format="json")
    assert response.status_code == 404


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"order": "FIRST"}, "`order` must be a list"),
        ({"ranking": "1,2,3"}, "non-empty list"),
        ({"ranking": [["1"], [2]]}, "not an integer id"),
        ({"ranking": [[1.0], [2]]}, "not an integer id"),
        ({"ranking": [[True], [2]]}, "not an integer id"),
        ({"ranking": [{"id": 1}]}, "must be a non-empty list of ids"),
        ({"ranking": [[[1]], [2]]}, "not an integer id"),
        ({"ranking": [[], [2]]}, "must be a non-empty list"),
        ({"ranking": [1, 2], "order": [1, 2]}, "not both"),
        ({}, "send `ranking`"),
        ({"raking": [1, 2]}, "unknown fields: raking"),
        ({"not_rankable": "yes"}, "not_rankable"),
        ({"order": [1], "duration_ms": "100"}, "duration_ms"),
        ({"order": [1], "duration_ms": 1.5}, "duration_ms"),
        ({"order": [1], "duration_ms": -1}, "duration_ms"),
        ({"order": [1], "flags": {"1": ["rude"]}}, "is not a valid choice"),
        ({"order": [1], "flags": {"x": ["unsafe"]}}, "keyed by completion id"),
        ({"order": [1], "flags": ["unsafe"]}, "flags"),
        ({"order": [1], "rationale": ["a"]}, "rationale"),
        ({"order": [1], "rationale": "x" * 5001}, "rationale"),
    ],
)
def test_malformed_input_is_400_with_a_readable_message_and_changes_nothing(
    api, payload, message
) -> None:
    PromptFactory(batch=BatchFactory(), k=3)
    body = api.get(NEXT).json()

    response = api.post(ranking_url(body["id"]), payload, format="json")

    assert response.status_code == 400, response.content
    assert message in response.json()["detail"]
    assert not Ranking.objects.exists()
    assert Assignment.objects.get().status == Assignment.Status.ACTIVE


def test_a_body_that_is_not_an_object_or_not_json_is_400(api) -> None:
    PromptFactory(batch=BatchFactory(), k=3)
    body = api.get(NEXT).json()

    as_list = api.post(ranking_url(body["id"]), [1, 2, 3], format="json")
    broken = api.post(ranking_url(body["id"]), "{", content_type="application/json")

    assert as_list.status_code == 400
    assert "dictionary" in as_list.json()["detail"]
    assert broken.status_code == 400
    assert "JSON" in broken.json()["detail"]


@pytest.mark.parametrize(
    ("groups", "message"),
    [
        (lambda a, b, c: [[a], [b]], "missing: {c}"),
        (lambda a, b, c: [[a], [b, a], [c]], "repeated: {a}"),
        (lambda a, b, c: [[a], [b], [c], [999999]], "not completions of this prompt: 999999"),
    ],
)
def test_a_ranking_that_is_not_a_partition_is_400_naming_the_problem(api, groups, message) -> None:
    PromptFactory(batch=BatchFactory(), k=3)
    body = api.get(NEXT).json()
    a, b, c = sorted(x["id"] for x in body["completions"])

    response = api.post(ranking_url(body["id"]), {"ranking": groups(a, b, c)}, format="json")

    assert response.status_code == 400
    assert message.format(a=a, b=b, c=c) in response.json()["detail"]
    assert not Ranking.objects.exists()
    assert Assignment.objects.get().status == Assignment.Status.ACTIVE


def test_flags_for_a_completion_of_another_prompt_are_400(api) -> None:
    PromptFactory(batch=BatchFactory(), k=3)
    body = api.get(NEXT).json()
    order = [c["id"] for c in body["completions"]]

    response = api.post(
        ranking_url(body["id"]), {"order": order, "flags": {"999999": ["other"]}}, format="json"
    )

    assert response.status_code == 400
    assert "999999" in response.json()["detail"]


def test_skip_releases_the_lease_and_the_annotator_moves_on(api) -> None:
    first_prompt = PromptFactory(batch=BatchFactory(overlap=1), k=3)
    second_prompt = PromptFactory(batch=first_prompt.batch, k=3)
    body = api.get(NEXT).json()

    response = api.post(skip_url(body["id"]), {"reason": "not my language"}, format="json")

    assert response.status_code == 200
    skipped = Assignment.objects.get(pk=body["id"])
    assert skipped.status == Assignment.Status.SKIPPED
    assert skipped.skip_reason == "not my language"
    assert Prompt.objects.get(pk=first_prompt.pk).lease_count == 0
    assert claim_with(api) == second_prompt.pk
    assert claim(make_annotator()) == first_prompt.pk
    assert api.post(skip_url(body["id"]), {}, format="json").status_code == 409


def claim_with(api) -> int:
    return api.get(NEXT).json()["prompt"]["id"]


def test_only_annotators_and_admins_may_annotate(client) -> None:
    PromptFactory(batch=BatchFactory(), k=3)
    researcher = UserFactory()
    from annotation.roles import Role, user_set_role

    user_set_role(user=researcher, role=Role.RESEARCHER)
    admin = UserFactory()
    user_set_role(user=admin, role=Role.ADMIN)

    assert client.get(NEXT).status_code == 401
    assert client_for(researcher).get(NEXT).status_code == 403
    assert client_for(UserFactory()).get(NEXT).status_code == 403
    assert client_for(admin).get(NEXT).status_code == 200


def test_session_auth_needs_the_csrf_token(annotator) -> None:
    from rest_framework.test import APIClient

    prompt = PromptFactory(batch=BatchFactory(), k=3)
    browser = APIClient(enforce_csrf_checks=True)
    browser.force_login(annotator)
    body = browser.get(NEXT).json()

    response = browser.post(
        ranking_url(body["id"]), {"order": completion_ids(prompt)}, format="json"
    )

    assert response.status_code == 403
    assert "CSRF" in response.json()["detail"]
    assert not Ranking.objects.exists()


def test_batches_of_equal_priority_share_one_queue_ordered_by_fewest_rankings() -> None:
    # given: two batches of the same priority; the older batch's prompt has a ranking
    first = BatchFactory(priority=1, overlap=2)
    second = BatchFactory(priority=1, overlap=2)
    ranked = PromptFactory(batch=first, k=3)
    submit_one(make_annotator(), expect_prompt=ranked)
    fresh = PromptFactory(batch=second, k=3)

    # then: the unranked prompt of the newer batch comes first, then the ranked one
    assert claim(make_annotator()) == fresh.pk
    assert claim(make_annotator()) == fresh.pk
    assert claim(make_annotator()) == ranked.pk
