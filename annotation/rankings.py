"""Rankings as values: validating a ranking against its completions and expanding it into
its C(K, 2) pairwise comparisons. Pure functions, no database; services and exports share them.

A ranking is a list of groups, best first; each group is a list of completion ids and a group
of several ids is a tie. `[[7], [3, 9], [4]]` says 7 beats everything, 3 and 9 tie, and both
beat 4.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import combinations


class InvalidRanking(ValueError):
    """A ranking that is not an exact partition of its prompt's completions."""


@dataclass(frozen=True, slots=True)
class Pair:
    winner: int
    loser: int
    rank_gap: int
    is_tie: bool


def groups_from_order(order: Sequence[int]) -> list[list[int]]:
    """A strict best-first order as groups of one."""
    return [[item] for item in order]


def normalize_groups(raw: object) -> list[list[int]]:
    """Accept groups (`[[a], [b, c]]`) or a strict order (`[a, b, c]`), checking the types.

    Raises InvalidRanking naming the first offending element.
    """
    if not isinstance(raw, list) or not raw:
        raise InvalidRanking("the ranking must be a non-empty list")
    if all(_is_int(item) for item in raw):
        return groups_from_order(raw)
    groups: list[list[int]] = []
    for index, group in enumerate(raw):
        if _is_int(group):
            groups.append([group])
            continue
        if not isinstance(group, list) or not group:
            raise InvalidRanking(f"group {index} must be a non-empty list of ids, got {group!r}")
        for item in group:
            if not _is_int(item):
                raise InvalidRanking(f"group {index} holds {item!r}, which is not an integer id")
        groups.append(list(group))
    return groups


def validate_partition(groups: Sequence[Sequence[int]], completion_ids: Iterable[int]) -> None:
    """Check that `groups` name every completion exactly once and nothing else."""
    expected = set(completion_ids)
    seen: set[int] = set()
    repeated: list[int] = []
    for group in groups:
        for item in group:
            if item in seen:
                repeated.append(item)
            seen.add(item)
    problems = []
    if repeated:
        problems.append(f"repeated: {_ids(repeated)}")
    if missing := expected - seen:
        problems.append(f"missing: {_ids(missing)}")
    if unknown := seen - expected:
        problems.append(f"not completions of this prompt: {_ids(unknown)}")
    if problems:
        raise InvalidRanking(
            "the ranking must name each of the prompt's completions exactly once ("
            + "; ".join(problems)
            + ")"
        )


def expand_pairs(groups: Sequence[Sequence[int]]) -> list[Pair]:
    """All C(K, 2) pairs of a ranking, ties included and flagged.

    A tie pair is ordered by id (winner < loser) so that it has one canonical form.
    """
    ranked = [(rank, item) for rank, group in enumerate(groups) for item in group]
    pairs = []
    for (rank_a, a), (rank_b, b) in combinations(ranked, 2):
        if rank_a == rank_b:
            pairs.append(Pair(winner=min(a, b), loser=max(a, b), rank_gap=0, is_tie=True))
        else:  # combinations keep order, so a sits in an earlier (better) group than b
            pairs.append(Pair(winner=a, loser=b, rank_gap=rank_b - rank_a, is_tie=False))
    return pairs


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _ids(values: Iterable[int]) -> str:
    return ", ".join(str(v) for v in sorted(set(values)))
