import math

import pytest
import torch

from rewards.data import Ranking
from rewards.evaluate import evaluate_scores, expected_calibration_error, kendall_tau_b


def test_ece_of_hand_made_bins():
    p = torch.tensor([0.05, 0.05, 0.95, 0.95])
    outcome = torch.tensor([0, 1, 1, 1])
    # bin 0: mean p 0.05, outcome 0.5 -> gap 0.45, half the predictions; bin 9: gap 0.05
    assert expected_calibration_error(p, outcome) == pytest.approx(0.45 * 0.5 + 0.05 * 0.5)


def test_kendall_tau_b():
    assert kendall_tau_b([3, 2, 1], [3, 2, 1]) == pytest.approx(1.0)
    assert kendall_tau_b([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau_b([1, 1], [1, 1]))


def test_metrics_against_human_ranking():
    r = Ranking([{"role": "user", "content": "p"}], ["a", "b", "c"], [[0], [1], [2]])
    pair = Ranking([{"role": "user", "content": "q"}], ["a", "b"], [[1], [0]])
    metrics = evaluate_scores([r, pair], [[3.0, 2.0, 1.0], [0.5, 0.5]])
    assert metrics["pairs"] == 4
    assert metrics["accuracy"] == pytest.approx((3 + 0.5) / 4)  # an equal score counts half
    assert metrics["mean_margin"] == pytest.approx((1 + 2 + 1 + 0) / 4)
    assert metrics["kendall_tau"] == pytest.approx(1.0)  # the constant one has no tau
