"""The assignment queue under real concurrency: many annotators, real transactions, real row
locks (PostgreSQL only)."""

import random
import threading
from collections import Counter

import pytest
from django.db import connection, connections
from django.db.models import Count

from annotation import leases
from annotation.models import Assignment, Comparison, Prompt, Ranking
from tests.annotation.conftest import client_for, make_annotator
from tests.factories import BatchFactory, PromptFactory

NEXT = "/api/v1/assignments/next/"


def _work_until_empty(client, barrier: threading.Barrier, results: list, skip_rate: float) -> None:
    rng = random.Random()
    try:
        barrier.wait()
        while True:
            response = client.get(NEXT)
            if response.status_code == 204:
                return
            assert response.status_code == 200, response.content
            body = response.json()
            if rng.random() < skip_rate:
                skipped = client.post(f"/api/v1/assignments/{body['id']}/skip/", {}, format="json")
                results.append(("skip", skipped.status_code, body["prompt"]["id"], None))
                continue
            order = [c["id"] for c in body["completions"]]
            rng.shuffle(order)
            submitted = client.post(
                f"/api/v1/assignments/{body['id']}/ranking/", {"order": order}, format="json"
            )
            ranking_id = (
                submitted.json().get("ranking_id") if submitted.status_code == 201 else None
            )
            results.append(("submit", submitted.status_code, body["prompt"]["id"], ranking_id))
    except BaseException as exc:  # surfaced by the test, not lost in the thread
        results.append(("error", repr(exc), None, None))
    finally:
        connections.close_all()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("claim_path", "skip_rate"),
    [
        ("one statement", 0.0),
        ("one statement", 0.2),
        # The portable ORM claim (SQLite's), here with locks that wait instead of SKIP LOCKED.
        ("orm, waiting locks", 0.2),
    ],
)
def test_twenty_annotators_at_once_never_exceed_overlap_nor_lose_a_submission(
    postgres, monkeypatch, claim_path, skip_rate
) -> None:
    if claim_path.startswith("orm"):
        monkeypatch.setattr(leases, "_has_skip_locked", lambda: False)
    # given: 15 prompts wanting 2 rankings each, and 20 annotators starting together
    batch = BatchFactory(overlap=2, k_min=4, k_max=4)
    prompts = [PromptFactory(batch=batch, k=4) for _ in range(15)]
    clients = [client_for(make_annotator()) for _ in range(20)]
    barrier = threading.Barrier(len(clients))
    results: list = []

    # when: each annotator loops next -> submit (or skip) until the queue is empty for them
    threads = [
        threading.Thread(target=_work_until_empty, args=(client, barrier, results, skip_rate))
        for client in clients
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    # then: no thread failed, and every submit got its 201
    assert not any(thread.is_alive() for thread in threads)
    assert [r for r in results if r[0] == "error"] == []
    assert {status for kind, status, _, _ in results if kind == "submit"} <= {201}
    submitted = [r for r in results if r[0] == "submit"]

    # no prompt with more than `overlap` human rankings, and with skips the queue still fills
    per_prompt = Counter(
        Ranking.objects.filter(origin=Ranking.Origin.HUMAN).values_list("prompt_id", flat=True)
    )
    assert max(per_prompt.values()) == 2
    if skip_rate == 0.0:
        assert all(per_prompt[p.pk] == 2 for p in prompts)

    # no annotator ranked (or was assigned) the same prompt twice
    assert (
        not Assignment.objects.values("prompt", "annotator").annotate(n=Count("id")).filter(n__gt=1)
    )
    assert not Ranking.objects.values("prompt", "annotator").annotate(n=Count("id")).filter(n__gt=1)

    # no lost submission: each 201 is a ranking with its C(4, 2) comparisons, and back
    assert sorted(r[3] for r in submitted) == sorted(Ranking.objects.values_list("id", flat=True))
    assert Comparison.objects.count() == 6 * len(submitted)
    assert Assignment.objects.filter(status=Assignment.Status.ACTIVE).count() == 0

    # the queue's counters agree with the rows they count
    for prompt in Prompt.objects.all():
        assert prompt.human_ranking_count == per_prompt[prompt.pk]
        assert prompt.lease_count == 0
    assert connection.vendor == "postgresql"
