"""A small populated installation for the hardening tests: one user of each role, annotators
holding live, stale, submitted and someone else's leases, a ranked prompt and a snapshot.

`row_counts()` is the state a hostile request must leave exactly as it found it.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.leases import assignment_next, assignment_submit
from annotation.models import (
    Assignment,
    Comparison,
    Completion,
    DatasetSnapshot,
    Prompt,
    PromptBatch,
    Ranking,
)
from annotation.roles import Role, user_set_role
from tests.factories import BatchFactory, PromptFactory, UserFactory, completion_ids
from training.models import ModelVersion, TrainingRun

PASSWORD = "a-long-test-password"


@dataclass
class World:
    users: dict[str, User]
    mine: Assignment  # alice's live lease
    theirs: Assignment  # bob's live lease
    stale: Assignment  # carol's lease, past its end
    done: Assignment  # alice's submitted assignment
    mine_ids: list[int]  # the completions of alice's leased prompt, in id order
    foreign_id: int  # a completion of another prompt
    snapshot: DatasetSnapshot | None

    def ids(self) -> dict[str, int]:
        return {
            "mine": self.mine.pk,
            "theirs": self.theirs.pk,
            "stale": self.stale.pk,
            "done": self.done.pk,
            "snapshot": self.snapshot.pk if self.snapshot else 0,
            "ranking": self.done.ranking_id or 0,
            "batch": self.mine.prompt.batch_id,
        }


def make_user(name: str, role: Role | None) -> User:
    user = UserFactory(username=name)
    if role is not None:
        user_set_role(user=user, role=role)
    return user


def build_world() -> World:
    users = {
        "alice": make_user("alice", Role.ANNOTATOR),
        "bob": make_user("bob", Role.ANNOTATOR),
        "carol": make_user("carol", Role.ANNOTATOR),
        "researcher": make_user("rita", Role.RESEARCHER),
        "admin": make_user("adam", Role.ADMIN),
        "nobody": make_user("nora", None),  # signed in, no role
    }
    for user in users.values():
        Token.objects.get_or_create(user=user)
    batch = BatchFactory(name="world", k_min=3, k_max=5, overlap=3, guidelines="Be kind.")
    for _ in range(4):
        PromptFactory(batch=batch, k=4)
    first = assignment_next(annotator=users["alice"])
    assert first is not None
    assignment_submit(
        annotator=users["alice"],
        assignment_id=first.pk,
        groups=[[c] for c in first.display_order],
        rationale="the first is clearest",
    )
    done = Assignment.objects.get(pk=first.pk)
    mine = assignment_next(annotator=users["alice"])
    theirs = assignment_next(annotator=users["bob"])
    stale = assignment_next(annotator=users["carol"])
    assert mine is not None
    assert theirs is not None
    assert stale is not None
    Assignment.objects.filter(pk=stale.pk).update(
        lease_expires_at=timezone.now() - timedelta(minutes=1)
    )
    mine_ids = completion_ids(mine.prompt)
    foreign_id = Completion.objects.exclude(prompt=mine.prompt).values_list("id", flat=True)[0]
    snapshot = None
    if connection.vendor == "postgresql":
        from annotation.snapshots import snapshot_create

        snapshot = snapshot_create(name="frozen", created_by=users["researcher"])
    return World(
        users=users,
        mine=mine,
        theirs=theirs,
        stale=stale,
        done=done,
        mine_ids=mine_ids,
        foreign_id=foreign_id,
        snapshot=snapshot,
    )


@contextmanager
def shared_world(django_db_blocker: Any) -> Iterator[World]:
    """One World for a whole module, inside a transaction rolled back at its end. Each test's
    own transaction (pytest-django's `db`) is a savepoint within it, so whatever a test writes
    is gone before the next: tables of hostile requests then cost a request each, not a World
    each."""
    fast = override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"])
    with django_db_blocker.unblock(), fast, transaction.atomic():
        yield build_world()
        transaction.set_rollback(True)


def token_client(user: User) -> APIClient:
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def row_counts() -> dict[str, Any]:
    """Row counts of every table a request could write, and the assignments' states."""
    return {
        "batches": PromptBatch.objects.count(),
        "prompts": Prompt.objects.count(),
        "completions": Completion.objects.count(),
        "rankings": Ranking.objects.count(),
        "comparisons": Comparison.objects.count(),
        "snapshots": DatasetSnapshot.objects.count(),
        "users": User.objects.count(),
        "tokens": Token.objects.count(),
        "runs": TrainingRun.objects.count(),
        "models": ModelVersion.objects.count(),
        "assignments": sorted(
            Assignment.objects.values_list("id", "status", "ranking_id", "lease_expires_at")
        ),
        "prompt_counters": sorted(
            Prompt.objects.values_list("id", "human_ranking_count", "lease_count")
        ),
    }
