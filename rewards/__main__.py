"""Command line: train, evaluate and query reward models.

    python -m rewards train --data FILE.jsonl --base tiny|minilm|PATH --out DIR \
        [--mode head|top-n|full] [--epochs N] [--lr LR] ...  (every TrainConfig field)
    python -m rewards eval --model DIR --data FILE.jsonl      # prints the metrics as JSON
    python -m rewards score --model DIR --prompt TEXT --completion TEXT [--completion TEXT ...]

Data files hold rankings (groups or best-first indices) or prompt/chosen/rejected pairs.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from typing import Any

from rewards.artifacts import load_reward_model
from rewards.data import load_rankings
from rewards.evaluate import evaluate_scores
from rewards.train import TrainConfig, train_reward_model


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One --option per TrainConfig field, defaulting to the dataclass default."""
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = TrainConfig.__dataclass_fields__[f.name].default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        elif f.name == "cache_dir":
            parser.add_argument(flag, default=default)
        elif f.name == "epochs":
            parser.add_argument(flag, type=int, default=default, help="default: 30 head, 1 others")
        elif f.name == "encoding":
            parser.add_argument(
                flag,
                choices=["joint", "separate"],
                default=None,
                help="default: separate, joint in top-n mode",
            )
        elif isinstance(default, tuple):
            parser.add_argument(flag, type=float, nargs="+", default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rewards",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a reward model on a JSONL file")
    train.add_argument("--data", required=True, help="rankings or pairs JSONL")
    train.add_argument("--val-data", help="held-out JSONL (default: a prompt-level split)")
    train.add_argument("--out", required=True, help="directory for the artifact")
    _add_config_options(train)

    evaluate = commands.add_parser("eval", help="metrics of a saved model on a JSONL file")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("--data", required=True)

    score = commands.add_parser("score", help="reward of completions of one prompt")
    score.add_argument("--model", required=True)
    score.add_argument("--prompt", required=True)
    score.add_argument("--completion", action="append", required=True)
    score.add_argument("--raw", action="store_true", help="unnormalised rewards")

    args = parser.parse_args(argv)
    result: Any
    if args.command == "train":
        config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
        val = load_rankings(args.val_data) if args.val_data else None
        metrics = train_reward_model(config, load_rankings(args.data), val, out_dir=args.out)
        result = {"out": args.out, "train": metrics["train"], "val": metrics["val"]}
    elif args.command == "eval":
        model = load_reward_model(args.model)
        rankings = load_rankings(args.data)
        scores = [model.score(r.messages, r.completions, normalize=False) for r in rankings]
        result = evaluate_scores(rankings, scores)
    else:
        model = load_reward_model(args.model)
        result = model.score(args.prompt, args.completion, normalize=not args.raw)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
