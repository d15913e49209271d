"""Held-out accuracy of reward models on HH-RLHF, next to two baselines on the same split.

    python bench/reward_accuracy.py                       # baselines + the default configuration
    python bench/reward_accuracy.py --runs head top-n:1 top-n:2 --base minilm

Data: ../shared/data/hh_rlhf_{helpful,harmless}_base_test.jsonl (4,642 pairs), split 90/10 BY
PROMPT with a fixed seed. Models train on the 90% (their own validation split is carved from it,
never from the test side) and are scored once on the 10%. Baselines:

- "the longer completion wins" (characters; equal lengths count half);
- bag-of-words logistic regression on count(chosen) - count(rejected), no intercept, so the model
  is antisymmetric; L2 strength chosen on a prompt-level validation split of the training side.

Prints one line per run (accuracy, ECE, wall time) and, with --json, writes everything.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.data import Ranking, load_rankings, split_by_prompt
from rewards.evaluate import evaluate_scores
from rewards.train import TrainConfig, fit_reward_model

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ["hh_rlhf_helpful_base_test.jsonl", "hh_rlhf_harmless_base_test.jsonl"]
WORD = re.compile(r"[a-z']+")


def length_baseline(test: list[Ranking]) -> dict:
    return evaluate_scores(test, [[float(len(c)) for c in r.completions] for r in test])


def bow_features(rankings: list[Ranking], vocab: dict[str, int]) -> torch.Tensor:
    """(P, V) count(chosen) - count(rejected), log-scaled so a long reply does not dominate."""
    x = torch.zeros(len(rankings), len(vocab))
    for row, r in enumerate(rankings):
        for sign, text in ((1.0, r.completions[0]), (-1.0, r.completions[1])):
            for word, n in Counter(WORD.findall(text.lower())).items():
                if word in vocab:
                    x[row, vocab[word]] += sign * float(torch.log1p(torch.tensor(n)))
    return x


def fit_logistic(x: torch.Tensor, l2: float, steps: int = 200) -> torch.Tensor:
    """Weights of p(chosen wins) = sigmoid(w . x), every label 1 (x is chosen - rejected)."""
    w = torch.zeros(x.shape[1], requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = -torch.nn.functional.logsigmoid(x @ w).mean() + l2 * w.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()


def bow_baseline(train: list[Ranking], test: list[Ranking], seed: int) -> dict:
    counts = Counter(w for r in train for c in r.completions for w in set(WORD.findall(c.lower())))
    vocab = {w: i for i, (w, n) in enumerate(counts.most_common()) if n >= 2}
    fit, val = split_by_prompt(train, 0.1, seed)
    x_fit, x_val = bow_features(fit, vocab), bow_features(val, vocab)
    best = max(
        (1e-4, 3e-4, 1e-3, 3e-3, 1e-2),
        key=lambda l2: float((x_val @ fit_logistic(x_fit, l2) > 0).float().mean()),
    )
    w = fit_logistic(bow_features(train, vocab), best)
    margins = bow_features(test, vocab) @ w  # (P,) score(chosen) - score(rejected)
    metrics = evaluate_scores(test, [[float(m), 0.0] for m in margins])
    return {**metrics, "l2": best, "vocab": len(vocab)}


def parse_run(spec: str) -> tuple[str, int]:
    """ "head", "full", "top-n:2" -> (mode, top_n)."""
    mode, _, n = spec.partition(":")
    return mode, int(n) if n else 2


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--data-dir", type=Path, default=DATA)
    parser.add_argument(
        "--runs", nargs="*", default=["default"], help="head, top-n:N, full, default"
    )
    parser.add_argument("--base", default=None, help="override the base of every run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--head-lr", type=float, default=None)
    parser.add_argument("--max-length", type=int, default=None)
    parser.add_argument("--encoding", choices=["joint", "separate"], default=None)
    parser.add_argument("--cache-dir", default="/tmp/rankloop-reward-cache")
    parser.add_argument("--no-baselines", action="store_true")
    parser.add_argument(
        "--baseline-seeds", type=int, default=0, help="only the baselines, on this many splits"
    )
    parser.add_argument("--out-dir", type=Path, help="save each run's model and metrics.jsonl here")
    parser.add_argument("--json", type=Path, help="append results here, one JSON object a line")
    args = parser.parse_args()

    missing = [f for f in FILES if not (args.data_dir / f).is_file()]
    if missing:
        sys.exit(f"data missing under {args.data_dir}: {missing}")
    rankings = [r for f in FILES for r in load_rankings(args.data_dir / f)]
    if args.baseline_seeds:
        # how much the baselines move with the split: 464 held-out pairs is a small sample
        for seed in range(args.baseline_seeds):
            train, test = split_by_prompt(rankings, 0.1, seed)
            length, bow = length_baseline(test), bow_baseline(train, test, seed)
            print(f"seed {seed}: longer wins {length['accuracy']:.3f}, ", end="")
            print(f"bag of words {bow['accuracy']:.3f}", flush=True)
        return
    train, test = split_by_prompt(rankings, 0.1, args.seed)
    print(f"{len(rankings)} pairs: {len(train)} train, {len(test)} held-out (split by prompt)")
    results = []

    def report(name: str, metrics: dict, seconds: float, **extra: object) -> None:
        print(
            f"| {name} | {metrics['accuracy']:.3f} | {metrics['ece']:.3f} | {seconds:.0f} s |",
            flush=True,
        )
        results.append({"run": name, "test": metrics, "seconds": seconds, **extra})

    if not args.no_baselines:
        started = time.perf_counter()
        report("longer completion wins", length_baseline(test), time.perf_counter() - started)
        started = time.perf_counter()
        report(
            "bag-of-words logistic regression",
            bow_baseline(train, test, args.seed),
            time.perf_counter() - started,
        )

    for spec in args.runs:
        settings: dict = {"seed": args.seed, "cache_dir": args.cache_dir}
        if spec != "default":
            settings["mode"], settings["top_n"] = parse_run(spec)
        overrides = {
            "base": args.base,
            "epochs": args.epochs,
            "lr": args.lr,
            "head_lr": args.head_lr,
            "max_length": args.max_length,
            "encoding": args.encoding,
        }
        settings.update({k: v for k, v in overrides.items() if v is not None})
        config = TrainConfig(**settings)
        started = time.perf_counter()
        name = f"{config.base} {config.mode} {config.encoding}" + (
            f" N={config.top_n}" if config.mode == "top-n" else ""
        )
        out = args.out_dir / name.replace(" ", "-").replace("=", "") if args.out_dir else None
        model, metrics = fit_reward_model(
            config, train, out_dir=out
        )  # validation carved from train
        seconds = time.perf_counter() - started
        scores = [model.score(r.messages, r.completions, normalize=False) for r in test]
        report(
            name,
            evaluate_scores(test, scores),
            seconds,
            config=asdict(config),
            val=metrics["val"],
            val_per_epoch=metrics["val_per_epoch"],
            train=metrics["train"],
        )
    if args.json:
        with open(args.json, "a") as f:
            for row in results:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
