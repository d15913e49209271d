"""The promoted reward model, loaded once per process and reloaded when the promotion changes.

Each call costs one indexed query (which version is promoted?); the weights are read, and
their sha256 checked, only when that answer changes.
"""

import threading
from dataclasses import dataclass
from typing import Any

from training.models import ModelVersion


class NoPromotedModel(Exception):
    pass


class PromotedModelRefused(NoPromotedModel):
    """The promoted model's artifact failed its checks (hash, safetensors): not loaded."""


@dataclass(frozen=True)
class LoadedModel:
    version: ModelVersion
    model: Any  # rewards.model.RewardModel


_lock = threading.Lock()
_loaded: LoadedModel | None = None


def promoted_reward_model() -> LoadedModel:
    global _loaded
    promoted = ModelVersion.objects.filter(
        kind="reward", status=ModelVersion.Status.PROMOTED
    ).first()
    if promoted is None:
        raise NoPromotedModel(
            "No reward model is promoted yet: train one (manage.py train_reward) "
            "or promote a candidate."
        )
    current = _loaded
    if current is not None and current.version.pk == promoted.pk:
        return current
    with _lock:
        if _loaded is None or _loaded.version.pk != promoted.pk:
            from rewards.artifacts import ArtifactError, load_reward_model

            try:
                model = load_reward_model(promoted.artifact_path)
            except (ArtifactError, OSError) as exc:
                raise PromotedModelRefused(
                    f"The promoted reward model {promoted} cannot be loaded: {exc}"
                ) from exc
            _loaded = LoadedModel(version=promoted, model=model)
        return _loaded


def reward_scores(
    *, messages: list[dict[str, str]], completions: list[str]
) -> tuple[ModelVersion, list[float]]:
    """Normalised rewards of `completions` as answers to the chat `messages`."""
    loaded = promoted_reward_model()
    with _lock:  # a torch module is not safe to call from several threads at once
        scores = loaded.model.score(messages, completions)
    return loaded.version, scores
