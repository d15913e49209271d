"""Grouped K-wise loss vs flat pairwise loss: comparisons learned from per second.

    python bench/reward_batching.py [--k 9] [--seq-len 64] [--rounds 6] [--base tiny]

Synthetic rankings of K completions, every sequence exactly --seq-len tokens, same backbone.

- grouped (InstructGPT): a training step takes R rankings, scores their R*K completions once
  and learns from all R*C(K,2) pairs;
- flat: a training step takes pairs, scores 2 completions per pair, learns from one pair each.

Both steps push the same number of sequences through forward + backward (R*K), so the ratio of
comparisons per second should approach C(K,2) / (K/2) = K - 1 (8 for K = 9). The two loops
alternate round by round so that load from other processes on a shared machine hits both alike;
medians over rounds are reported.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModel, BertConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rewards.data import Ranking
from rewards.loss import pair_matrix, pairwise_loss, ranking_loss
from rewards.model import RewardModel, build_reward_model, tiny_tokenizer


def backbone(name: str) -> RewardModel:
    if name == "tiny":
        return build_reward_model("tiny")
    # all-MiniLM-L6-v2's shape with random weights: speed does not depend on the values
    config = BertConfig(
        vocab_size=len(tiny_tokenizer()),
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
    )
    return RewardModel(AutoModel.from_config(config), tiny_tokenizer(), base=name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--k", type=int, default=9)
    parser.add_argument("--rankings-per-step", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="steps per round and loop")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--base", default="bert-minilm-shape", help="bert-minilm-shape or tiny")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = backbone(args.base).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    k, r = args.k, args.rankings_per_step
    n_seq = r * k  # sequences per step, both loops
    vocab = model.backbone.config.vocab_size
    ids = torch.randint(10, vocab, (n_seq, args.seq_len))  # (N, T)
    mask = torch.ones_like(ids)
    rankings = [Ranking([], [""] * k, [[i] for i in torch.randperm(k).tolist()]) for _ in range(r)]
    win, tie = pair_matrix(rankings, k)  # (R, K, K)
    pairs_per_step = n_seq // 2

    def grouped_step() -> int:
        rewards = model(ids, mask).view(r, k)  # (R, K): each completion scored once
        ranking_loss(rewards, win, tie).backward()
        optimizer.step()
        optimizer.zero_grad()
        return int(win.sum())  # R * C(K, 2) comparisons

    def flat_step() -> int:
        rewards = model(ids, mask).view(pairs_per_step, 2)  # (P, 2): chosen, rejected
        pairwise_loss(rewards[:, 0], rewards[:, 1]).backward()
        optimizer.step()
        optimizer.zero_grad()
        return pairs_per_step

    rates: dict[str, list[float]] = {"grouped": [], "flat": []}
    grouped_step(), flat_step()  # warm-up
    for _ in range(args.rounds):
        for name, step in (("grouped", grouped_step), ("flat", flat_step)):
            started = time.perf_counter()
            comparisons = sum(step() for _ in range(args.steps))
            rates[name].append(comparisons / (time.perf_counter() - started))
    grouped, flat = statistics.median(rates["grouped"]), statistics.median(rates["flat"])
    print(
        f"backbone {args.base}, K={k}, {n_seq} sequences of {args.seq_len} tokens per step, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"grouped (K-wise, {r} rankings/step): {grouped:.1f} comparisons/s")
    print(f"flat (pairwise, {pairs_per_step} pairs/step): {flat:.1f} comparisons/s")
    print(f"ratio: {grouped / flat:.2f} (target >= {0.8 * (k - 1):.1f})")


if __name__ == "__main__":
    main()
