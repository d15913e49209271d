"""Seeded random input to every API endpoint that takes any: whatever arrives, the answer is
never a 5xx, always JSON with a `detail` when it is a 4xx, and a refused request writes
nothing. The seed is fixed, so a failure reproduces."""

import random
from typing import Any

import pytest

from tests.hardening.world import World, build_world, row_counts, token_client

pytestmark = pytest.mark.django_db

ATOMS: list[Any] = [
    0, -1, 1, 2**31, 2**63, 2**64 + 1, -(2**63) - 1, 1.5, -0.0, 1e308, True, False, None,
    "", "0", "1", "x" * 300, "\u202e\u0301", "😀", "'; DROP TABLE x; --", "<script>", [], {},
    "0001-01-01", "9999-12-31T23:59:59+14:00", "2026-13-45", "-1e999", "NaN", "inf",
]  # fmt: skip
FIELDS = {
    "/api/v1/assignments/{mine}/ranking/": [
        "order", "ranking", "flags", "rationale", "duration_ms", "not_rankable", "extra",
    ],
    "/api/v1/assignments/{mine}/skip/": ["reason", "extra"],
    "/api/v1/snapshots/create/": [
        "name", "batch", "created_after", "created_before", "annotator", "origin", "k",
        "split_test", "seed",
    ],
    "/api/v1/reward/score/": ["prompt", "messages", "completions"],
}  # fmt: skip
QUERIES = {
    "/api/v1/rankings/": ["batch", "created_after", "created_before", "annotator", "origin", "k"],
    "/api/v1/prompts/": ["batch", "k", "page_size", "cursor"],
    "/api/v1/exports/preference.csv": ["pairs", "ties", "style", "split_test", "seed", "split",
                                        "snapshot", "k"],
}  # fmt: skip


def value(rng: random.Random, depth: int = 0, ids: list[int] | None = None) -> Any:
    roll = rng.random()
    if ids and roll < 0.2:
        return rng.choice(ids)
    if depth < 3 and roll < 0.45:
        return [value(rng, depth + 1, ids) for _ in range(rng.randint(0, 5))]
    if depth < 3 and roll < 0.55:
        return {str(value(rng, 3)): value(rng, depth + 1, ids) for _ in range(rng.randint(0, 3))}
    return rng.choice(ATOMS)


@pytest.fixture
def world() -> World:
    return build_world()


def test_random_bodies_never_break_an_endpoint(world: World) -> None:
    rng = random.Random(10)
    clients = {"alice": token_client(world.users["alice"]),
               "researcher": token_client(world.users["researcher"])}  # fmt: skip
    ids = [*world.mine_ids, world.foreign_id]
    problems = []
    for path, fields in FIELDS.items():
        client = clients["alice" if "assignments" in path else "researcher"]
        url = path.format(**world.ids())
        for _ in range(60):
            body = {
                name: value(rng, ids=ids)
                for name in rng.sample(fields, rng.randint(0, min(3, len(fields))))
            }
            before = row_counts()
            response = client.post(url, body, format="json")
            if response.status_code >= 500:
                problems.append(f"{url} {body!r}: {response.status_code}")
            elif response.status_code >= 400:
                if not isinstance(response.json().get("detail"), str):
                    problems.append(f"{url} {body!r}: no detail")
                if row_counts() != before:
                    problems.append(f"{url} {body!r}: refused but wrote")
    assert not problems, "\n".join(problems[:20])


def test_random_query_strings_never_break_an_endpoint(world: World) -> None:
    rng = random.Random(11)
    client = token_client(world.users["researcher"])
    problems = []
    for path, names in QUERIES.items():
        for _ in range(40):
            query = [(name, str(value(rng, 3))) for name in rng.sample(names, rng.randint(1, 3))]
            response = client.get(path, query)
            if response.status_code >= 500:
                problems.append(f"{path} {query!r}: {response.status_code}")
            elif response.status_code >= 400 and not response.json().get("detail"):
                problems.append(f"{path} {query!r}: no detail")
    assert not problems, "\n".join(problems[:20])
