"""ranking_submit: a ranking and its C(K, 2) comparisons, written once, on PostgreSQL."""

import threading
from math import comb

import pytest
from django.db import connection

from annotation.models import Comparison, Ranking
from annotation.rankings import InvalidRanking
from annotation.services import RankingConflict, ranking_submit
from tests.factories import BatchFactory, PromptFactory, UserFactory, completion_ids

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("k", range(2, 10))
def test_every_k_yields_k_choose_2_comparison_rows_ties_included(k: int) -> None:
    # given a prompt with k completions, ranked with the last two tied
    prompt = PromptFactory(k=k)
    ids = completion_ids(prompt)
    groups = [[i] for i in ids[:-2]] + [ids[-2:]]

    # when
    ranking = ranking_submit(prompt=prompt, groups=groups, annotator=UserFactory())

    # then
    rows = Comparison.objects.filter(ranking=ranking)
    assert rows.count() == comb(k, 2)
    assert rows.filter(is_tie=True).count() == 1
    tie = rows.get(is_tie=True)
    assert (tie.winner_id, tie.loser_id, tie.rank_gap) == (min(ids[-2:]), max(ids[-2:]), 0)
    best_vs_worst = rows.get(winner_id=ids[0], loser_id=ids[-1])
    assert best_vs_worst.rank_gap == k - 2
    assert set(rows.values_list("prompt_id", flat=True)) == {prompt.pk}
    assert set(rows.values_list("annotator_id", flat=True)) == {ranking.annotator_id}
    assert ranking.k == k
    assert ranking.origin == Ranking.Origin.HUMAN


def test_a_ranking_records_its_provenance() -> None:
    prompt = PromptFactory(k=4, batch=BatchFactory(guidelines_version=3))
    ids = completion_ids(prompt)
    shown = [ids[2], ids[0], ids[3], ids[1]]

    ranking = ranking_submit(
        prompt=prompt,
        groups=ids,
        annotator=UserFactory(),
        display_order=shown,
        duration_ms=41_000,
        rationale="The first is the only correct one.",
        flags={ids[3]: ["unsafe"], str(ids[1]): ["factually wrong", "off-topic"]},
    )

    ranking.refresh_from_db()
    assert ranking.groups == [[i] for i in ids]
    assert ranking.display_order == shown
    assert ranking.duration_ms == 41_000
    assert ranking.guidelines_version == 3
    assert ranking.flags == {str(ids[3]): ["unsafe"], str(ids[1]): ["factually wrong", "off-topic"]}


def test_none_acceptable_records_the_ranking_without_comparisons() -> None:
    prompt = PromptFactory(k=5)

    ranking = ranking_submit(prompt=prompt, groups=[], not_rankable=True, annotator=UserFactory())

    assert ranking.not_rankable
    assert Comparison.objects.filter(ranking=ranking).count() == 0


@pytest.mark.parametrize(
    ("make_groups", "message"),
    [
        (lambda ids: ids[:-1], "missing"),
        (lambda ids: [*ids, ids[0]], "repeated"),
        (lambda ids: [*ids, 10**9], "not completions of this prompt"),
        (lambda ids: [], "non-empty list"),
    ],
)
def test_an_invalid_ranking_is_refused_and_writes_nothing(make_groups, message: str) -> None:
    prompt = PromptFactory(k=4)

    with pytest.raises(InvalidRanking, match=message):
        ranking_submit(
            prompt=prompt, groups=make_groups(completion_ids(prompt)), annotator=UserFactory()
        )

    assert Ranking.objects.count() == 0
    assert Comparison.objects.count() == 0


def test_ids_of_another_prompt_are_refused() -> None:
    prompt, other = PromptFactory(k=4), PromptFactory(k=4)

    with pytest.raises(InvalidRanking, match="not completions of this prompt"):
        ranking_submit(prompt=prompt, groups=completion_ids(other), annotator=UserFactory())

    assert Ranking.objects.count() == 0


def test_k_outside_the_batch_range_is_refused() -> None:
    prompt = PromptFactory(k=3, batch=BatchFactory(k_min=4, k_max=9))

    with pytest.raises(InvalidRanking, match="K=3 completions, outside batch"):
        ranking_submit(prompt=prompt, groups=completion_ids(prompt), annotator=UserFactory())

    assert Ranking.objects.count() == 0


def test_submitting_the_same_ranking_twice_keeps_one() -> None:
    prompt, annotator = PromptFactory(k=6), UserFactory()
    ids = completion_ids(prompt)

    first = ranking_submit(prompt=prompt, groups=ids, annotator=annotator)
    second = ranking_submit(prompt=prompt, groups=ids, annotator=annotator)

    assert second.pk == first.pk
    assert Ranking.objects.count() == 1
    assert Comparison.objects.count() == comb(6, 2)


def test_a_different_second_ranking_by_the_same_annotator_is_a_conflict() -> None:
    prompt, annotator = PromptFactory(k=4), UserFactory()
    ids = completion_ids(prompt)
    first = ranking_submit(prompt=prompt, groups=ids, annotator=annotator)

    with pytest.raises(RankingConflict) as excinfo:
        ranking_submit(prompt=prompt, groups=ids[::-1], annotator=annotator)

    assert excinfo.value.existing.pk == first.pk
    assert list(Comparison.objects.values_list("winner_id", flat=True).distinct()) != []
    assert Comparison.objects.filter(winner_id=ids[-1]).count() == 0


def test_an_imported_ranking_is_idempotent_on_its_external_id() -> None:
    prompt = PromptFactory(k=4)
    ids = completion_ids(prompt)

    first = ranking_submit(prompt=prompt, groups=ids, external_id="oasst-42")
    again = ranking_submit(prompt=prompt, groups=ids, external_id="oasst-42")

    assert again.pk == first.pk
    assert first.origin == Ranking.Origin.IMPORTED
    assert first.annotator_id is None
    assert Comparison.objects.count() == 6


def test_an_imported_ranking_needs_an_external_id() -> None:
    prompt = PromptFactory(k=4)

    with pytest.raises(InvalidRanking, match="external id"):
        ranking_submit(prompt=prompt, groups=completion_ids(prompt))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres")
def test_racing_identical_submissions_leave_one_ranking() -> None:
    # given one annotator about to submit the same ranking from several tabs at once
    prompt, annotator = PromptFactory(k=7), UserFactory()
    ids = completion_ids(prompt)
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    results: list[int] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            barrier.wait()
            results.append(ranking_submit(prompt=prompt, groups=ids, annotator=annotator).pk)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    # when they race, each in its own connection and transaction
    threads = [threading.Thread(target=submit) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then every tab gets the one ranking back and no pair is duplicated
    assert errors == []
    assert len(set(results)) == 1
    assert Ranking.objects.count() == 1
    assert Comparison.objects.count() == comb(7, 2)
