"""The database itself refuses corrupt preference data, whatever Python does."""

import pytest
from django.db import IntegrityError, connection, transaction

from annotation.models import Comparison, Ranking
from annotation.services import ranking_submit
from tests.factories import PromptFactory, UserFactory, completion_ids

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres")]


@pytest.fixture
def ranking() -> Ranking:
    prompt = PromptFactory(k=4)
    return ranking_submit(prompt=prompt, groups=completion_ids(prompt), annotator=UserFactory())


def _insert(
    ranking: Ranking, winner: int, loser: int, *, prompt_id: int | None = None, gap: int = 1
) -> None:
    # Raw SQL on purpose: no model validation, no service, only the database's constraints.
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO annotation_comparison"
            " (ranking_id, prompt_id, winner_id, loser_id, rank_gap, is_tie)"
            " VALUES (%s, %s, %s, %s, %s, false)",
            [ranking.pk, prompt_id or ranking.prompt_id, winner, loser, gap],
        )


def test_a_self_pair_is_refused(ranking: Ranking) -> None:
    winner = completion_ids(ranking.prompt)[0]

    with pytest.raises(IntegrityError, match="comparison_not_self_pair"):
        _insert(ranking, winner, winner)


def test_a_duplicate_pair_is_refused(ranking: Ranking) -> None:
    ids = completion_ids(ranking.prompt)

    with pytest.raises(IntegrityError, match="comparison_pair_unique"):
        _insert(ranking, ids[0], ids[1])


def test_the_same_pair_reversed_is_refused(ranking: Ranking) -> None:
    ids = completion_ids(ranking.prompt)

    with pytest.raises(IntegrityError, match="comparison_unordered_pair_unique"):
        _insert(ranking, ids[1], ids[0])


def test_bulk_create_bypassing_the_service_is_refused_too(ranking: Ranking) -> None:
    ids = completion_ids(ranking.prompt)

    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.bulk_create(
            [
                Comparison(
                    ranking=ranking,
                    prompt=ranking.prompt,
                    winner_id=ids[2],
                    loser_id=ids[2],
                    rank_gap=1,
                )
            ]
        )

    assert Comparison.objects.filter(ranking=ranking).count() == 6


def test_a_completion_of_another_prompt_is_refused(ranking: Ranking) -> None:
    stranger = completion_ids(PromptFactory(k=4))[0]
    ours = completion_ids(ranking.prompt)[0]

    with pytest.raises(IntegrityError, match="comparison_loser_of_prompt"):
        _insert(ranking, ours, stranger)


def test_a_comparison_must_share_its_ranking_prompt(ranking: Ranking) -> None:
    other = PromptFactory(k=4)
    a, b = completion_ids(other)[:2]

    with pytest.raises(IntegrityError, match="comparison_prompt_of_ranking"):
        _insert(ranking, a, b, prompt_id=other.pk)


def test_a_tie_with_a_gap_is_refused(ranking: Ranking) -> None:
    prompt = PromptFactory(k=4)
    other = ranking_submit(prompt=prompt, groups=completion_ids(prompt), annotator=UserFactory())
    a, b = completion_ids(prompt)[:2]
    Comparison.objects.filter(ranking=other, winner_id=a, loser_id=b).delete()

    with pytest.raises(IntegrityError, match="comparison_tie_iff_zero_gap"), transaction.atomic():
        Comparison.objects.create(
            ranking=other, prompt=prompt, winner_id=a, loser_id=b, rank_gap=2, is_tie=True
        )


def test_one_ranking_per_annotator_and_prompt(ranking: Ranking) -> None:
    with (
        pytest.raises(IntegrityError, match="ranking_one_per_annotator_and_prompt"),
        transaction.atomic(),
    ):
        Ranking.objects.create(prompt=ranking.prompt, annotator=ranking.annotator, groups=[], k=4)
