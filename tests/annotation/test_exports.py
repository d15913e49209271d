"""Streamed exports through GET /api/v1/exports/{kind}.{format}: counts, shapes, formats,
pseudonyms, splits and the round trip through import_batch."""

import csv
import io
from math import comb
from pathlib import Path

import pytest
from django.test import override_settings

from annotation.export_formats import COLUMNS
from annotation.models import Completion, Prompt, Ranking
from annotation.pseudonyms import annotator_pseudonym
from annotation.roles import Role
from annotation.services import ranking_submit
from tests.annotation.research_support import (
    OASST,
    body,
    client_for,
    import_file,
    jsonl,
    parquet,
    ranked_prompts,
)
from tests.factories import BatchFactory, PromptFactory, UserFactory, completion_ids

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("postgres")]
needs_oasst = pytest.mark.skipif(
    not OASST.is_file(), reason=f"the shared oasst data set is not at {OASST}"
)

# Completions per prompt in the oasst file (shared/data/README.md).
OASST_K = {2: 187, 3: 372, 4: 37, 5: 4, 6: 6, 8: 1, 9: 1}


def _get(query: str) -> bytes:
    response = client_for(Role.RESEARCHER, "reader").get(f"/api/v1/exports/{query}")
    assert response.status_code == 200, response.content
    return body(response)


@needs_oasst
def test_oasst_comparisons_preference_pairs_and_rankings_counts() -> None:
    import_file(OASST, "oasst")

    comparisons = jsonl(_get("comparisons.jsonl"))
    adjacent = jsonl(_get("preference.jsonl?pairs=adjacent"))
    best_vs_rest = jsonl(_get("preference.jsonl?pairs=best_vs_rest"))
    every_pair = jsonl(_get("preference.jsonl"))
    rankings = jsonl(_get("rankings.jsonl"))

    assert len(comparisons) == 1719 == sum(n * comb(k, 2) for k, n in OASST_K.items())
    # A strict ranking of K has K - 1 adjacent pairs, and K - 1 pairs of the best vs the rest.
    assert len(adjacent) == 1103 == sum(n * (k - 1) for k, n in OASST_K.items())
    assert len(best_vs_rest) == 1103
    assert len(every_pair) == 1719
    assert len(rankings) == Ranking.objects.count() == 608
    assert {row["rank_gap"] for row in adjacent} == {1}
    first = comparisons[0]
    assert list(first) == COLUMNS["comparisons"]
    assert first["winner_text"] == Completion.objects.get(pk=first["winner_id"]).text
    assert first["batch"] == "oasst"
    assert first["annotator"] is None  # imported rankings have no annotator


@needs_oasst
def test_an_oasst_export_reimports_to_the_same_rankings(tmp_path: Path) -> None:
    # given the oasst import and its export
    import_file(OASST, "oasst")
    first = _get("rankings.jsonl?batch=oasst")
    exported = tmp_path / "rankings.jsonl"
    exported.write_bytes(first)

    # when the export is imported into a new batch and exported again
    output = import_file(exported, "oasst-again")
    second = _get("rankings.jsonl?batch=oasst-again")

    # then the rankings are the same, apart from where and when they were stored
    assert "608 prompts, 1711 completions, 608 rankings, 1719 comparisons" in output
    assert _without_storage(jsonl(second)) == _without_storage(jsonl(first))
    assert Ranking.objects.filter(prompt__batch__name="oasst-again").count() == 608


def test_human_rankings_reimport_with_every_lossless_field(tmp_path: Path) -> None:
    # given two annotators' rankings (ties, flags, display order, duration, rationale) and a
    # not-rankable one
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    batch = BatchFactory(name="human")
    ranked_prompts(batch, [alice, bob])
    prompt = PromptFactory(batch=batch, k=3)
    ranking_submit(prompt=prompt, groups=[], annotator=alice, not_rankable=True)
    first = _get("rankings.jsonl?batch=human")
    exported = tmp_path / "human.jsonl"
    exported.write_bytes(first)

    # when
    import_file(exported, "human-again")
    second = jsonl(_get("rankings.jsonl?batch=human-again"))

    # then every ranking came back, as imported rankings named by their annotator's pseudonym
    assert len(second) == Ranking.objects.filter(prompt__batch=batch).count() == 7
    lossless = ["id", "prompt", "messages", "completions", "ranking", "not_rankable"]
    lossless += ["flags", "rationale", "display_order", "duration_ms", "guidelines_version"]
    assert [{k: r[k] for k in lossless} for r in second] == [
        {k: r[k] for k in lossless} for r in jsonl(first)
    ]
    assert {r["ranking_external_id"] for r in second} == {
        annotator_pseudonym(alice.pk),
        annotator_pseudonym(bob.pk),
    }
    assert {r["origin"] for r in second} == {"imported"}
    not_rankable = Ranking.objects.get(prompt__batch__name="human-again", not_rankable=True)
    assert not_rankable.comparisons.count() == 0


def test_ties_are_kept_in_comparisons_and_dropped_from_preference_by_default() -> None:
    ranked_prompts(BatchFactory(name="b"), [UserFactory(), UserFactory()], prompts=2, k=4)
    # 4 rankings of K = 4, each 6 pairs; the first annotator's two have one tie each

    assert len(jsonl(_get("comparisons.jsonl"))) == 4 * 6
    assert len(jsonl(_get("comparisons.jsonl?ties=drop"))) == 4 * 6 - 2
    assert len(jsonl(_get("preference.jsonl"))) == 4 * 6 - 2
    assert len(jsonl(_get("preference.jsonl?ties=keep"))) == 4 * 6
    # the tied rankings have groups [a], [b, c], [d]: adjacent pairs a-b, a-c, b-d, c-d
    assert len(jsonl(_get("preference.jsonl?pairs=adjacent"))) == 2 * 4 + 2 * 3
    assert len(jsonl(_get("preference.jsonl?pairs=best_vs_rest"))) == 4 * 3


def test_conversational_preference_is_lists_of_messages() -> None:
    ranked_prompts(BatchFactory(name="b"), [UserFactory()], prompts=1, k=2)

    standard = jsonl(_get("preference.jsonl"))[0]
    chat = jsonl(_get("preference.jsonl?style=conversational"))[0]

    prompt = Prompt.objects.get()
    assert standard["prompt"] == prompt.text
    assert isinstance(standard["chosen"], str)
    assert chat["prompt"] == prompt.messages
    assert chat["chosen"] == [{"role": "assistant", "content": standard["chosen"]}]
    assert chat["rejected"] == [{"role": "assistant", "content": standard["rejected"]}]


@pytest.mark.parametrize("kind", ["rankings", "comparisons", "preference"])
def test_parquet_has_the_documented_columns(kind: str) -> None:
    ranked_prompts(BatchFactory(name="b"), [UserFactory()], prompts=2)

    table = parquet(_get(f"{kind}.parquet"))
    as_jsonl = jsonl(_get(f"{kind}.jsonl"))

    key = "preference_standard" if kind == "preference" else kind
    assert table.column_names == COLUMNS[key]
    assert table.num_rows == len(as_jsonl)
    assert table.column("annotator").to_pylist()[0] == as_jsonl[0]["annotator"]
    if kind == "rankings":
        assert table.column("ranking").to_pylist() == [row["ranking"] for row in as_jsonl]


def test_csv_cells_that_a_spreadsheet_would_evaluate_are_neutralised() -> None:
    prompt = PromptFactory(batch=BatchFactory(name="b"), k=2, text='=HYPERLINK("http://evil")')
    winner, loser = completion_ids(prompt)
    Completion.objects.filter(pk=winner).update(text="+1 great")
    Completion.objects.filter(pk=loser).update(text="@SUM(A1)")
    ranking_submit(prompt=prompt, groups=[winner, loser], annotator=UserFactory())

    rows = list(csv.DictReader(io.StringIO(_get("preference.csv").decode())))
    comparison = next(csv.DictReader(io.StringIO(_get("comparisons.csv").decode())))

    assert rows[0]["prompt"] == '\'=HYPERLINK("http://evil")'
    assert rows[0]["chosen"] == "'+1 great"
    assert rows[0]["rejected"] == "'@SUM(A1)"
    assert comparison["winner_text"] == "'+1 great"
    # JSONL and Parquet carry the text as it is
    assert jsonl(_get("preference.jsonl"))[0]["prompt"] == '=HYPERLINK("http://evil")'


def test_pseudonyms_are_keyed_and_no_user_id_or_name_leaks() -> None:
    alice = UserFactory(username="alice-the-annotator")
    ranked_prompts(BatchFactory(name="b"), [alice], prompts=1)

    with override_settings(EXPORT_PSEUDONYM_KEY="key-one"):
        one = jsonl(_get("comparisons.jsonl"))[0]["annotator"]
        again = jsonl(_get("comparisons.jsonl"))[0]["annotator"]
    with override_settings(EXPORT_PSEUDONYM_KEY="key-two"):
        two = jsonl(_get("rankings.jsonl"))[0]["annotator"]

    assert one == again != two
    assert one.startswith("ann-")
    assert str(alice.pk) not in one
    assert b"alice-the-annotator" not in _get("rankings.jsonl") + _get("comparisons.csv")


def test_a_split_is_by_prompt_disjoint_and_reproducible() -> None:
    annotators = [UserFactory(), UserFactory(), UserFactory()]
    ranked_prompts(BatchFactory(name="b"), annotators, prompts=40, k=3)

    train = jsonl(_get("rankings.jsonl?split_test=0.25&seed=7&split=train"))
    test = jsonl(_get("rankings.jsonl?split_test=0.25&seed=7&split=test"))
    test_again = _get("rankings.jsonl?split_test=0.25&seed=7&split=test")
    other_seed = jsonl(_get("rankings.jsonl?split_test=0.25&seed=8&split=test"))
    test_pairs = jsonl(_get("preference.jsonl?split_test=0.25&seed=7&split=test"))

    train_prompts = {row["prompt_id"] for row in train}
    test_prompts = {row["prompt_id"] for row in test}
    assert not train_prompts & test_prompts
    assert len(train) + len(test) == Ranking.objects.count() == 120
    assert 0 < len(test_prompts) < 20
    assert jsonl(test_again) == test
    assert {row["prompt_id"] for row in other_seed} != test_prompts
    assert {row["prompt_id"] for row in test_pairs} == test_prompts


def test_the_export_is_streamed_with_its_media_type_and_file_name() -> None:
    ranked_prompts(BatchFactory(name="b"), [UserFactory()], prompts=1)
    client = client_for(Role.RESEARCHER)

    response = client.get("/api/v1/exports/comparisons.jsonl", HTTP_ACCEPT="application/x-ndjson")
    csv_response = client.get("/api/v1/exports/preference.csv?split_test=0.5&split=test")

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("application/x-ndjson")
    assert 'filename="comparisons.jsonl"' in response["Content-Disposition"]
    assert 'filename="preference.test.csv"' in csv_response["Content-Disposition"]


@pytest.mark.parametrize(
    ("url", "parameter"),
    [
        ("comparisons.jsonl?pairs=adjacent", "pairs"),
        ("rankings.jsonl?ties=drop", "ties"),
        ("rankings.jsonl?split_test=0.2", "split"),
        ("rankings.jsonl?split_test=1.5&split=test", "split_test"),
        ("preference.jsonl?pairs=some", "pairs"),
        ("rankings.jsonl?snapshot=999", "snapshot"),
    ],
)
def test_options_that_do_not_fit_are_a_400_naming_them(url: str, parameter: str) -> None:
    response = client_for(Role.RESEARCHER).get(f"/api/v1/exports/{url}")

    assert response.status_code == 400
    assert set(response.json()) == {parameter, "detail"}  # the field, and a sentence
    assert response.json()["detail"].startswith(f"{parameter}: ")


def test_an_unknown_kind_or_format_is_a_404() -> None:
    client = client_for(Role.RESEARCHER)
    assert client.get("/api/v1/exports/everything.jsonl").status_code == 404
    assert client.get("/api/v1/exports/rankings.xlsx").status_code == 404


def _without_storage(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """A ranking line without what depends on where and when it was stored."""
    return [
        {
            k: v
            for k, v in row.items()
            if k not in {"prompt_id", "ranking_id", "batch", "created_at"}
        }
        for row in rows
    ]


def test_texts_survive_every_format_exactly() -> None:
    # quotes, backslashes, control characters, a tab first (a formula start), emoji
    awkward = 'He said "hi"\\n\t\x01\x1f\r\nnew line \u2028 \U0001f600 end'
    prompt = PromptFactory(batch=BatchFactory(name="b"), k=2)
    winner, loser = completion_ids(prompt)
    Completion.objects.filter(pk=winner).update(text=awkward)
    ranking_submit(prompt=prompt, groups=[winner, loser], annotator=UserFactory())

    line = jsonl(_get("comparisons.jsonl"))[0]
    pair = jsonl(_get("preference.jsonl"))[0]
    table = parquet(_get("comparisons.parquet"))
    cell = next(csv.DictReader(io.StringIO(_get("comparisons.csv").decode(), newline="")))

    assert line["winner_text"] == pair["chosen"] == awkward
    assert table.column("winner_text").to_pylist() == [awkward]
    assert cell["winner_text"] == awkward  # starts with "H": nothing to neutralise
    assert line["is_tie"] is False
    assert isinstance(line["rank_gap"], int)
