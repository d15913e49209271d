import math

import pytest
import torch

from rewards.data import Ranking
from rewards.loss import pair_matrix, pairwise_loss, ranking_loss


def ranking(groups: list[list[int]], k: int) -> Ranking:
    return Ranking([{"role": "user", "content": "p"}], [f"c{i}" for i in range(k)], groups)


def softplus(x: float) -> float:
    return math.log(1 + math.exp(x))


def test_three_completion_ranking_loss_equals_hand_computed_value():
    # given rewards 1.0, 0.0, -0.5 ranked 0 > 1 > 2: margins 1, 1.5, 0.5
    rewards = torch.tensor([[1.0, 0.0, -0.5]])
    win, tie = pair_matrix([ranking([[0], [1], [2]], 3)], 3)
    # when
    loss = ranking_loss(rewards, win, tie)
    # then -log sigmoid(m) = log(1 + e^-m), averaged over the C(3,2) = 3 pairs
    expected = (softplus(-1.0) + softplus(-1.5) + softplus(-0.5)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_grouped_loss_equals_mean_of_flat_pairwise_losses():
    torch.manual_seed(0)
    r = ranking([[3], [0], [4], [1], [2]], 5)
    rewards = torch.randn(1, 5)
    win, tie = pair_matrix([r], 5)
    pairs = r.pairs()
    assert len(pairs) == 10  # C(5, 2)
    chosen = torch.stack([rewards[0, w] for w, _, _ in pairs])
    rejected = torch.stack([rewards[0, lo] for _, lo, _ in pairs])
    assert ranking_loss(rewards, win, tie).item() == pytest.approx(
        pairwise_loss(chosen, rejected).item(), rel=1e-6
    )


def test_each_ranking_weighs_the_same_whatever_its_k():
    torch.manual_seed(1)
    short, long = ranking([[1], [0]], 2), ranking([[2], [0], [3], [1]], 4)
    rewards = torch.randn(2, 4)
    rewards[0, 2:] = 99.0  # padding: must not matter
    win, tie = pair_matrix([short, long], 4)
    each = [
        ranking_loss(rewards[:1, :2], *pair_matrix([short], 2)),
        ranking_loss(rewards[1:], *pair_matrix([long], 4)),
    ]
    assert ranking_loss(rewards, win, tie).item() == pytest.approx(sum(each).item() / 2, rel=1e-6)


def test_tie_pairs_are_left_out_by_default():
    tied = ranking([[0, 1], [2]], 3)
    assert [(w, lo) for w, lo, _ in tied.pairs()] == [(0, 2), (1, 2)]
    rewards = torch.tensor([[2.0, -3.0, 0.0]])
    win, tie = pair_matrix([tied], 3)
    assert tie.sum() == 0
    expected = (softplus(-2.0) + softplus(3.0)) / 2
    assert ranking_loss(rewards, win, tie).item() == pytest.approx(expected, rel=1e-6)
    # included on request: the tie counts as half a win each way
    win, tie = pair_matrix([tied], 3, include_ties=True)
    with_tie = ranking_loss(rewards, win, tie).item()
    tie_term = 0.5 * (softplus(-5.0) + softplus(5.0))
    assert with_tie == pytest.approx((expected * 2 + tie_term) / 3, rel=1e-6)


def test_centering_term_adds_mean_squared_reward_of_real_completions():
    rewards = torch.tensor([[1.0, -1.0, 7.0]])
    valid = torch.tensor([[True, True, False]])
    win, tie = pair_matrix([ranking([[0], [1]], 2)], 3)
    plain = ranking_loss(rewards, win, tie)
    centered = ranking_loss(rewards, win, tie, valid, center_coef=0.1)
    assert (centered - plain).item() == pytest.approx(0.1 * 1.0)
