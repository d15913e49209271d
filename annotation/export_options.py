"""What an export is asked for: its kind, format, filters, pair policy and split. Plain values,
validated on construction; an `ExportError` names the option at fault so the API and the
command can point at the parameter."""

from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    RANKINGS = "rankings"
    COMPARISONS = "comparisons"
    PREFERENCE = "preference"


class Format(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"
    PARQUET = "parquet"


class Pairs(StrEnum):
    ALL = "all"
    ADJACENT = "adjacent"
    BEST_VS_REST = "best_vs_rest"


class Ties(StrEnum):
    DROP = "drop"
    KEEP = "keep"


class Style(StrEnum):
    STANDARD = "standard"
    CONVERSATIONAL = "conversational"


class Split(StrEnum):
    TRAIN = "train"
    TEST = "test"


class ExportError(ValueError):
    """Options that do not make sense together; `parameter` names the culprit."""

    def __init__(self, message: str, *, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class RankingFilter:
    """Which rankings to export. Every field maps to one fixed SQL condition."""

    batches: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None
    annotator: str | None = None  # a pseudonym
    origin: str | None = None
    k: int | None = None
    snapshot_id: int | None = None

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["batches"] = list(self.batches)
        for name in ("created_after", "created_before"):
            data[name] = data[name].isoformat() if data[name] else None
        return data


@dataclass(frozen=True)
class ExportOptions:
    kind: Kind
    format: Format = Format.JSONL
    filter: RankingFilter = field(default_factory=RankingFilter)
    pairs: Pairs = Pairs.ALL
    # None: keep ties in comparisons (they are data), drop them from preference pairs (a
    # chosen/rejected trainer has no way to say "equally good").
    ties: Ties | None = None
    style: Style = Style.STANDARD
    # Split by prompt: about `split_test` of the prompts go to test, chosen by a seeded hash of
    # the prompt text, so one prompt never sits on both sides, even when it was imported into
    # two batches, and a prompt keeps its side as the data set grows.
    split_test: float | None = None
    seed: int = 0
    split: Split | None = None

    def __post_init__(self) -> None:
        if self.kind != Kind.PREFERENCE and self.pairs != Pairs.ALL:
            raise ExportError("pairs applies to kind=preference only", parameter="pairs")
        if self.kind != Kind.PREFERENCE and self.style != Style.STANDARD:
            raise ExportError("style applies to kind=preference only", parameter="style")
        if self.kind == Kind.RANKINGS and self.ties is not None:
            raise ExportError("ties applies to comparisons and preference", parameter="ties")
        if self.split_test is not None and not 0 < self.split_test < 1:
            raise ExportError("split_test must be between 0 and 1", parameter="split_test")
        if (self.split is None) != (self.split_test is None):
            raise ExportError("split (train or test) and split_test go together", parameter="split")

    @property
    def keep_ties(self) -> bool:
        if self.ties is None:
            return self.kind == Kind.COMPARISONS
        return self.ties == Ties.KEEP
