"""Hostile input to every API endpoint, one row per attack.

Each case names who sends it, the request and the exact answer: the status, a JSON body whose
`detail` is a sentence containing the expected words, and the database exactly as it was
(row counts of every table, every assignment's state, every prompt's counters). URLs hold
`{mine}` (alice's live lease), `{theirs}` (bob's), `{stale}` (carol's expired one), `{done}`
(alice's submitted one) and `{snapshot}`; a callable body receives the World.
"""

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from config.api_input import BodyTooLarge, StrictJSONParser
from tests.hardening.world import World, row_counts, shared_world, token_client

pytestmark = pytest.mark.django_db

Body = bytes | str | Callable[[World], Any] | None


@dataclass(frozen=True)
class Case:
    name: str
    who: str
    method: str
    url: str
    body: Body
    status: int
    detail: str
    content_type: str = "application/json"
    postgres: bool = False  # exports and snapshots need PostgreSQL


RANK = "/api/v1/assignments/{mine}/ranking/"
SKIP = "/api/v1/assignments/{mine}/skip/"
SNAP = "/api/v1/snapshots/create/"
SCORE = "/api/v1/reward/score/"


def order(w: World, **extra: Any) -> dict[str, Any]:
    return {"order": w.mine_ids, **extra}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


CASES = [
    # -- malformed bodies --------------------------------------------------------------------
    Case("truncated json", "alice", "post", RANK, b'{"order": [1, 2', 400, "JSON parse error"),
    Case("not json at all", "alice", "post", RANK, b"order=1,2,3", 400, "JSON parse error"),
    Case("empty object", "alice", "post", RANK, b"{}", 400, "send `ranking`"),
    Case("a list body", "alice", "post", RANK, b"[1, 2, 3]", 400, "expected a dictionary"),
    Case("a string body", "alice", "post", RANK, b'"rank it"', 400, "expected a dictionary"),
    Case("null body", "alice", "post", RANK, b"null", 400, "no data provided"),
    Case("deep arrays", "alice", "post", RANK, nested(100_000), 400, "nested deeper than"),
    Case(
        "deep objects",
        "alice",
        "post",
        RANK,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        400,
        "nested deeper than",
    ),
    Case(
        "deep ranking",
        "alice",
        "post",
        RANK,
        lambda w: '{"ranking": ' + nested(40) + "}",
        400,
        "nested deeper than",
    ),
    Case(
        "brackets inside strings are not nesting",
        "alice",
        "post",
        RANK,
        lambda w: {"order": w.mine_ids[:2], "rationale": "[" * 5000},
        400,
        "missing",
    ),
    Case(
        "NUL escaped in a string",
        "alice",
        "post",
        RANK,
        lambda w: order(w, rationale="fine\u0000then not"),
        400,
        "NUL characters",
    ),
    Case(
        "NUL in a key",
        "alice",
        "post",
        RANK,
        lambda w: {**order(w), "x\u0000": 1},
        400,
        "NUL characters",
    ),
    Case(
        "raw NUL byte",
        "alice",
        "post",
        RANK,
        b'{"order": [1], "rationale": "a\x00b"}',
        400,
        "JSON parse error",
    ),
    Case(
        "invalid UTF-8",
        "alice",
        "post",
        RANK,
        b'{"order": [1], "rationale": "caf\xe9 \xff\xfe"}',
        400,
        "not valid utf-8",
    ),
    Case(
        "UTF-16 declared as UTF-8",
        "alice",
        "post",
        RANK,
        '{"order": [1]}'.encode("utf-16"),
        400,
        "not valid utf-8",
    ),
    Case("NaN", "alice", "post", RANK, b'{"order": [1], "duration_ms": NaN}', 400, "NaN"),
    Case(
        "Infinity",
        "alice",
        "post",
        RANK,
        b'{"order": [1], "duration_ms": Infinity}',
        400,
        "Infinity",
    ),
    Case(
        "duplicate keys",
        "alice",
        "post",
        RANK,
        lambda w: f'{{"order": {w.mine_ids}, "order": {w.mine_ids[::-1]}}}',
        400,
        "appears twice",
    ),
    Case(
        "over the size limit",
        "alice",
        "post",
        RANK,
        lambda w: order(w, rationale="x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)),
        413,
        "over the limit",
    ),
    Case(
        "form-encoded",
        "alice",
        "post",
        RANK,
        b"order=1&order=2",
        415,
        "unsupported media type",
        content_type="application/x-www-form-urlencoded",
    ),
    Case(
        "multipart",
        "alice",
        "post",
        RANK,
        b"--b\r\nContent-Disposition: form-data; name=order\r\n\r\n1\r\n--b--\r\n",
        415,
        "unsupported media type",
        content_type="multipart/form-data; boundary=b",
    ),
    # -- wrong types ---------------------------------------------------------------------------
    Case(
        "ids as strings",
        "alice",
        "post",
        RANK,
        lambda w: {"order": [str(i) for i in w.mine_ids]},
        400,
        "list of completion ids",
    ),
    Case(
        "ids as floats",
        "alice",
        "post",
        RANK,
        lambda w: {"order": [float(i) for i in w.mine_ids]},
        400,
        "list of completion ids",
    ),
    Case(
        "ids as booleans",
        "alice",
        "post",
        RANK,
        {"order": [True, False]},
        400,
        "list of completion ids",
    ),
    Case(
        "a float in a group",
        "alice",
        "post",
        RANK,
        lambda w: {"ranking": [[w.mine_ids[0] + 0.5], w.mine_ids[1:]]},
        400,
        "not an integer id",
    ),
    Case("a dict as ranking", "alice", "post", RANK, {"ranking": {"1": 1}}, 400, "non-empty list"),
    Case("an empty ranking", "alice", "post", RANK, {"ranking": []}, 400, "non-empty list"),
    Case(
        "not_rankable as a string",
        "alice",
        "post",
        RANK,
        lambda w: order(w, not_rankable="true"),
        400,
        "not_rankable",
    ),
    Case(
        "duration as a string",
        "alice",
        "post",
        RANK,
        lambda w: order(w, duration_ms="100"),
        400,
        "duration_ms",
    ),
    Case(
        "duration negative",
        "alice",
        "post",
        RANK,
        lambda w: order(w, duration_ms=-1),
        400,
        "duration_ms",
    ),
    Case(
        "duration huge float",
        "alice",
        "post",
        RANK,
        lambda w: order(w, duration_ms=1e300),
        400,
        "duration_ms",
    ),
    Case(
        "rationale as a number",
        "alice",
        "post",
        RANK,
        lambda w: order(w, rationale=5),
        400,
        "rationale",
    ),
    Case(
        "rationale too long",
        "alice",
        "post",
        RANK,
        lambda w: order(w, rationale="y" * 5001),
        400,
        "rationale",
    ),
    Case(
        "flags keyed by a word",
        "alice",
        "post",
        RANK,
        lambda w: order(w, flags={"best": ["unsafe"]}),
        400,
        "keyed by completion id",
    ),
    Case(
        "an unknown flag",
        "alice",
        "post",
        RANK,
        lambda w: order(w, flags={str(w.mine_ids[0]): ["<script>"]}),
        400,
        "not a valid choice",
    ),
    Case(
        "flags on another prompt's completion",
        "alice",
        "post",
        RANK,
        lambda w: order(w, flags={str(w.foreign_id): ["unsafe"]}),
        400,
        "flags",
    ),
    Case(
        "unknown field",
        "alice",
        "post",
        RANK,
        lambda w: order(w, annotator=99),
        400,
        "unknown fields: annotator",
    ),
    Case(
        "both ranking and order",
        "alice",
        "post",
        RANK,
        lambda w: {"order": w.mine_ids, "ranking": [w.mine_ids]},
        400,
        "not both",
    ),
    # -- rankings that are not a partition -----------------------------------------------------
    Case(
        "a repeated id",
        "alice",
        "post",
        RANK,
        lambda w: {"order": [*w.mine_ids, w.mine_ids[0]]},
        400,
        "repeated",
    ),
    Case(
        "an omitted id",
        "alice",
        "post",
        RANK,
        lambda w: {"order": w.mine_ids[:-1]},
        400,
        "missing",
    ),
    Case(
        "an added id of another prompt",
        "alice",
        "post",
        RANK,
        lambda w: {"order": [*w.mine_ids, w.foreign_id]},
        400,
        "not completions of this prompt",
    ),
    Case(
        "another prompt's ids instead",
        "alice",
        "post",
        RANK,
        lambda w: {"order": [w.foreign_id, *w.mine_ids[1:]]},
        400,
        "not completions of this prompt",
    ),
    Case(
        "an id beyond bigint",
        "alice",
        "post",
        RANK,
        lambda w: {"order": [*w.mine_ids[:-1], 2**70]},
        400,
        "not completions of this prompt",
    ),
    Case(
        "a tie repeating an id",
        "alice",
        "post",
        RANK,
        lambda w: {"ranking": [w.mine_ids[:2], w.mine_ids[1:]]},
        400,
        "repeated",
    ),
    # -- ids in the URL ------------------------------------------------------------------------
    Case("a word as id", "alice", "post", "/api/v1/assignments/abc/ranking/", b"{}", 404, "no "),
    Case("a float as id", "alice", "post", "/api/v1/assignments/1.5/ranking/", b"{}", 404, "no "),
    Case("a negative id", "alice", "post", "/api/v1/assignments/-1/ranking/", b"{}", 404, "no "),
    Case(
        "an id beyond bigint in the URL",
        "alice",
        "post",
        "/api/v1/assignments/99999999999999999999999/ranking/",
        lambda w: order(w),
        404,
        "you have no assignment",
    ),
    Case(
        "someone else's lease",
        "alice",
        "post",
        "/api/v1/assignments/{theirs}/ranking/",
        lambda w: order(w),
        404,
        "you have no assignment",
    ),
    Case(
        "someone else's lease, skipped",
        "alice",
        "post",
        "/api/v1/assignments/{theirs}/skip/",
        None,
        404,
        "you have no assignment",
    ),
    Case(
        "a stale lease",
        "carol",
        "post",
        "/api/v1/assignments/{stale}/ranking/",
        lambda w: {"order": sorted(w.stale.display_order)},
        409,
        "expired",
    ),
    Case(
        "a stale lease, skipped",
        "carol",
        "post",
        "/api/v1/assignments/{stale}/skip/",
        None,
        409,
        "expired",
    ),
    Case(
        "a submitted assignment, again and different",
        "alice",
        "post",
        "/api/v1/assignments/{done}/ranking/",
        lambda w: {"order": sorted(w.done.display_order)},
        409,
        "already submitted",
    ),
    Case(
        "a submitted assignment, skipped",
        "alice",
        "post",
        "/api/v1/assignments/{done}/skip/",
        None,
        409,
        "already submitted",
    ),
    Case("skip reason as a number", "alice", "post", SKIP, {"reason": 7}, 400, "reason"),
    Case("skip reason with NUL", "alice", "post", SKIP, {"reason": "a\u0000"}, 400, "NUL"),
    Case("skip reason too long", "alice", "post", SKIP, {"reason": "r" * 501}, 400, "reason"),
    Case("GET a submission", "alice", "get", RANK, None, 405, 'method "get" not allowed'),
    Case("PUT the queue", "alice", "put", "/api/v1/assignments/next/", b"{}", 405, "not allowed"),
    Case("no such endpoint", "alice", "get", "/api/v1/nothing-here/", None, 404, "no endpoint"),
    # -- query parameters that reach for other fields ------------------------------------------
    *[
        Case(
            f"{path} {query}",
            "researcher",
            "get",
            f"/api/v1/{path}/?{query}",
            None,
            400,
            "unknown query parameter",
        )
        for path, query in [
            ("rankings", "annotator__password=pbkdf2"),
            ("rankings", "annotator__password__startswith=pbkdf2"),
            ("rankings", "ordering=annotator__password"),
            ("comparisons", "ordering=-annotator__password"),
            ("comparisons", "annotator__is_superuser=true"),
            ("prompts", "batch__created_by__password__regex=.*"),
            ("batches", "created_by__auth_token__key__startswith=a"),
            ("batches", "search=x"),
        ]
    ],
    Case("k as a word", "researcher", "get", "/api/v1/rankings/?k=two", None, 400, "k:"),
    Case("k as a float", "researcher", "get", "/api/v1/rankings/?k=2.5", None, 400, "k:"),
    Case("k below 2", "researcher", "get", "/api/v1/prompts/?k=1", None, 400, "k:"),
    Case(
        "a NUL in a filter", "researcher", "get", "/api/v1/rankings/?batch=a%00b", None, 400, "NUL"
    ),
    Case(
        "a date that is not one",
        "researcher",
        "get",
        "/api/v1/rankings/?created_after=soon",
        None,
        400,
        "created_after",
    ),
    Case(
        "a forged cursor",
        "researcher",
        "get",
        "/api/v1/rankings/?cursor=bz1hYmM%3D",
        None,
        404,
        "invalid cursor",
    ),
    Case(
        "an origin out of its choices",
        "researcher",
        "get",
        "/api/v1/comparisons/?origin=x",
        None,
        400,
        "origin",
    ),
    # -- exports and snapshots -----------------------------------------------------------------
    Case(
        "an unknown export format",
        "researcher",
        "get",
        "/api/v1/exports/rankings.exe",
        None,
        404,
        "no export",
        postgres=True,
    ),
    Case(
        "an export reaching for a password",
        "researcher",
        "get",
        "/api/v1/exports/comparisons.csv?annotator__password=x",
        None,
        400,
        "unknown query parameter",
        postgres=True,
    ),
    Case(
        "an export with a float snapshot id",
        "researcher",
        "get",
        "/api/v1/exports/rankings.jsonl?snapshot=1.5",
        None,
        400,
        "snapshot",
        postgres=True,
    ),
    Case(
        "an export of a missing snapshot",
        "researcher",
        "get",
        "/api/v1/exports/rankings.jsonl?snapshot=999999",
        None,
        400,
        "no such snapshot",
        postgres=True,
    ),
    Case(
        "an export with an unknown pairs policy",
        "researcher",
        "get",
        "/api/v1/exports/preference.jsonl?pairs=every",
        None,
        400,
        "pairs",
        postgres=True,
    ),
    Case(
        "a snapshot id that is a word",
        "researcher",
        "get",
        "/api/v1/snapshots/latest/",
        None,
        404,
        "no endpoint",
    ),
    Case(
        "a missing snapshot",
        "researcher",
        "get",
        "/api/v1/snapshots/999999/",
        None,
        404,
        "no such snapshot",
    ),
    Case(
        "a snapshot with a batch that is not a list",
        "researcher",
        "post",
        SNAP,
        {"batch": "world"},
        400,
        "batch",
        postgres=True,
    ),
    Case(
        "a snapshot with k as a word",
        "researcher",
        "post",
        SNAP,
        {"k": "three"},
        400,
        "k:",
        postgres=True,
    ),
    Case(
        "a snapshot with a split over 1",
        "researcher",
        "post",
        SNAP,
        {"split_test": 5},
        400,
        "split_test",
        postgres=True,
    ),
    Case(
        "a snapshot named with NUL",
        "researcher",
        "post",
        SNAP,
        {"name": "a\u0000"},
        400,
        "NUL",
        postgres=True,
    ),
    Case(
        "a snapshot with an unknown field",
        "researcher",
        "post",
        SNAP,
        {"name": "x", "annotator__password": "x"},
        400,
        "unknown fields: annotator__password",
        postgres=True,
    ),
    Case(
        "a snapshot from a deep body",
        "researcher",
        "post",
        SNAP,
        nested(5000),
        400,
        "nested deeper than",
    ),
    # -- the reward model's scoring ------------------------------------------------------------
    Case(
        "score a number",
        "researcher",
        "post",
        SCORE,
        {"prompt": ["q"], "completions": ["a"]},
        400,
        "prompt",
    ),
    Case(
        "score a string of completions",
        "researcher",
        "post",
        SCORE,
        {"prompt": "q", "completions": "a"},
        400,
        "completions",
    ),
    Case(
        "score too many completions",
        "researcher",
        "post",
        SCORE,
        {"prompt": "q", "completions": ["a"] * 33},
        400,
        "completions",
    ),
    Case(
        "score a made-up role",
        "researcher",
        "post",
        SCORE,
        {"messages": [{"role": "root", "content": "q"}], "completions": ["a"]},
        400,
        "role",
    ),
    Case(
        "score with an unknown field",
        "researcher",
        "post",
        SCORE,
        {"prompt": "q", "completions": ["a"], "model_path": "/etc/passwd"},
        400,
        "unknown fields: model_path",
    ),
    Case(
        "score NUL",
        "researcher",
        "post",
        SCORE,
        {"prompt": "q\u0000", "completions": ["a"]},
        400,
        "NUL",
    ),
    Case("score a list body", "researcher", "post", SCORE, [1], 400, "json object"),
]


@pytest.fixture(scope="module")
def world(django_db_setup: None, django_db_blocker: Any) -> Iterator[World]:
    with shared_world(django_db_blocker) as world:
        yield world


def _send(case: Case, world: World) -> Any:
    client = token_client(world.users[case.who])
    url = case.url.format(**world.ids())
    body = case.body(world) if callable(case.body) else case.body
    if body is not None and not isinstance(body, bytes | str):
        body = json.dumps(body)
    if case.method == "get":
        return client.get(url)
    return getattr(client, case.method)(url, body, content_type=case.content_type)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_request_is_refused_clearly_and_changes_nothing(case: Case, world: World) -> None:
    # given
    if case.postgres:
        pytest.importorskip("psycopg")
        from django.db import connection

        if connection.vendor != "postgresql":
            pytest.skip("needs PostgreSQL")
    before = row_counts()

    # when
    response = _send(case, world)

    # then
    assert response.status_code == case.status, response.content[:500]
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    detail = response.json()["detail"]
    assert isinstance(detail, str)
    assert case.detail.lower() in detail.lower(), detail
    assert row_counts() == before


def test_the_parser_bounds_a_body_that_came_without_a_length(settings: Any) -> None:
    # A server in front may pass a chunked body on without Content-Length, which the
    # middleware's check cannot see; the parser reads at most the limit and one byte more.
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = io.BytesIO(b'{"rationale": "' + b"x" * 5000 + b'"}')

    with pytest.raises(BodyTooLarge) as refused:
        StrictJSONParser().parse(body)

    assert refused.value.status_code == 413
    assert body.tell() == 1001


@pytest.mark.parametrize(
    ("header", "detail"),
    [
        ("Token", "no credentials provided"),
        ("Token a b", "should not contain spaces"),
        ("Token \x00\x01", "invalid token"),
        ("Token " + "f" * 10_000, "invalid token"),
        ("Token ' OR '1'='1", "invalid token"),
        ("Bearer abc", "credentials were not provided"),
        ("Basic YWRtaW46YWRtaW4=", "credentials were not provided"),  # admin:admin
    ],
    ids=["empty", "spaces", "control characters", "huge", "SQL", "bearer", "basic admin:admin"],
)
def test_a_bad_authorization_header_is_a_401_that_says_why(
    header: str, detail: str, world: World
) -> None:
    client = APIClient(raise_request_exception=False)
    before = row_counts()

    response = client.get("/api/v1/assignments/next/", HTTP_AUTHORIZATION=header)

    assert response.status_code == 401
    assert detail in response.json()["detail"].lower()
    assert row_counts() == before
