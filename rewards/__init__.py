"""The reward model as plain PyTorch: no Django, so a Celery worker, the command line and a
notebook run the same code.

    from rewards import TrainConfig, load_rankings, train_reward_model, load_reward_model
    metrics = train_reward_model(TrainConfig(base="minilm"), load_rankings("pairs.jsonl"), out_dir="rm")
    load_reward_model("rm").score("prompt", ["completion a", "completion b"])  # -> [float, float]
"""

from rewards.artifacts import load_reward_model
from rewards.data import Ranking, load_rankings, rankings_from_records, split_by_prompt
from rewards.train import TrainConfig, fit_reward_model, train_reward_model

__all__ = [
    "Ranking",
    "TrainConfig",
    "fit_reward_model",
    "load_rankings",
    "load_reward_model",
    "rankings_from_records",
    "split_by_prompt",
    "train_reward_model",
]
