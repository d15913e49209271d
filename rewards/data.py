"""Rankings: one prompt, K completions, and the human order over them.

Two JSONL formats are read, one object a line (see the foundation and export issues):

- rankings: {"prompt": str, "messages": [{"role", "content"}...]?, "completions": [str | {"text"}],
  "ranking" | "groups": [best-first indices] or [[indices], [indices], ...]}, where a group of
  several indices is a tie;
- pairs (HH-RLHF): {"prompt": "\\n\\nHuman: ...\\n\\nAssistant:", "chosen": str, "rejected": str},
  which is a ranking with K = 2.

Everything downstream sees `Ranking`, so in-memory records (from the web app's export, from a
Celery task) and files go through the same code.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Ranking:
    """Completions of one conversation, ordered by humans; `groups` best first, ties grouped."""

    messages: Messages
    completions: list[str]
    groups: list[list[int]]
    id: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def prompt_key(self) -> str:
        """Same conversation -> same key: the unit of the train/validation split."""
        return hashlib.sha256(json.dumps(self.messages, sort_keys=True).encode()).hexdigest()

    def rank_of(self) -> list[int]:
        """Group index per completion (0 = best); completions the human left out get -1."""
        rank = [-1] * len(self.completions)
        for g, group in enumerate(self.groups):
            for i in group:
                rank[i] = g
        return rank

    def pairs(self, include_ties: bool = False) -> list[tuple[int, int, bool]]:
        """(winner, loser, is_tie) for every pair of ranked completions: C(K, 2) of them."""
        out = []
        for a, group_a in enumerate(self.groups):
            for i_pos, i in enumerate(group_a):
                if include_ties:
                    out += [(i, j, True) for j in group_a[i_pos + 1 :]]
                for group_b in self.groups[a + 1 :]:
                    out += [(i, j, False) for j in group_b]
        return out


_HH_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_hh_prompt(text: str) -> Messages:
    """"\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant:" -> chat messages."""
    parts = _HH_TURN.split(text)
    messages = []
    # parts = [before, role, content, role, content, ...]
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        content = content.strip()
        if content or role == "Human":
            messages.append({"role": "user" if role == "Human" else "assistant", "content": content})
    if not messages:  # not in HH form: the whole text is the user's turn
        messages = [{"role": "user", "content": text.strip()}]
    return messages


def _groups(order: Sequence[Any]) -> list[list[int]]:
    """[2, 0, 1] or [[2], [0, 1]] -> [[2], [0, 1]] style groups."""
    return [[int(i) for i in g] if isinstance(g, list | tuple) else [int(g)] for g in order]


def ranking_from_record(record: dict[str, Any], line: int = 0) -> Ranking:
    """One JSON object (rankings or pairs format) -> Ranking."""
    if "chosen" in record and "rejected" in record:
        prompt = record.get("prompt", "")
        messages = record.get("messages") or parse_hh_prompt(prompt)
        completions = [record["chosen"], record["rejected"]]
        groups = [[0], [1]]
    else:
        completions = [c["text"] if isinstance(c, dict) else c for c in record["completions"]]
        order = record.get("groups", record.get("ranking"))
        if order is None:
            raise ValueError(f"line {line}: a ranking needs 'ranking' or 'groups'")
        groups = _groups(order)
        messages = record.get("messages") or [
            {"role": "user", "content": record.get("prompt", "")}
        ]
    flat = [i for g in groups for i in g]
    if len(set(flat)) != len(flat) or any(not 0 <= i < len(completions) for i in flat):
        raise ValueError(f"line {line}: ranking {groups} does not index {len(completions)} items")
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    return Ranking(messages, [str(c) for c in completions], groups, str(record.get("id", line)))


def rankings_from_records(records: Iterable[dict[str, Any]]) -> list[Ranking]:
    """In-memory records (e.g. from the export service) -> rankings with at least one pair."""
    out = [ranking_from_record(r, n) for n, r in enumerate(records, 1)]
    return [r for r in out if len(r.groups) >= 2]


def load_rankings(path: str | Path) -> list[Ranking]:
    """A rankings or pairs JSONL file -> rankings (blank lines skipped)."""
    with open(path, encoding="utf-8") as f:
        return rankings_from_records(json.loads(line) for line in f if line.strip())


def split_by_prompt(
    rankings: Sequence[Ranking], val_fraction: float, seed: int
) -> tuple[list[Ranking], list[Ranking]]:
    """Train/held-out split in which no conversation appears on both sides."""
    keys = sorted({r.prompt_key for r in rankings})
    random.Random(seed).shuffle(keys)
    held = set(keys[: round(len(keys) * val_fraction)])
    return (
        [r for r in rankings if r.prompt_key not in held],
        [r for r in rankings if r.prompt_key in held],
    )


def data_hash(rankings: Sequence[Ranking]) -> str:
    """sha256 of the data a model was trained on, recorded in its meta.json."""
    digest = hashlib.sha256()
    for r in rankings:
        digest.update(json.dumps([r.messages, r.completions, r.groups]).encode())
    return digest.hexdigest()
