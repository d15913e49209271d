"""The agreement metrics against independent implementations (scipy) and hand-computed values,
on small cases with ties, and on simulated annotators."""

import math
import random

import pytest
from scipy.stats import kendalltau

from annotation.agreement import (
    Outcome,
    RankingInput,
    attention_passed,
    bradley_terry,
    copies_display_order,
    gold_score,
    groups_from_scores,
    kendall_tau_b,
    kendalls_w,
    mid_ranks,
    outcomes_of,
    pair_agreement,
    position_bias,
    prompt_agreement,
)

ITEMS = [10, 11, 12, 13, 14]


def test_mid_ranks_share_the_mean_rank_of_a_tie():
    assert mid_ranks([[12], [10, 14], [11], [13]], ITEMS) == [2.5, 4, 1, 5, 2.5]


@pytest.mark.parametrize(
    ("x", "y"),
    [
        ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]),
        ([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]),
        ([1, 2.5, 2.5, 4, 5], [2, 1, 3, 4, 5]),
        ([1.5, 1.5, 3, 4.5, 4.5], [1, 2.5, 2.5, 5, 4]),
        ([2, 2, 2, 1, 3, 4], [1, 3, 2, 2, 2, 4]),
    ],
)
def test_tau_b_matches_scipy_with_ties(x, y):
    assert kendall_tau_b(x, y) == pytest.approx(kendalltau(x, y).statistic)


def test_tau_b_by_hand():
    # x = [1, 2, 2], y = [1, 2, 3]: pairs (0,1) and (0,2) concordant, (1,2) tied in x only.
    # tau_b = (2 - 0) / sqrt((2 + 0 + 0) * (2 + 0 + 1)) = 2 / sqrt(6)
    assert kendall_tau_b([1, 2, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6))


def test_tau_b_of_a_constant_is_undefined():
    assert kendall_tau_b([1, 1, 1], [1, 2, 3]) is None


def w_direct(rows):
    """Kendall's W with the tie correction, written out from the textbook formula."""
    m, n = len(rows), len(rows[0])
    r = [sum(row[i] for row in rows) for i in range(n)]
    r_bar = sum(r) / n
    s = sum((ri - r_bar) ** 2 for ri in r)
    t = 0
    for row in rows:
        for value in set(row):
            count = row.count(value)
            t += count**3 - count
    return 12 * s / (m**2 * (n**3 - n) - m * t)


def test_w_by_hand_without_ties():
    # Three raters, three items, identical orders: W = 1.
    assert kendalls_w([[1, 2, 3]] * 3) == pytest.approx(1.0)
    # Two raters who reverse each other: rank sums all equal, S = 0, W = 0.
    assert kendalls_w([[1, 2, 3], [3, 2, 1]]) == pytest.approx(0.0)


def test_w_with_ties_by_hand():
    # rows: [1, 2.5, 2.5, 4], [1, 2, 3, 4], [2, 1, 3.5, 3.5]
    # rank sums 4, 5.5, 9, 11.5; mean 7.5; S = 12.25 + 4 + 2.25 + 16 = 34.5
    # ties: (2^3-2) in row 1 and row 3 -> sum T = 12
    # W = 12 * 34.5 / (9 * 60 - 3 * 12) = 414 / 504
    rows = [[1, 2.5, 2.5, 4], [1, 2, 3, 4], [2, 1, 3.5, 3.5]]
    assert kendalls_w(rows) == pytest.approx(414 / 504)
    assert kendalls_w(rows) == pytest.approx(w_direct(rows))


def test_w_matches_the_direct_formula_on_random_tied_rankings():
    rng = random.Random(3)
    for _ in range(50):
        m, n = rng.randint(2, 6), rng.randint(3, 8)
        rows = []
        for _ in range(m):
            items = list(range(n))
            rng.shuffle(items)
            groups: list[list[int]] = []
            for item in items:
                if groups and rng.random() < 0.3:
                    groups[-1].append(item)
                else:
                    groups.append([item])
            rows.append(mid_ranks(groups, list(range(n))))
        if all(len(set(row)) == 1 for row in rows):
            continue
        assert kendalls_w(rows) == pytest.approx(w_direct(rows))


def test_pair_agreement_by_hand():
    # Items a, b, c. Rater 1: a > b > c. Rater 2: a > c > b. Rater 3: a = b > c.
    # Relations (ab, ac, bc): r1 (-, -, -), r2 (-, -, +), r3 (0, -, -).
    # r1 vs r2: 2 of 3; r1 vs r3: 2 of 3; r2 vs r3: 1 of 3 -> 5 of 9.
    rows = [
        mid_ranks([[1], [2], [3]], [1, 2, 3]),
        mid_ranks([[1], [3], [2]], [1, 2, 3]),
        mid_ranks([[1, 2], [3]], [1, 2, 3]),
    ]
    assert pair_agreement(rows) == pytest.approx(5 / 9)


def test_bradley_terry_two_items_has_the_closed_form():
    # A beats B three times and loses once. With the prior's 0.5 virtual comparisons split
    # evenly, the MM fixed point is p_A / p_B = (3 + 0.25) / (1 + 0.25).
    outcomes = [Outcome(1, 2)] * 3 + [Outcome(2, 1)]
    scores = bradley_terry([1, 2], outcomes)
    assert scores[1] - scores[2] == pytest.approx(math.log(3.25 / 1.25), abs=1e-6)


def test_bradley_terry_consensus_orders_and_ties():
    # Two rankings agree on 5 > 6 > 7 > 8; a third ties 6 and 7.
    rankings = [[[5], [6], [7], [8]], [[5], [6], [7], [8]], [[5], [6, 7], [8]]]
    scores = bradley_terry([5, 6, 7, 8], [o for g in rankings for o in outcomes_of(g)])
    assert groups_from_scores(scores) == [[5], [6], [7], [8]]
    # Perfectly symmetric evidence is a tie.
    symmetric = bradley_terry([1, 2], [Outcome(1, 2), Outcome(2, 1)])
    assert groups_from_scores(symmetric) == [[1, 2]]


def test_position_bias_and_copying_the_shown_order():
    shown = [13, 10, 12, 11]
    assert position_bias(shown, [[13], [10], [12], [11]]) == pytest.approx(1.0)
    assert copies_display_order(shown, [[13], [10], [12], [11]])
    assert position_bias(shown, [[11], [12], [10], [13]]) == pytest.approx(-1.0)
    assert not copies_display_order(shown, [[13], [10, 12], [11]])
    # Ranks 1, 2.5, 2.5, 4 against positions 0..3: scipy agrees.
    expected = kendalltau([0, 1, 2, 3], [1, 2.5, 2.5, 4]).statistic
    assert position_bias(shown, [[13], [10, 12], [11]]) == pytest.approx(expected)


def test_gold_score_gives_partial_credit():
    reference = [[10], [11], [12], [13]]
    assert gold_score(reference, reference, [10, 11, 12, 13]) == pytest.approx(1.0)
    swapped = [[11], [10], [12], [13]]
    # One discordant pair of six: (5 - 1) / 6.
    assert gold_score(swapped, reference, [10, 11, 12, 13]) == pytest.approx(4 / 6)


def test_attention_check_must_be_last_on_its_own():
    assert attention_passed([[1], [2], [9]], 9)
    assert not attention_passed([[1], [2, 9]], 9)
    assert not attention_passed([[9], [1], [2]], 9)


def test_leave_one_out_tau_matches_scipy_against_the_others_mean_ranks():
    items = [1, 2, 3, 4, 5]
    rankings = [
        RankingInput(key=100, groups=[[1], [2], [3, 4], [5]], display_order=items),
        RankingInput(key=101, groups=[[2], [1], [3], [4], [5]], display_order=items),
        RankingInput(key=102, groups=[[1], [3], [2], [5], [4]], display_order=items),
    ]
    figures = prompt_agreement(items, rankings)
    rows = [mid_ranks(r.groups, items) for r in rankings]
    others = [(a + b) / 2 for a, b in zip(rows[1], rows[2], strict=True)]
    assert figures.rankings[100].loo_tau == pytest.approx(kendalltau(rows[0], others).statistic)
    assert figures.kendall_w == pytest.approx(w_direct(rows))
    assert figures.raters == 3
    assert figures.consensus[0] == [1]


def test_simulated_annotators():
    """Over many prompts: one who ranks in the order shown has position bias 1; one who ranks
    at random agrees with the others' consensus at tau near 0."""
    rng = random.Random(7)
    position_taus, random_taus = [], []
    for _ in range(300):
        items = list(range(6))
        truth = items[:]
        rng.shuffle(truth)
        # Two careful annotators who follow the true order, with a small slip now and then.
        careful = []
        for key in (1, 2):
            order = truth[:]
            if rng.random() < 0.3:
                i = rng.randrange(5)
                order[i], order[i + 1] = order[i + 1], order[i]
            careful.append(RankingInput(key=key, groups=[[x] for x in order], display_order=items))
        shown = items[:]
        rng.shuffle(shown)
        by_position = RankingInput(key=3, groups=[[x] for x in shown], display_order=shown)
        at_random = items[:]
        rng.shuffle(at_random)
        shown_random = items[:]
        rng.shuffle(shown_random)
        random_one = RankingInput(
            key=4, groups=[[x] for x in at_random], display_order=shown_random
        )
        figures = prompt_agreement(items, [*careful, by_position])
        position_taus.append(figures.rankings[3].position_tau)
        figures = prompt_agreement(items, [*careful, random_one])
        random_taus.append(figures.rankings[4].loo_tau)
        careful_tau = figures.rankings[1].loo_tau
        assert careful_tau is not None
    assert sum(position_taus) / len(position_taus) == pytest.approx(1.0)
    assert abs(sum(random_taus) / len(random_taus)) < 0.08
