"""Factories for the reward-model tests: small synthetic rankings a tiny model can separate."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from rewards.data import Ranking

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"


def separable_rankings(n: int = 24, seed: int = 0) -> list[Ranking]:
    """K=3 rankings where "good" beats "okay" beats "bad", whatever the prompt and padding."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = ["good", "okay", "bad"]
        filler = ["so", "well", "hmm", "uh"]
        texts = [" ".join(rng.choices(filler, k=rng.randint(0, 3)) + [w]) for w in words]
        order = [0, 1, 2]
        rng.shuffle(order)  # completions listed in random order, ranking says which is which
        completions = [texts[j] for j in order]
        groups = [[order.index(j)] for j in range(3)]
        out.append(Ranking([{"role": "user", "content": f"question {i}?"}], completions, groups, str(i)))
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def rankings_jsonl(tmp_path: Path) -> Path:
    """Rankings in the export format: completions as objects, best-first groups."""
    records = [
        {
            "prompt": r.messages[0]["content"],
            "completions": [{"text": c} for c in r.completions],
            "groups": r.groups,
        }
        for r in separable_rankings(24)
    ]
    return write_jsonl(tmp_path / "rankings.jsonl", records)
