"""K-wise Bradley-Terry loss, one ranking per batch element (InstructGPT, Ouyang et al. 2022, 3.5).

    loss(theta) = -1/C(K,2) * sum over pairs (y_w, y_l) of log sigmoid(r(x, y_w) - r(x, y_l))

Each of the K completions of a ranking is scored once and reused in all its K-1 pairs: K forward
passes instead of 2 * C(K, 2), and no overfitting from seeing one completion in many separate
batch elements. Rankings with different K share a batch through padding and a pair mask.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from rewards.data import Ranking


def pair_matrix(
    rankings: Sequence[Ranking], k_max: int, include_ties: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, K) win[b, i, j] = 1 if i was ranked above j; tie[b, i, j] = 1 for i < j tied.

    Tie pairs are left out of the loss by default: Bradley-Terry has no tie outcome, and a
    human tie says little about which way the model should move.
    """
    win = torch.zeros(len(rankings), k_max, k_max)
    tie = torch.zeros(len(rankings), k_max, k_max)
    for b, ranking in enumerate(rankings):
        for i, j, is_tie in ranking.pairs(include_ties=include_ties):
            (tie if is_tie else win)[b, i, j] = 1.0
    return win, tie


def ranking_loss(
    rewards: torch.Tensor,
    win: torch.Tensor,
    tie: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> torch.Tensor:
    """Mean over rankings of the mean over their pairs of -log sigmoid(r_w - r_l).

    rewards: (B, K) one score per completion (padding anywhere win/tie are 0).
    win, tie: (B, K, K) pair masks from `pair_matrix`; a tie pair counts as half a win each way.
    valid: (B, K) real completions, for the optional centering term
        center_coef * mean(r^2)  (Eisenstein et al. 2023), which keeps rewards near zero because
        Bradley-Terry only sees differences.
    """
    margin = rewards.unsqueeze(2) - rewards.unsqueeze(1)  # (B, K, K) r_i - r_j
    nll = -F.logsigmoid(margin)  # (B, K, K)
    per_pair = win * nll
    weight = win
    if tie is not None:
        per_pair = per_pair + tie * 0.5 * (nll + -F.logsigmoid(-margin))
        weight = weight + tie
    n_pairs = weight.sum((1, 2))  # (B,) C(K, 2) less the ties left out
    has_pairs = n_pairs > 0
    per_ranking = per_pair.sum((1, 2))[has_pairs] / n_pairs[has_pairs]  # (B',)
    loss = per_ranking.mean()
    if center_coef:
        mask = valid if valid is not None else torch.ones_like(rewards, dtype=torch.bool)
        loss = loss + center_coef * rewards[mask.bool()].pow(2).mean()
    return loss


def pairwise_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> torch.Tensor:
    """The flat form: (P,) chosen and rejected rewards -> mean of -log sigmoid(r_w - r_l)."""
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def pair_stats(rewards: torch.Tensor, win: torch.Tensor) -> tuple[float, float]:
    """Accuracy (r_w > r_l) and mean margin r_w - r_l over the win pairs of a batch, to log."""
    margin = (rewards.unsqueeze(2) - rewards.unsqueeze(1))[win.bool()]  # (P,)
    if margin.numel() == 0:
        return float("nan"), float("nan")
    return float((margin > 0).float().mean()), float(margin.mean())
