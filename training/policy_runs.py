"""A policy run: PPO against the promoted reward model on the prompts of chosen batches,
starting from the promoted policy (or the configured base policy when none is promoted yet).

The worker trains into `policy/run-N.partial/`, renames it to `policy/run-N/` only once
`training.ppo.save_policy` has written every file, registers it (sha256 of the weights) and
promotes it unless its KL to the policy it started from ran past `RANKLOOP_POLICY_MAX_KL`. The
reward each step is the promoted reward model's score, so a rising reward curve says the policy
learnt what that model likes; whether people like it too is what the next batch, sampled from
the promoted policy and ranked by annotators, finds out.
"""

import math
import os
import shutil
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from annotation.models import Prompt, PromptBatch
from training import services
from training.models import ModelVersion, TrainingRun
from training.progress import RunReporter


class NoPromotedRewardModel(Exception):
    pass


class UnknownBatch(Exception):
    pass


def promoted(kind: str) -> ModelVersion | None:
    return ModelVersion.objects.filter(kind=kind, status=ModelVersion.Status.PROMOTED).first()


def batches_check(names: list[str]) -> None:
    """Raises UnknownBatch naming every batch that does not exist."""
    known = set(PromptBatch.objects.filter(name__in=names).values_list("name", flat=True))
    if missing := sorted(set(names) - known):
        raise UnknownBatch(f"no such batch: {', '.join(missing)}")


def policy_prompts(*, batches: list[str]) -> list[Any]:
    """The prompts of `batches` (every batch when empty) as the policy reads them: the chat
    messages, or the text when a prompt has none. Ordered by id, so a seed repeats a run."""
    rows = Prompt.objects.order_by("id").values_list("messages", "text")
    if batches:
        rows = rows.filter(batch__name__in=batches)
    return [messages or text for messages, text in rows]


def ppo_config_fields() -> set[str]:
    from training.ppo import PPOConfig

    return {field.name for field in fields(PPOConfig)}


@transaction.atomic
def policy_run_create(
    *,
    batches: list[str] | None = None,
    ppo_config: dict[str, Any] | None = None,
    created_by: User | None = None,
) -> TrainingRun:
    """Queue a PPO run on the prompts of `batches` (all batches when none are named).

    Raises NoPromotedRewardModel, UnknownBatch (naming each missing batch), ValueError for a
    PPO setting that does not exist or batches without prompts, and services.RunAlreadyActive.
    """
    names = list(batches or [])
    batches_check(names)
    reward = promoted("reward")
    if reward is None:
        raise NoPromotedRewardModel(
            "no reward model is promoted: train one first (manage.py train_reward)"
        )
    overrides = {**settings.POLICY_PPO_DEFAULTS, **(ppo_config or {})}
    if unknown := sorted(set(overrides) - ppo_config_fields()):
        raise ValueError(f"unknown PPO settings: {', '.join(unknown)}")
    if not policy_prompts(batches=names)[:1]:
        raise ValueError(f"no prompts in {', '.join(names) if names else 'any batch'}")
    start = promoted("policy")
    config = {
        "batches": names,
        "reward_model": {"id": reward.pk, "version": reward.version, "path": reward.artifact_path},
        # The base policy: where the chain of policies starts, and the reference samples'
        # policy in sampling runs. The run itself starts from `parent` when there is one.
        "base_policy": overrides.get("policy", "tiny"),
        "ppo": overrides,
    }
    return services.run_create(
        kind=TrainingRun.Kind.POLICY, config=config, parent=start, created_by=created_by
    )


def policy_run_execute(run: TrainingRun) -> dict[str, Any]:
    """Train, register and (maybe) promote. Called by the worker holding the claimed run."""
    from training.ppo import PPOConfig, resolve_device, reward_fn_from_spec, train_ppo

    reward = ModelVersion.objects.get(pk=run.config["reward_model"]["id"])
    if services.artifact_sha256(Path(reward.artifact_path)) != reward.sha256:
        raise services.ArtifactIncomplete(f"{reward} no longer matches its recorded sha256")
    start = run.parent
    overrides = dict(run.config.get("ppo", {}))
    if start is not None:
        overrides["policy"] = start.artifact_path
    config = PPOConfig(**{**overrides, "progress": False})
    prompts = policy_prompts(batches=run.config.get("batches", []))
    if not prompts:
        raise ValueError("the run's batches have no prompts left")
    services.run_report(
        run=run,
        progress=0.0,
        log=f"{len(prompts)} prompts; reward model v{reward.version}; "
        f"starting from {f'policy v{start.version}' if start else config.policy}",
    )
    report = RunReporter(run)

    root = Path(settings.ARTIFACT_ROOT) / "policy"
    partial, final = root / f"run-{run.pk}.partial", root / f"run-{run.pk}"
    shutil.rmtree(partial, ignore_errors=True)
    metrics = train_ppo(
        config,
        prompts,
        reward_fn_from_spec(reward.artifact_path, device=str(resolve_device(config.device))),
        out_dir=partial,
        progress_callback=lambda row: report(row["step"], config.steps, row),
        parent=f"policy v{start.version}" if start else config.policy,
    )
    report.flush(progress=1.0)
    # The artifact appears under its final name only once completely written.
    os.replace(partial, final)
    headline = _headline(metrics, reward)
    version = services.model_version_register(
        kind="policy", artifact_dir=final, metrics=headline, run=run
    )
    decision = _promote_unless_drifted(version)
    return {
        "model_version": version.pk,
        "version": version.version,
        "decision": decision,
        "config": asdict(config),
        **headline,
    }


def _headline(metrics: list[dict[str, Any]], reward: ModelVersion) -> dict[str, Any]:
    """The first and last steps' reward, and the KL over the last quarter of the steps."""
    tail = metrics[-max(1, len(metrics) // 4) :]
    return {
        "steps": len(metrics),
        "reward_model_version": reward.version,
        "reward_first": metrics[0]["reward"] if metrics else None,
        "reward_last": sum(row["reward"] for row in tail) / len(tail) if metrics else None,
        "kl_last": sum(row["kl"] for row in tail) / len(tail) if metrics else None,
        "response_length_last": (
            sum(row["response_length"] for row in tail) / len(tail) if metrics else None
        ),
    }


def _promote_unless_drifted(version: ModelVersion) -> str:
    kl = version.metrics.get("kl_last")
    reward = version.metrics.get("reward_last")
    limit = settings.POLICY_MAX_KL
    if kl is None or reward is None or not math.isfinite(kl) or not math.isfinite(reward):
        reason = "kept as candidate: the run logged no finite reward and KL"
    elif kl > limit:
        reason = f"kept as candidate: KL {kl:.2f} nats to its starting policy exceeds {limit}"
    else:
        reason = f"promoted: KL {kl:.2f} nats to its starting policy (limit {limit})"
        services.model_promote(version=version, reason=reason)
        return reason
    ModelVersion.objects.filter(pk=version.pk).update(status_reason=reason)
    return reason
