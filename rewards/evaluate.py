"""Held-out evaluation of reward scores against human rankings.

- pairwise accuracy: share of human-ordered pairs (ties left out) with r_w > r_l; an exact tie
  of scores counts half, so a constant model scores 50%;
- mean margin r_w - r_l;
- expected calibration error (10 equal-width bins) of p = sigmoid(r_w - r_l), the probability
  the Bradley-Terry model gives to the human's choice. Both orientations of each pair enter
  (p with outcome 1, 1 - p with outcome 0) so every bin of [0, 1] is used and the figure does
  not depend on which side of a pair is listed first;
- Kendall tau-b per prompt between scores and the human order, averaged over prompts.

Call it on prompts the model never trained on: training accuracy says nothing about rewards.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from rewards.data import Ranking


def expected_calibration_error(p: torch.Tensor, outcome: torch.Tensor, bins: int = 10) -> float:
    """sum over bins of |mean p - mean outcome| * share of predictions in the bin."""
    index = torch.clamp((p * bins).long(), max=bins - 1)  # (N,) bin of each prediction
    ece = 0.0
    for b in range(bins):
        in_bin = index == b
        if in_bin.any():
            gap = (p[in_bin].mean() - outcome[in_bin].float().mean()).abs()
            ece += float(gap) * float(in_bin.float().mean())
    return ece


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties in either variable corrected); nan when one side is constant."""
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt(
        (concordant + discordant + ties_x) * (concordant + discordant + ties_y)
    )
    return (concordant - discordant) / denominator if denominator else float("nan")


def evaluate_scores(rankings: Sequence[Ranking], scores: Sequence[Sequence[float]]) -> dict:
    """Metrics of raw (unnormalised) `scores[r][i]` for completion i of ranking r."""
    margins = []
    taus = []
    for ranking, s in zip(rankings, scores, strict=True):
        margins += [s[w] - s[lose] for w, lose, _ in ranking.pairs()]
        rank = ranking.rank_of()
        ranked = [i for i in range(len(rank)) if rank[i] >= 0]
        tau = kendall_tau_b([s[i] for i in ranked], [-rank[i] for i in ranked])
        if not math.isnan(tau):
            taus.append(tau)
    m = torch.tensor(margins, dtype=torch.float64)  # (P,)
    if m.numel() == 0:
        return {"pairs": 0}
    p = torch.sigmoid(m)
    both = torch.cat([p, 1 - p])  # (2P,) each pair from both sides
    outcome = torch.cat([torch.ones_like(p), torch.zeros_like(p)])
    return {
        "pairs": int(m.numel()),
        "prompts": len(rankings),
        "accuracy": float(((m > 0).double() + 0.5 * (m == 0).double()).mean()),
        "mean_margin": float(m.mean()),
        "ece": expected_calibration_error(both, outcome),
        "kendall_tau": sum(taus) / len(taus) if taus else float("nan"),
    }
