"""The command line through `python -m rewards`, as a user runs it."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from reward_factories import separable_rankings, write_jsonl

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "rewards", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # tiny model: one thread is fastest
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_train_eval_score_round_trip(rankings_jsonl, tmp_path):
    out = tmp_path / "model"
    # when: train on rankings in the export format (completion objects, groups)
    trained = run(
        "train",
        "--data",
        str(rankings_jsonl),
        "--base",
        "tiny",
        "--out",
        str(out),
        "--mode",
        "full",
        "--epochs",
        "12",
        "--lr",
        "0.003",
        "--head-lr",
        "0.03",
        "--max-length",
        "48",
        "--val-fraction",
        "0.25",
    )
    # then
    assert (out / "model.safetensors").is_file()
    assert (out / "meta.json").is_file()
    assert trained["train"]["accuracy"] == 1.0
    # eval on held-out pairs in the prompt/chosen/rejected format
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {
                "prompt": f"\n\nHuman: {r.messages[0]['content']}\n\nAssistant:",
                "chosen": r.completions[r.groups[0][0]],
                "rejected": r.completions[r.groups[-1][0]],
            }
            for r in separable_rankings(6, seed=11)
        ],
    )
    metrics = run("eval", "--model", str(out), "--data", str(pairs))
    assert metrics["pairs"] == 6
    assert metrics["accuracy"] == 1.0
    assert {"mean_margin", "ece", "kendall_tau"} <= metrics.keys()
    scores = run(
        "score",
        "--model",
        str(out),
        "--prompt",
        "question 2?",
        "--completion",
        "well good",
        "--completion",
        "hmm bad",
    )
    assert len(scores) == 2
    assert scores[0] > scores[1]
