"""How much rankings of the same completions agree, as plain functions over lists: no Django, no
database, so tests check them against scipy and hand-computed values.

A ranking is `groups`: completion ids best first, a group of several a tie. Ranks are 1 for the
best; tied items share the mean of the ranks they span (mid-ranks), which is what the tie
corrections of Kendall's tau-b and W assume.

- `kendall_tau_b(x, y)`: Kendall (1945), as scipy.stats.kendalltau's default variant.
- `kendalls_w(rows)`: Kendall and Babington Smith (1939) with the tie correction
  W = 12 S / (m^2 (n^3 - n) - m sum_j T_j), T_j = sum over tie groups t of (t^3 - t).
- `pair_agreement(rows)`: over every two raters and every pair of items, the share on which
  they give the same relation (better, worse or tied).
- `bradley_terry(items, outcomes)`: strengths by Hunter's (2004) MM algorithm over pooled
  pairwise outcomes, ties counting half a win each, with a weak symmetric prior so that an
  item nobody ranked below another keeps a finite strength.
"""

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

Groups = Sequence[Sequence[int]]

# Virtual comparisons between every two items, split evenly, added to the observed ones: keeps
# every strength finite and pulls items that were compared once only a little.
BT_PRIOR_COMPARISONS = 0.5
BT_ITERATIONS = 500
BT_TOLERANCE = 1e-9


def mid_ranks(groups: Groups, items: Sequence[int]) -> list[float]:
    """The rank of each of `items` (1 = best) under `groups`; tied items share a mid-rank."""
    rank_of: dict[int, float] = {}
    start = 1
    for group in groups:
        mid = start + (len(group) - 1) / 2
        for item in group:
            rank_of[item] = mid
        start += len(group)
    return [rank_of[item] for item in items]


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two paired sequences; None when either is constant (undefined)."""
    if len(x) != len(y):
        raise ValueError("kendall_tau_b needs two sequences of the same length")
    concordant = discordant = tied_x_only = tied_y_only = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = _sign(x[i] - x[j]), _sign(y[i] - y[j])
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tied_x_only += 1
            elif dy == 0:
                tied_y_only += 1
            elif dx == dy:
                concordant += 1
            else:
                discordant += 1
    untied_x = concordant + discordant + tied_y_only
    untied_y = concordant + discordant + tied_x_only
    if untied_x == 0 or untied_y == 0:
        return None
    return (concordant - discordant) / math.sqrt(untied_x * untied_y)


def kendalls_w(rows: Sequence[Sequence[float]]) -> float | None:
    """Kendall's coefficient of concordance of m rank rows over the same n items (mid-ranks
    for ties), with the tie correction. None with fewer than two rows or two items, or when
    every row ties everything."""
    m = len(rows)
    if m < 2:
        return None
    n = len(rows[0])
    if any(len(row) != n for row in rows):
        raise ValueError("kendalls_w needs rank rows of equal length")
    if n < 2:
        return None
    totals = [sum(row[i] for row in rows) for i in range(n)]
    mean_total = m * (n + 1) / 2
    s = sum((total - mean_total) ** 2 for total in totals)
    tie_sum = sum(_tie_term(row) for row in rows)
    denominator = m * m * (n**3 - n) - m * tie_sum
    if denominator <= 0:
        return None
    return 12 * s / denominator


def _tie_term(row: Sequence[float]) -> float:
    counts: dict[float, int] = {}
    for value in row:
        counts[value] = counts.get(value, 0) + 1
    return sum(t**3 - t for t in counts.values())


def _relations(row: Sequence[float]) -> list[int]:
    """For every item pair (i < j): -1 when i ranks better, 1 when worse, 0 when tied."""
    n = len(row)
    return [_sign(row[i] - row[j]) for i in range(n) for j in range(i + 1, n)]


def pair_agreement(rows: Sequence[Sequence[float]]) -> float | None:
    """Over every two rows and every item pair, the share of identical relations."""
    hits, total = _pair_counts(rows)
    return hits / total if total else None


def _pair_counts(rows: Sequence[Sequence[float]]) -> tuple[int, int]:
    relations = [_relations(row) for row in rows]
    hits = total = 0
    for a in range(len(relations)):
        for b in range(a + 1, len(relations)):
            hits += sum(x == y for x, y in zip(relations[a], relations[b], strict=True))
            total += len(relations[a])
    return hits, total


@dataclass(frozen=True)
class Outcome:
    """One pairwise outcome: `winner` over `loser`, or a tie of the two."""

    winner: int
    loser: int
    tie: bool = False


def outcomes_of(groups: Groups) -> list[Outcome]:
    """The pairwise outcomes a ranking expands into (every pair, ties included)."""
    found: list[Outcome] = []
    for index, group in enumerate(groups):
        ordered = sorted(group)
        for a in range(len(ordered)):
            for b in range(a + 1, len(ordered)):
                found.append(Outcome(ordered[a], ordered[b], tie=True))
        for worse in groups[index + 1 :]:
            found.extend(Outcome(winner, loser) for winner in group for loser in worse)
    return found


def bradley_terry(items: Sequence[int], outcomes: Iterable[Outcome]) -> dict[int, float]:
    """Log-strengths of `items` (mean 0) fitted to the pooled outcomes; higher is better."""
    return bradley_terry_many([(items, outcomes)])[0]


def bradley_terry_many(
    problems: Sequence[tuple[Sequence[int], Iterable[Outcome]]],
) -> list[dict[int, float]]:
    """`bradley_terry` for many prompts at once: one MM iteration updates all of them, on
    arrays padded to the largest K (padding has no comparisons and stays out of the mean)."""
    if not problems:
        return []
    p, n = len(problems), max((len(items) for items, _ in problems), default=0)
    if n == 0:
        return [{} for _ in problems]
    meetings = np.zeros((p, n, n))  # (P, K, K): comparisons of i with j, prior included
    wins = np.zeros((p, n))  # (P, K): wins of i, a tie counting half
    real = np.zeros((p, n), dtype=bool)  # (P, K): not padding
    for row, (items, outcomes) in enumerate(problems):
        k = len(items)
        real[row, :k] = True
        if k > 1:
            meetings[row, :k, :k] = BT_PRIOR_COMPARISONS
            np.fill_diagonal(meetings[row], 0.0)
            wins[row, :k] = BT_PRIOR_COMPARISONS * (k - 1) / 2
        index = {item: i for i, item in enumerate(items)}
        for outcome in outcomes:
            w, loser = index[outcome.winner], index[outcome.loser]
            meetings[row, w, loser] += 1
            meetings[row, loser, w] += 1
            if outcome.tie:
                wins[row, w] += 0.5
                wins[row, loser] += 0.5
            else:
                wins[row, w] += 1
    counts = real.sum(axis=1)  # (P,)
    strength = np.ones((p, n))
    for _ in range(BT_ITERATIONS):
        # Hunter's MM step: p_i = W_i / sum_j n_ij / (p_i + p_j)
        denominator = (meetings / (strength[:, :, None] + strength[:, None, :])).sum(axis=2)
        has = denominator > 0
        updated = np.where(has, wins / np.where(has, denominator, 1.0), 1.0)
        log_mean = np.where(real, np.log(updated), 0.0).sum(axis=1) / counts  # (P,)
        updated = np.where(real, updated / np.exp(log_mean)[:, None], 1.0)
        change = float(np.abs(updated - strength).max())
        strength = updated
        if change < BT_TOLERANCE:
            break
    logs = np.log(strength)
    return [
        {item: float(logs[row, i]) for i, item in enumerate(items)}
        for row, (items, _) in enumerate(problems)
    ]


def groups_from_scores(scores: dict[int, float], *, tolerance: float = 1e-6) -> list[list[int]]:
    """Items best first; items whose scores differ by less than `tolerance` form a tie."""
    ordered = sorted(scores, key=lambda item: (-scores[item], item))
    groups: list[list[int]] = []
    for item in ordered:
        if groups and abs(scores[groups[-1][0]] - scores[item]) < tolerance:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def position_bias(display_order: Sequence[int], groups: Groups) -> float | None:
    """Kendall's tau-b between the position a completion was shown at and the rank it got:
    1 when the ranking is the display order, near 0 when position does not matter."""
    if not display_order:
        return None
    ranks = mid_ranks(groups, display_order)
    return kendall_tau_b(list(range(len(display_order))), ranks)


def copies_display_order(display_order: Sequence[int], groups: Groups) -> bool:
    """Whether the ranking is exactly the order shown (no ties, nothing moved)."""
    return bool(display_order) and [list(g) for g in groups] == [[item] for item in display_order]


def gold_score(groups: Groups, reference: Groups, items: Sequence[int]) -> float | None:
    """Kendall's tau-b of a ranking against the reference: partial credit, 1 for a copy."""
    return kendall_tau_b(mid_ranks(groups, items), mid_ranks(reference, items))


def attention_passed(groups: Groups, check_id: int) -> bool:
    """Whether the degraded completion is ranked last, on its own."""
    return bool(groups) and list(groups[-1]) == [check_id]


@dataclass(frozen=True)
class RankingInput:
    key: int
    groups: Groups
    display_order: Sequence[int]


@dataclass
class RankingAgreement:
    loo_tau: float | None  # against the mean ranks of the prompt's other rankings
    pair_hits: int  # item pairs x other rankings with the same relation
    pair_total: int
    position_tau: float | None
    copied_order: bool


@dataclass
class PromptAgreement:
    raters: int
    kendall_w: float | None
    pair_agreement: float | None
    consensus: list[list[int]]
    scores: dict[int, float]
    rankings: dict[int, RankingAgreement] = field(default_factory=dict)


def prompt_agreement(items: Sequence[int], rankings: Sequence[RankingInput]) -> PromptAgreement:
    """Every figure of one prompt (see `prompts_agreement`)."""
    return prompts_agreement([(items, rankings)])[0]


def prompts_agreement(
    prompts: Sequence[tuple[Sequence[int], Sequence[RankingInput]]],
) -> list[PromptAgreement]:
    """Every figure of each prompt: W, pair agreement and the Bradley-Terry consensus over its
    rankings of `items`, and per ranking its leave-one-out tau, pair hits and position bias.
    Rankings that are not a partition of `items` (none acceptable, or empty) are left out.
    The consensus of all prompts is fitted at once (`bradley_terry_many`)."""
    figures, problems = [], []
    for items, rankings in prompts:
        wanted = sorted(items)
        usable = [r for r in rankings if sorted(i for g in r.groups for i in g) == wanted]
        figures.append(_agreement_of(items, usable))
        problems.append((items, [o for r in usable for o in outcomes_of(r.groups)]))
    for figure, scores in zip(figures, bradley_terry_many(problems), strict=True):
        if figure.raters:
            figure.scores = scores
            figure.consensus = groups_from_scores(scores)
    return figures


def _agreement_of(items: Sequence[int], usable: Sequence[RankingInput]) -> PromptAgreement:
    rows = [mid_ranks(r.groups, items) for r in usable]
    relations = [_relations(row) for row in rows]
    item_set = set(items)
    per_ranking: dict[int, RankingAgreement] = {}
    for index, ranking in enumerate(usable):
        others = [row for j, row in enumerate(rows) if j != index]
        loo = None
        if others:
            mean_others = [sum(col) / len(others) for col in zip(*others, strict=True)]
            loo = kendall_tau_b(rows[index], mean_others)
        hits = total = 0
        for j, other in enumerate(relations):
            if j != index:
                hits += sum(a == b for a, b in zip(relations[index], other, strict=True))
                total += len(other)
        shown = [i for i in ranking.display_order if i in item_set]
        per_ranking[ranking.key] = RankingAgreement(
            loo_tau=loo,
            pair_hits=hits,
            pair_total=total,
            position_tau=position_bias(shown, ranking.groups) if len(shown) == len(items) else None,
            copied_order=copies_display_order(shown, ranking.groups),
        )
    return PromptAgreement(
        raters=len(usable),
        kendall_w=kendalls_w(rows),
        pair_agreement=pair_agreement(rows),
        consensus=[],
        scores={},
        rankings=per_ranking,
    )
