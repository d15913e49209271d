"""Rankings as values: expansion into pairs and partition checks, no database."""

from math import comb

import pytest

from annotation.rankings import InvalidRanking, expand_pairs, normalize_groups, validate_partition


@pytest.mark.parametrize("k", range(2, 10))
def test_a_strict_order_of_k_expands_into_k_choose_2_pairs(k: int) -> None:
    pairs = expand_pairs([[i] for i in range(k)])

    assert len(pairs) == comb(k, 2)
    assert {(p.winner, p.loser) for p in pairs} == {
        (a, b) for a in range(k) for b in range(a + 1, k)
    }
    assert all(p.rank_gap == p.loser - p.winner and not p.is_tie for p in pairs)


def test_tied_items_make_a_flagged_pair_in_id_order_with_gap_zero() -> None:
    # 30 is best; 20 and 10 tie in second place; 40 is last.
    pairs = {(p.winner, p.loser): p for p in expand_pairs([[30], [20, 10], [40]])}

    assert len(pairs) == 6
    assert pairs[(10, 20)].is_tie
    assert pairs[(10, 20)].rank_gap == 0
    assert pairs[(30, 40)].rank_gap == 2
    assert not pairs[(20, 40)].is_tie
    assert pairs[(20, 40)].rank_gap == 1


def test_a_flat_order_and_single_ids_normalise_to_groups() -> None:
    assert normalize_groups([3, 1, 2]) == [[3], [1], [2]]
    assert normalize_groups([[3], 1, [2, 4]]) == [[3], [1], [2, 4]]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([], "non-empty list"),
        ("1,2", "non-empty list"),
        ([[1], []], "group 1 must be a non-empty list"),
        ([[1], ["2"]], "'2', which is not an integer id"),
        ([[1], [2.0]], "2.0, which is not an integer id"),
        ([[True], [2]], "True, which is not an integer id"),
    ],
)
def test_malformed_rankings_are_refused_with_the_reason(raw: object, message: str) -> None:
    with pytest.raises(InvalidRanking, match=message):
        normalize_groups(raw)


def test_a_ranking_that_is_not_a_partition_names_what_is_wrong() -> None:
    with pytest.raises(InvalidRanking) as excinfo:
        validate_partition([[1], [2, 1], [9]], completion_ids=[1, 2, 3])

    assert "repeated: 1" in str(excinfo.value)
    assert "missing: 3" in str(excinfo.value)
    assert "not completions of this prompt: 9" in str(excinfo.value)
