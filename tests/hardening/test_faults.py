"""Faults with real processes: gunicorn on the test database, PostgreSQL backends terminated,
Redis stopped. The Celery worker killed mid-run is tests/training/test_loop_worker.py's
`test_a_worker_killed_mid_training_registers_nothing_and_the_retry_succeeds`, and training
queued while Redis is down is its `test_training_queued_while_redis_is_down_runs_once_it_is_back`.

To stop a submission half-way, the test holds the prompt's row lock (FOR NO KEY UPDATE: the
submission's foreign-key checks pass, its counter update waits). By then the worker has
inserted the ranking and its comparisons inside its transaction; the test then kills the
worker or terminates its database session, and checks that none of it was committed.
"""

import http.client
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection
from rest_framework.authtoken.models import Token

from annotation.models import Assignment, Comparison, Prompt, Ranking
from annotation.roles import Role
from tests.factories import BatchFactory, PromptFactory
from tests.hardening.world import make_user
from tests.processes import GunicornServer, RedisServer, database_url, wait_until

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres")]


@pytest.fixture
def start_gunicorn(tmp_path: Path) -> Iterator[Any]:
    servers: list[GunicornServer] = []

    def start(**kwargs: Any) -> GunicornServer:
        server = GunicornServer(log_path=tmp_path / f"gunicorn-{len(servers)}.log", **kwargs)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.stop()


def call(
    server: GunicornServer, method: str, path: str, token: str, body: Any = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        payload = None if body is None else json.dumps(body).encode()
        conn.request(
            method,
            path,
            body=payload,
            headers={
                "Authorization": f"Token {token}",
                "Content-Type": "application/json",
            },
        )
        response = conn.getresponse()
        raw = response.read()
        data = (
            json.loads(raw)
            if raw and response.getheader("Content-Type", "").startswith("application/json")
            else {}
        )
        return response.status, data, dict(response.getheaders())
    finally:
        conn.close()


def submit(server: GunicornServer, token: str, assignment: dict[str, Any]) -> Any:
    order = [c["id"] for c in assignment["completions"]]
    return call(
        server, "POST", f"/api/v1/assignments/{assignment['id']}/ranking/", token, {"order": order}
    )


def annotator_with_lease(server: GunicornServer) -> tuple[str, dict[str, Any]]:
    PromptFactory(batch=BatchFactory(overlap=1), k=4)
    user = make_user("alice", Role.ANNOTATOR)
    token = Token.objects.create(user=user).key
    status, assignment, _ = call(server, "GET", "/api/v1/assignments/next/", token)
    assert status == 200, assignment
    return token, assignment


class PromptLock:
    """Holds one prompt's row lock from a separate connection (outside Django's)."""

    def __init__(self, prompt_id: int) -> None:
        self.conn = psycopg.connect(database_url())
        self.conn.execute(
            "SELECT 1 FROM annotation_prompt WHERE id = %s FOR NO KEY UPDATE", [prompt_id]
        )

    def release(self) -> None:
        self.conn.rollback()
        self.conn.close()


def waiting_submission_pid(server: GunicornServer) -> int | None:
    """The backend of gunicorn's submission once it waits for the prompt's lock, after its
    inserts."""
    with psycopg.connect(database_url()) as conn:
        row = conn.execute(
            r"""SELECT pid FROM pg_stat_activity
               WHERE application_name = %s AND wait_event_type = 'Lock'
                 AND query ~ '^\s*UPDATE "?annotation_prompt\M'""",
            [server.application_name],
        ).fetchone()
    return None if row is None else int(row[0])


def uncommitted_nothing(assignment_id: int, prompt_id: int) -> None:
    assert Ranking.objects.count() == 0
    assert Comparison.objects.count() == 0
    assert Assignment.objects.get(pk=assignment_id).status == "active"
    prompt = Prompt.objects.get(pk=prompt_id)
    assert (prompt.human_ranking_count, prompt.lease_count) == (0, 1)


def submit_in_background(server: GunicornServer, token: str, assignment: dict[str, Any]) -> Any:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["response"] = submit(server, token, assignment)
        except (OSError, http.client.HTTPException) as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_a_worker_killed_mid_submission_commits_nothing_and_the_retry_succeeds(
    start_gunicorn: Any,
) -> None:
    # given: a submission stopped after its inserts, inside its transaction
    server = start_gunicorn()
    token, assignment = annotator_with_lease(server)
    prompt_id = assignment["prompt"]["id"]
    lock = PromptLock(prompt_id)
    thread, result = submit_in_background(server, token, assignment)
    wait_until(
        lambda: waiting_submission_pid(server) is not None,
        timeout=30,
        what="the submission to wait for the prompt's lock",
    )
    [worker] = server.workers_pids()

    # when: the worker is killed there, as the OOM killer or a crash would
    os.kill(worker, signal.SIGKILL)
    thread.join(timeout=30)
    lock.release()

    # then: the client saw the connection drop, and nothing of the ranking is in the database
    assert "error" in result or result["response"][0] >= 500
    wait_until(lambda: waiting_submission_pid(server) is None, timeout=30, what="the rollback")
    uncommitted_nothing(assignment["id"], prompt_id)

    # when: the client retries on the worker gunicorn started in its place
    wait_until(
        lambda: bool(server.workers_pids()) and server.workers_pids() != [worker],
        timeout=60,
        what="a new gunicorn worker",
    )
    status, body, _ = submit(server, token, assignment)

    # then: exactly one ranking with its C(4,2) comparisons
    assert status == 201, body
    assert Ranking.objects.count() == 1
    assert Comparison.objects.filter(ranking_id=body["ranking_id"]).count() == 6
    assert Prompt.objects.get(pk=prompt_id).human_ranking_count == 1


def test_a_terminated_database_session_is_a_503_and_the_retry_succeeds(
    start_gunicorn: Any,
) -> None:
    server = start_gunicorn()
    token, assignment = annotator_with_lease(server)
    prompt_id = assignment["prompt"]["id"]
    path = f"/api/v1/assignments/{assignment['id']}/ranking/"
    order = {"order": [c["id"] for c in assignment["completions"]]}

    # given: the worker's idle session is terminated between requests (a PostgreSQL restart,
    # a failover, an idle timeout)
    with psycopg.connect(database_url(), autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [server.application_name],
        )
    # when / then: the next request notices before using it, and works
    status, again, _ = call(server, "GET", "/api/v1/assignments/next/", token)
    assert (status, again["id"]) == (200, assignment["id"])

    # given: a submission in the middle of its transaction
    lock = PromptLock(prompt_id)
    thread, result = submit_in_background(server, token, assignment)
    wait_until(
        lambda: waiting_submission_pid(server) is not None,
        timeout=30,
        what="the submission to wait for the prompt's lock",
    )

    # when: its database session is terminated
    with psycopg.connect(database_url(), autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [waiting_submission_pid(server)])
    thread.join(timeout=30)
    lock.release()

    # then: a clear 503 that says to retry, and nothing written
    status, body, headers = result["response"]
    assert status == 503, (body, server.log[-2000:])
    assert "retry" in body["detail"].lower()
    assert int(headers["Retry-After"]) > 0
    uncommitted_nothing(assignment["id"], prompt_id)

    # when: the client retries, on the same worker
    status, body, _ = call(server, "POST", path, token, order)

    # then: the worker dropped the broken connection, opened a new one, and saved it once
    assert status == 201, body
    assert Ranking.objects.count() == 1
    assert Comparison.objects.count() == 6


def test_submissions_go_on_while_redis_is_down(start_gunicorn: Any, redis: RedisServer) -> None:
    # given: gunicorn sends its tasks to a Redis that then stops
    server = start_gunicorn(extra_env={"CELERY_BROKER_URL": redis.url})
    PromptFactory.create_batch(3, batch=BatchFactory(overlap=1), k=4)
    token = Token.objects.create(user=make_user("alice", Role.ANNOTATOR)).key
    redis.stop()

    # when: an annotator works through the batch
    submitted = []
    for _ in range(3):
        status, assignment, _ = call(server, "GET", "/api/v1/assignments/next/", token)
        assert status == 200
        status, body, _ = submit(server, token, assignment)
        assert status == 201, body
        submitted.append(body["ranking_id"])

    # then: every ranking is saved; readiness says which dependency is down
    assert sorted(Ranking.objects.values_list("id", flat=True)) == sorted(submitted)
    status, ready, _ = call(server, "GET", "/readyz", token)
    assert status == 503
    assert ready["database"]["ok"]
    assert not ready["broker"]["ok"]

    # when Redis is back, readiness recovers without a restart
    redis.start()
    wait_until(
        lambda: call(server, "GET", "/readyz", token)[0] == 200,
        timeout=30,
        what="readyz to see Redis again",
    )
    assert connection.vendor == "postgresql"


def test_workers_killed_at_random_under_load_leave_every_ranking_whole(
    start_gunicorn: Any,
) -> None:
    # given: three workers serving eight annotators who submit as fast as they can
    server = start_gunicorn(workers=3)
    PromptFactory.create_batch(60, batch=BatchFactory(overlap=2), k=5)
    tokens = [Token.objects.create(user=make_user(f"ann{i}", Role.ANNOTATOR)).key for i in range(8)]
    accepted: list[int] = []
    stop = threading.Event()

    def annotate(token: str) -> None:
        while not stop.is_set():
            try:
                status, assignment, _ = call(server, "GET", "/api/v1/assignments/next/", token)
                if status == 204:
                    return
                if status != 200:
                    continue
                status, body, _ = submit(server, token, assignment)
                if status == 201:
                    accepted.append(body["ranking_id"])
            except (OSError, http.client.HTTPException, json.JSONDecodeError):
                continue  # the worker died under this request: try again

    threads = [threading.Thread(target=annotate, args=(t,), daemon=True) for t in tokens]
    for thread in threads:
        thread.start()

    # when: a worker is SIGKILLed every 0.3 s for 4 s, wherever it is
    killed = 0
    for _ in range(13):
        stop.wait(0.3)
        pids = server.workers_pids()
        if pids:
            os.kill(pids[killed % len(pids)], signal.SIGKILL)
            killed += 1
    stop.set()
    for thread in threads:
        thread.join(timeout=60)

    # then: every ranking in the database is whole (its 10 comparisons, its assignment
    # submitted, its prompt counted), and every submission the clients saw accepted is there
    rankings = list(Ranking.objects.values_list("id", flat=True))
    assert accepted
    assert set(accepted) <= set(rankings)
    assert killed >= 10
    for ranking_id in rankings:
        assert Comparison.objects.filter(ranking_id=ranking_id).count() == 10
        assert Assignment.objects.get(ranking_id=ranking_id).status == "submitted"
    for prompt in Prompt.objects.all():
        assert prompt.human_ranking_count == prompt.rankings.count()
        assert prompt.human_ranking_count <= 2
