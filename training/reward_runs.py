"""A reward-model run: freeze a snapshot, train on its training prompts, register the model,
and promote it when it is not worse than the promoted one on the held-out prompts.

The held-out prompts are fixed: every snapshot is split with the same seed and fraction
(`annotation.snapshots`: a prompt's side depends only on its text), so the prompts that judge a
model never train any model, and two models are compared on the same prompts.
"""

import logging
import os
import shutil
from collections import defaultdict
from itertools import combinations
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction

from annotation.exports import Split
from annotation.models import Comparison
from annotation.snapshots import snapshot_create, snapshot_get, snapshot_rankings
from training import services
from training.models import ModelVersion, TrainingRun
from training.progress import RunReporter

log = logging.getLogger(__name__)


@transaction.atomic
def reward_run_create(
    *,
    batches: list[str] | None = None,
    train_config: dict[str, Any] | None = None,
    created_by: User | None = None,
) -> TrainingRun:
    """Freeze a snapshot of the rankings (of `batches`, or all) and queue a reward run on it.

    Raises services.RunAlreadyActive, and then keeps no snapshot, when a reward run is active.
    """
    comparison_max_id = Comparison.objects.order_by("-id").values_list("id", flat=True).first() or 0
    snapshot = snapshot_create(
        name="reward training",
        batches=batches,
        split_test=settings.REWARD_HELDOUT_FRACTION,
        seed=settings.REWARD_HELDOUT_SEED,
        created_by=created_by,
    )
    config = {
        "comparison_max_id": comparison_max_id,
        "batches": batches or [],
        "train": {**settings.REWARD_TRAIN_DEFAULTS, **(train_config or {})},
    }
    promoted = ModelVersion.objects.filter(
        kind="reward", status=ModelVersion.Status.PROMOTED
    ).first()
    return services.run_create(
        kind=TrainingRun.Kind.REWARD,
        config=config,
        parent=promoted,
        created_by=created_by,
        snapshot=snapshot,
    )


def retrain_if_due() -> TrainingRun | None:
    """Queue a reward run when enough comparisons arrived since the last run's snapshot."""
    last = TrainingRun.objects.filter(kind=TrainingRun.Kind.REWARD).order_by("-created_at").first()
    since = int(last.config.get("comparison_max_id", 0)) if last else 0
    new = Comparison.objects.filter(id__gt=since).count()
    if new < settings.RETRAIN_MIN_NEW_COMPARISONS:
        return None
    try:
        run = reward_run_create(batches=last.config.get("batches") if last else None)
    except services.RunAlreadyActive:
        return None
    log.info("queued reward run %s: %s new comparisons since #%s", run.pk, new, since)
    return run


def reward_run_execute(run: TrainingRun) -> dict[str, Any]:
    """Train, register and (maybe) promote. Called by the worker holding the claimed run."""
    from rewards.data import rankings_from_records
    from rewards.train import TrainConfig, train_reward_model

    if run.snapshot_id is None:
        raise ValueError(f"run {run.pk} has no dataset snapshot to train on")
    snapshot = snapshot_get(snapshot_id=run.snapshot_id)
    train = rankings_from_records(_usable(snapshot_rankings(snapshot=snapshot, split=Split.TRAIN)))
    heldout = rankings_from_records(_usable(snapshot_rankings(snapshot=snapshot, split=Split.TEST)))
    if not train:
        raise ValueError(f"snapshot {snapshot.pk} has no training rankings with comparisons")
    # Features of the frozen layers persist between runs: a retrain on a grown data set only
    # embeds the completions it has not seen.
    cache_dir = str(Path(settings.ARTIFACT_ROOT) / "feature-cache")
    config = TrainConfig(**{"cache_dir": cache_dir, **run.config.get("train", {})})
    services.run_report(
        run=run, progress=0.0, log=f"{len(train)} training and {len(heldout)} held-out rankings"
    )

    report = RunReporter(run)

    root = Path(settings.ARTIFACT_ROOT) / "reward"
    partial, final = root / f"run-{run.pk}.partial", root / f"run-{run.pk}"
    shutil.rmtree(partial, ignore_errors=True)
    # Without held-out rankings, the library holds out a share of the training prompts.
    metrics = train_reward_model(
        config, train, heldout or None, out_dir=partial, progress_callback=report
    )
    report.flush(progress=1.0)
    # The artifact appears under its final name only once completely written.
    os.replace(partial, final)
    headline = {**_headline(metrics), "human_agreement": human_pairwise_agreement(heldout)}
    version = services.model_version_register(
        kind="reward", artifact_dir=final, metrics=headline, run=run
    )
    decision = _promote_if_not_worse(version, heldout)
    return {
        "model_version": version.pk,
        "version": version.version,
        "decision": decision,
        **_headline(metrics),
    }


def _promote_if_not_worse(version: ModelVersion, heldout: list[Any]) -> str:
    current = ModelVersion.objects.filter(
        kind="reward", status=ModelVersion.Status.PROMOTED
    ).first()
    new_accuracy = version.metrics.get("accuracy")
    floor = settings.REWARD_MIN_ACCURACY
    if new_accuracy is not None and new_accuracy < floor:
        reason = (
            f"kept as candidate: held-out accuracy {new_accuracy:.3f} is below the floor {floor}"
        )
        ModelVersion.objects.filter(pk=version.pk).update(status_reason=reason)
        return reason
    if current is None:
        services.model_promote(version=version, reason="first reward model")
        return "promoted: first reward model"
    old_accuracy = _accuracy_on(current, heldout) if heldout else current.metrics.get("accuracy")
    tolerance = settings.REWARD_PROMOTION_TOLERANCE
    if new_accuracy is None or old_accuracy is None:
        reason = "kept as candidate: no held-out accuracy to compare"
    elif new_accuracy >= old_accuracy - tolerance:
        reason = (
            f"promoted: held-out accuracy {new_accuracy:.3f} vs v{current.version}'s "
            f"{old_accuracy:.3f} (tolerance {tolerance})"
        )
        services.model_promote(version=version, reason=reason)
        return reason
    else:
        reason = (
            f"kept as candidate: held-out accuracy {new_accuracy:.3f} is below "
            f"v{current.version}'s {old_accuracy:.3f} by more than {tolerance}"
        )
    ModelVersion.objects.filter(pk=version.pk).update(status_reason=reason)
    return reason


def human_pairwise_agreement(rankings: list[Any]) -> float | None:
    """How often two annotators of the same prompt order a pair the same way: the ceiling a
    reward model's pairwise accuracy is read against. Pairs either of them tied are left out;
    None when no prompt has two rankings."""
    by_prompt: dict[tuple[str, tuple[str, ...]], list[list[int]]] = defaultdict(list)
    for ranking in rankings:
        by_prompt[(ranking.prompt_key, tuple(ranking.completions))].append(ranking.rank_of())
    agree = total = 0
    for ranks in by_prompt.values():
        for a, b in combinations(ranks, 2):
            for i, j in combinations(range(len(a)), 2):
                if min(a[i], a[j], b[i], b[j]) < 0 or a[i] == a[j] or b[i] == b[j]:
                    continue
                total += 1
                agree += (a[i] < a[j]) == (b[i] < b[j])
    return agree / total if total else None


def _accuracy_on(version: ModelVersion, rankings: list[Any]) -> float | None:
    from rewards.artifacts import load_reward_model
    from rewards.evaluate import evaluate_scores

    model = load_reward_model(version.artifact_path)
    scores = [model.score(r.messages, r.completions, normalize=False) for r in rankings]
    value = evaluate_scores(rankings, scores).get("accuracy")
    return float(value) if value is not None else None


def _headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The registry's summary of a training's metrics: held-out figures first."""
    val = metrics.get("val") or {}
    return {
        "accuracy": val.get("accuracy"),
        "ece": val.get("ece"),
        "mean_margin": val.get("mean_margin"),
        "kendall_tau": val.get("kendall_tau"),
        "heldout_pairs": val.get("pairs"),
        "train_accuracy": (metrics.get("train") or {}).get("accuracy"),
        "train_rankings": metrics.get("train_rankings"),
        "val_rankings": metrics.get("val_rankings"),
        "train_seconds": metrics.get("train_seconds"),
    }


def _usable(records: Any) -> Any:
    """Rankings that carry comparisons: "none acceptable" rankings teach no preference."""
    for record in records:
        if record.get("not_rankable"):
            continue
        yield record
