"""Registered tiny models for the policy and sampling tests, written through the real services:
a reward model and a policy saved by the libraries, hashed, registered and promoted."""

from pathlib import Path

from annotation.models import Prompt, PromptBatch
from rewards.artifacts import save_reward_model
from rewards.model import RewardModel, load_base
from tests.factories import BatchFactory
from training import services
from training.models import ModelVersion
from training.ppo import PolicyWithValue, PPOConfig, save_policy, tiny_policy

# PPO small enough for a CPU test: a few steps of 4 short responses.
TINY_PPO = {
    "policy": "tiny",
    "batch_size": 4,
    "minibatch_size": 2,
    "ppo_epochs": 1,
    "max_new_tokens": 8,
    "max_prompt_tokens": 64,
    "device": "cpu",
}


def promoted_reward_model(root: Path) -> ModelVersion:
    """A tiny (untrained) reward model, registered and promoted."""
    backbone, tokenizer = load_base("tiny", seed=0)
    model = RewardModel(backbone, tokenizer, base="tiny", max_length=64)
    out = save_reward_model(model, root / "reward-v1", config={}, metrics={}, data_sha256="")
    version = services.model_version_register(kind="reward", artifact_dir=out, metrics={})
    return services.model_promote(version=version, reason="test")


def promoted_policy(root: Path, seed: int = 0) -> ModelVersion:
    """A tiny policy as saved by PPO, registered and promoted."""
    lm, tokenizer = tiny_policy(seed=seed)
    out = save_policy(PolicyWithValue(lm), tokenizer, root / f"policy-{seed}", PPOConfig())
    version = services.model_version_register(kind="policy", artifact_dir=out, metrics={})
    return services.model_promote(version=version, reason="test")


def prompt_batch(*, prompts: int = 6, name: str = "", **fields: object) -> PromptBatch:
    batch = BatchFactory(**({"name": name} if name else {}), **fields)
    for i in range(prompts):
        Prompt.objects.create(
            batch=batch,
            text=f"Say something nice about {i}.",
            external_id=f"p{i}",
            messages=[{"role": "user", "content": f"Say something nice about {i}."}],
        )
    return batch
