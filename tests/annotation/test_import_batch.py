"""python manage.py import_batch: real files in, batches out, all or nothing."""

import json
from io import StringIO
from math import comb
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Comparison, Completion, Prompt, PromptBatch, Ranking

pytestmark = pytest.mark.django_db

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"the shared data sets are not at {SHARED_DATA}"
)


def _write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _import(*args: object) -> str:
    out = StringIO()
    call_command("import_batch", *[str(a) for a in args], "--no-progress", stdout=out, stderr=out)
    return out.getvalue()


def _counts() -> tuple[int, int, int, int, int]:
    return (
        PromptBatch.objects.count(),
        Prompt.objects.count(),
        Completion.objects.count(),
        Ranking.objects.count(),
        Comparison.objects.count(),
    )


@needs_shared_data
def test_the_oasst_rankings_import_completely() -> None:
    output = _import(SHARED_DATA / "oasst1_en_rankings.jsonl", "--name", "oasst", "--k-min", "2")

    assert _counts() == (1, 608, 1711, 608, 1719)
    assert "608 prompts, 1711 completions, 608 rankings, 1719 comparisons" in output
    multi_turn = Prompt.objects.filter(external_id="e0cf4fa2-e944-44fb-b502-11f155062092").get()
    assert multi_turn.messages[0]["role"] == "user"
    assert multi_turn.metadata["lang"] == "en"
    assert Ranking.objects.filter(origin=Ranking.Origin.IMPORTED, annotator=None).count() == 608


@needs_shared_data
def test_the_hh_rlhf_pairs_import_as_k2_rankings() -> None:
    _import(
        SHARED_DATA / "hh_rlhf_helpful_base_test.jsonl",
        SHARED_DATA / "hh_rlhf_harmless_base_test.jsonl",
        "--name",
        "hh",
        "--k-min",
        "2",
    )

    assert Ranking.objects.filter(k=2).count() == 4642
    assert Comparison.objects.count() == 4642
    # chosen is always the winner
    first = Prompt.objects.get(external_id="helpful-base/test/0")
    chosen, _rejected = first.completions.order_by("position")
    assert Comparison.objects.get(prompt=first).winner_id == chosen.pk
    assert first.messages == [
        {
            "role": "user",
            "content": "Do you know why turkeys became the official food of thanksgiving?",
        }
    ]


def test_a_file_with_one_bad_line_writes_nothing_and_names_it(tmp_path: Path) -> None:
    good = {
        "prompt": "Name a colour.",
        "completions": ["Red", "Blue", "Green", "Teal"],
        "ranking": [1, 0, 2, 3],
    }
    path = _write_jsonl(
        tmp_path / "batch.jsonl",
        [
            good,
            {**good, "id": "b"},
            {"prompt": "Bad", "completions": ["a", "b", "c", "d"], "ranking": [0, 1, 1, 2]},
            {**good, "id": "c"},
        ],
    )

    out = StringIO()
    with pytest.raises(CommandError, match="1 bad line") as excinfo:
        call_command(
            "import_batch", str(path), "--name", "colours", "--no-progress", stdout=out, stderr=out
        )

    assert "batch.jsonl:3:" in out.getvalue()
    assert "repeated: 1; missing: 3" in out.getvalue()
    assert "nothing was written" in str(excinfo.value)
    assert _counts() == (0, 0, 0, 0, 0)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"completions": ["a", "b", "c", "d"]}', 'needs "prompt"'),
        ('{"prompt": "p", "completions": ["a"]}', "at least 2 completions"),
        ('{"prompt": "p", "completions": ["a", "", "c", "d"]}', "completion 1 is empty"),
        ('{"prompt": "p", "completions": ["a", 5, "c", "d"]}', "completion 1 must be a string"),
        (
            '{"prompt": "p", "completions": ["a", "b", "c", "d"], "ranking": [0, 1, 2, 7]}',
            "not completions",
        ),
        (
            '{"prompt": "p", "completions": ["a", "b", "c"]}',
            "3 completions, outside the batch's range 4..9",
        ),
        (
            '{"messages": [{"role": "bot", "content": "x"}], "completions": ["a", "b", "c", "d"]}',
            "role 'bot'",
        ),
        ('{"prompt": "p", "chosen": "a"}', 'a pair needs "rejected"'),
        (
            '{"prompt": "p", "completions": ["a", "b", "c", "d"], "id": ""}',
            '"id" must be a non-empty string',
        ),
    ],
)
def test_each_kind_of_bad_line_is_explained(tmp_path: Path, line: str, reason: str) -> None:
    path = _write_jsonl(tmp_path / "one.jsonl", [line])

    out = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "import_batch", str(path), "--name", "x", "--no-progress", stdout=out, stderr=out
        )

    assert "one.jsonl:1: " in out.getvalue()
    assert reason in out.getvalue()
    assert _counts() == (0, 0, 0, 0, 0)


def test_invalid_utf8_is_a_bad_line_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9", "completions": ["a", "b", "c", "d"]}\n')

    out = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "import_batch", str(path), "--name", "x", "--no-progress", stdout=out, stderr=out
        )

    assert "latin1.jsonl:1: not valid UTF-8" in out.getvalue()


def test_ties_sources_and_prompts_without_ranking(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {
                "id": "tie",
                "prompt": "Which is better?",
                "completions": [{"text": "A", "source": "gpt2"}, "B", "C", "D", "E"],
                "ranking": [[2], [0, 1], [3], [4]],
                "metadata": {"topic": "test"},
            },
            {"id": "open", "prompt": "Still to be ranked", "completions": ["w", "x", "y", "z"]},
        ],
    )

    _import(path, "--name", "mixed", "--publish")

    batch = PromptBatch.objects.get(name="mixed")
    assert batch.status == PromptBatch.Status.PUBLISHED
    tie_prompt = Prompt.objects.get(external_id="tie")
    assert tie_prompt.metadata == {"topic": "test"}
    assert tie_prompt.completions.get(position=0).source == "gpt2"
    ranking = Ranking.objects.get(prompt=tie_prompt)
    assert Comparison.objects.filter(ranking=ranking).count() == comb(5, 2)
    assert Comparison.objects.filter(ranking=ranking, is_tie=True).count() == 1
    assert not Ranking.objects.filter(prompt__external_id="open").exists()
    assert Prompt.objects.get(external_id="open").completions.count() == 4


def test_a_duplicate_id_in_the_file_is_a_bad_line(tmp_path: Path) -> None:
    row = {"id": "same", "prompt": "p", "completions": ["a", "b", "c", "d"]}
    path = _write_jsonl(tmp_path / "dup.jsonl", [row, {**row, "prompt": "q"}])

    out = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "import_batch", str(path), "--name", "x", "--no-progress", stdout=out, stderr=out
        )

    assert "dup.jsonl:2: duplicate id 'same' (first on dup.jsonl:1)" in out.getvalue()


def test_importing_again_needs_append_and_then_adds_nothing(tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "b.jsonl",
        [
            {"prompt": f"p{i}", "completions": ["a", "b", "c", "d"], "ranking": [0, 1, 2, 3]}
            for i in range(3)
        ],
    )
    _import(path, "--name", "b")
    before = _counts()

    with pytest.raises(CommandError, match="already exists; pass --append"):
        _import(path, "--name", "b")
    output = _import(path, "--name", "b", "--append")

    assert _counts() == before == (1, 3, 12, 3, 18)
    assert "3 already present" in output


def test_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="no such file"):
        _import(tmp_path / "nope.jsonl", "--name", "x")


def test_a_csv_file_groups_rows_by_prompt_id_with_ranks_and_ties(tmp_path: Path) -> None:
    path = tmp_path / "batch.csv"
    path.write_text(
        "prompt_id,prompt,completion,source,rank\n"
        "q1,Say hi,Hello,gpt2,2\n"
        'q1,Say hi,"Hi, there",human,1\n'
        "q1,Say hi,Hey,gpt2,2\n"
        "q2,Say bye,Bye,,\n"
        "q2,Say bye,Farewell,,\n"
    )

    _import(path, "--name", "csv", "--k-min", "2")

    q1 = Prompt.objects.get(external_id="q1")
    hello, hi_there, hey = q1.completions.order_by("position")
    assert hi_there.text == "Hi, there"
    assert hello.source == "gpt2"
    assert Ranking.objects.get(prompt=q1).groups == [[hi_there.pk], [hello.pk, hey.pk]]
    assert Comparison.objects.filter(prompt=q1).count() == 3
    assert Comparison.objects.filter(prompt=q1, is_tie=True).count() == 1
    assert Prompt.objects.get(external_id="q2").completions.count() == 2
    assert not Ranking.objects.filter(prompt__external_id="q2").exists()


def test_a_csv_prompt_with_partial_ranks_is_refused_on_its_first_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("prompt_id,prompt,completion,rank\nok,P,a,\nok,P,b,\nx,Q,a,1\nx,Q,b,\n")

    out = StringIO()
    with pytest.raises(CommandError):
        call_command(
            "import_batch",
            str(path),
            "--name",
            "c",
            "--k-min",
            "2",
            "--no-progress",
            stdout=out,
            stderr=out,
        )

    assert "bad.csv:4: prompt 'x': every row needs a rank" in out.getvalue()
    assert _counts() == (0, 0, 0, 0, 0)
