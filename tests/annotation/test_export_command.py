"""python manage.py export_dataset: the same bytes as the API, split files, snapshots and
clear errors for options that make no sense."""

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.models import DatasetSnapshot
from annotation.roles import Role
from tests.annotation.research_support import (
    OASST,
    body,
    client_for,
    import_file,
    jsonl,
    ranked_prompts,
)
from tests.factories import BatchFactory, UserFactory

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres")]


def _export(*args: object) -> str:
    out = StringIO()
    call_command("export_dataset", *[str(a) for a in args], stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.skipif(not OASST.is_file(), reason=f"the shared oasst data set is not at {OASST}")
def test_oasst_comparisons_match_the_api_byte_for_byte(tmp_path: Path) -> None:
    import_file(OASST, "oasst")
    target = tmp_path / "comparisons.jsonl"

    output = _export("--kind", "comparisons", "--format", "jsonl", "--output", target)

    api = body(client_for(Role.RESEARCHER).get("/api/v1/exports/comparisons.jsonl"))
    assert target.read_bytes() == api
    assert len(target.read_bytes().splitlines()) == 1719
    assert f"{target}: 1719 rows" in output


def test_split_test_writes_a_train_and_a_test_file(tmp_path: Path) -> None:
    ranked_prompts(BatchFactory(name="b"), [UserFactory()], prompts=20, k=3)
    target = tmp_path / "pairs.jsonl"

    _export(
        *("--kind", "preference", "--format", "jsonl", "--output", target),
        *("--split-test", "0.3", "--seed", "5", "--pairs", "adjacent"),
    )

    train = jsonl((tmp_path / "pairs.train.jsonl").read_bytes())
    test = jsonl((tmp_path / "pairs.test.jsonl").read_bytes())
    assert not target.exists()
    assert len(train) + len(test) == 20 * 2
    assert {r["prompt_id"] for r in train}.isdisjoint({r["prompt_id"] for r in test})


def test_freeze_then_export_the_snapshot_again(tmp_path: Path) -> None:
    batch = BatchFactory(name="b")
    ranked_prompts(batch, [UserFactory()], prompts=3)
    first, second = tmp_path / "first.parquet", tmp_path / "second.parquet"

    output = _export(
        *("--kind", "rankings", "--format", "parquet", "--output", first, "--freeze", "rm-v1")
    )
    snapshot = DatasetSnapshot.objects.get(name="rm-v1")
    ranked_prompts(batch, [UserFactory()], prompts=1)
    _export(
        "--kind", "rankings", "--format", "parquet", "--output", second, "--snapshot", snapshot.pk
    )

    assert f"snapshot {snapshot.pk}: 3 rankings, sha256 {snapshot.content_sha256}" in output
    assert first.read_bytes() == second.read_bytes()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--kind", "comparisons", "--pairs", "adjacent"],
            "--pairs: pairs applies to kind=preference",
        ),
        (["--kind", "rankings", "--ties", "drop"], "--ties: ties applies to comparisons"),
        (["--kind", "rankings", "--snapshot", "999"], "--snapshot: no snapshot 999"),
        (["--kind", "rankings", "--snapshot", "1", "--batch", "b"], "--batch: a snapshot is"),
    ],
)
def test_bad_options_are_named(tmp_path: Path, args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        _export(*args, "--format", "jsonl", "--output", tmp_path / "out.jsonl")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split-test", "2"], "argument --split-test: 2 is not between 0 and 1"),
        (["--created-after", "soon"], "argument --created-after: 'soon' is not an ISO 8601"),
        (["--format", "xlsx"], "argument --format: invalid choice: 'xlsx'"),
    ],
)
def test_malformed_values_are_argument_errors(
    tmp_path: Path, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=re.escape(message)):
        _export("--kind", "rankings", "--format", "jsonl", "--output", tmp_path / "o", *args)


def test_a_missing_output_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match=r"--output: the folder .* does not exist"):
        _export("--kind", "rankings", "--format", "csv", "--output", tmp_path / "no" / "x.csv")
