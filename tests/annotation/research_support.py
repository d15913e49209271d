"""Helpers shared by the research API, export and snapshot tests."""

import json
from io import StringIO
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from django.core.management import call_command
from django.http import StreamingHttpResponse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotation.roles import Role, user_set_role
from annotation.services import ranking_submit
from tests.factories import PromptFactory, UserFactory, completion_ids

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
OASST = SHARED_DATA / "oasst1_en_rankings.jsonl"


def client_for(role: Role, username: str | None = None) -> APIClient:
    """A client that authenticates like a script does: with the user's API token."""
    user = UserFactory(username=username or f"{role.value}-user")
    user_set_role(user=user, role=role)
    token, _ = Token.objects.get_or_create(user=user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def body(response: Any) -> bytes:
    assert isinstance(response, StreamingHttpResponse), response
    return b"".join(response.streaming_content)


def jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines()]


def parquet(data: bytes) -> pa.Table:
    return pq.read_table(pa.BufferReader(data))


def import_file(path: Path, name: str) -> str:
    out = StringIO()
    call_command(
        "import_batch", str(path), "--name", name, "--k-min", "2", "--no-progress", stdout=out
    )
    return out.getvalue()


def ranked_prompts(batch: Any, annotators: list[Any], *, prompts: int = 3, k: int = 4) -> None:
    """`prompts` prompts of K completions, each ranked by every annotator: strict orders that
    differ by annotator and, for K >= 4, a tie (second and third place) from the first one."""
    for number in range(prompts):
        prompt = PromptFactory(batch=batch, k=k, text=f"Prompt {number} of {batch.name}")
        ids = completion_ids(prompt)
        for index, annotator in enumerate(annotators):
            order = ids[index % k :] + ids[: index % k]
            groups: list[list[int]] = [[item] for item in order]
            if index == 0 and k >= 4:
                groups = [groups[0], groups[1] + groups[2], *groups[3:]]
            ranking_submit(
                prompt=prompt,
                groups=groups,
                annotator=annotator,
                display_order=list(reversed(ids)),
                duration_ms=1000 + number,
                rationale=f"because {number}",
                flags={ids[-1]: ["unsafe"]},
            )
