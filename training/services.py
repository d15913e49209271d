"""Writes to the training registry: creating and claiming runs, reporting progress, registering
finished models, promotion and rollback.

Runs are claimed with a conditional update (`queued -> running`), so a redelivered or
duplicated Celery message finds its run already claimed and does nothing.
"""

import contextlib
import hashlib
import logging
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import F, Max
from django.utils import timezone

from annotation.models import DatasetSnapshot
from training.models import ModelVersion, TrainingRun

log = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
META_FILE = "meta.json"


class RunAlreadyActive(Exception):
    def __init__(self, existing: TrainingRun) -> None:
        super().__init__(f"{existing.kind} run {existing.pk} is already {existing.status}")
        self.existing = existing


class ArtifactIncomplete(Exception):
    """The artifact folder lacks its weights or its meta.json: it was never fully written."""


def run_create(
    *,
    kind: str,
    config: dict[str, Any] | None = None,
    parent: ModelVersion | None = None,
    created_by: User | None = None,
    retry_of: TrainingRun | None = None,
    snapshot: DatasetSnapshot | None = None,
) -> TrainingRun:
    """Queue a run and enqueue its task once the transaction commits.

    Raises RunAlreadyActive when a run of this kind is queued or running: the database holds
    at most one, so two racing callers create one run between them.
    """
    try:
        with transaction.atomic():
            run = TrainingRun.objects.create(
                kind=kind,
                config=config or {},
                parent=parent,
                created_by=created_by,
                retry_of=retry_of,
                snapshot=snapshot,
            )
    except IntegrityError:
        existing = TrainingRun.objects.filter(kind=kind, status__in=TrainingRun.ACTIVE).first()
        if existing is None:
            raise
        raise RunAlreadyActive(existing) from None
    transaction.on_commit(lambda: _enqueue(run.pk))
    return run


def run_claim(*, run_id: int, worker: str) -> TrainingRun | None:
    """Move a queued run to running for `worker`; None when someone else already has it."""
    now = timezone.now()
    claimed = TrainingRun.objects.filter(pk=run_id, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.RUNNING, worker=worker, started_at=now, heartbeat_at=now
    )
    return TrainingRun.objects.get(pk=run_id) if claimed else None


def run_report(
    *, run: TrainingRun, progress: float, metrics: list[dict[str, Any]] | None = None, log: str = ""
) -> bool:
    """Heartbeat with progress, new metric rows and log lines. Returns False when the run is no
    longer running (cancelled, or reaped as stale), so the worker can stop."""
    run.progress = progress
    if metrics:
        run.metrics = [*run.metrics, *metrics]
    if log:
        run.log += log if log.endswith("\n") else log + "\n"
    updated = TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
        progress=progress, metrics=run.metrics, log=run.log, heartbeat_at=timezone.now()
    )
    return bool(updated)


def run_succeed(*, run: TrainingRun, summary: dict[str, Any]) -> None:
    TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.RUNNING).update(
        status=TrainingRun.Status.SUCCEEDED,
        summary=summary,
        progress=1.0,
        finished_at=timezone.now(),
    )


def run_fail(*, run: TrainingRun, error: str) -> None:
    TrainingRun.objects.filter(pk=run.pk, status__in=TrainingRun.ACTIVE).update(
        status=TrainingRun.Status.FAILED, error=error, finished_at=timezone.now()
    )


def run_cancel(*, run: TrainingRun) -> bool:
    return bool(
        TrainingRun.objects.filter(pk=run.pk, status__in=TrainingRun.ACTIVE).update(
            status=TrainingRun.Status.CANCELLED, finished_at=timezone.now()
        )
    )


def runs_reap_stale(*, timeout_seconds: int) -> list[TrainingRun]:
    """Fail running runs whose worker stopped reporting, and retry each once.

    Returns the retries created. A run that is itself a retry is not retried again.
    """
    cutoff = timezone.now() - timedelta(seconds=timeout_seconds)
    retries = []
    stale = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING, heartbeat_at__lt=cutoff)
    for run in stale:
        with transaction.atomic():
            failed = TrainingRun.objects.filter(
                pk=run.pk, status=TrainingRun.Status.RUNNING
            ).update(
                status=TrainingRun.Status.FAILED,
                error=f"no heartbeat from worker {run.worker!r} for {timeout_seconds} s",
                finished_at=timezone.now(),
            )
            if not failed or run.retry_of_id is not None:
                continue
            # Another run of this kind was queued meanwhile: it replaces the retry.
            with contextlib.suppress(RunAlreadyActive):
                retries.append(
                    run_create(
                        kind=run.kind,
                        config=run.config,
                        parent=run.parent,
                        retry_of=run,
                        snapshot=run.snapshot,
                    )
                )
    return retries


def artifact_sha256(artifact_dir: Path) -> str:
    weights = artifact_dir / WEIGHTS_FILE
    if not weights.is_file() or not (artifact_dir / META_FILE).is_file():
        raise ArtifactIncomplete(f"{artifact_dir} lacks {WEIGHTS_FILE} or {META_FILE}")
    # A pickle in place of the weights is refused here too, so it is never promoted (by the
    # loop, the admin, promote_model or a rollback) even when its recorded hash matches.
    from rewards.artifacts import ArtifactError, refuse_pickle  # rewards imports torch

    try:
        refuse_pickle(weights)
    except ArtifactError as exc:
        raise ArtifactIncomplete(str(exc)) from exc
    digest = hashlib.sha256()
    with weights.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@transaction.atomic
def model_version_register(
    *, kind: str, artifact_dir: Path, metrics: dict[str, Any], run: TrainingRun | None = None
) -> ModelVersion:
    """Register a completely written artifact as a candidate, with the next version number."""
    sha256 = artifact_sha256(artifact_dir)
    # Lock the kind's rows so that two registrations cannot take the same number.
    list(ModelVersion.objects.select_for_update().filter(kind=kind).values_list("pk", flat=True))
    latest = ModelVersion.objects.filter(kind=kind).aggregate(latest=Max("version"))["latest"] or 0
    return ModelVersion.objects.create(
        kind=kind,
        version=latest + 1,
        run=run,
        artifact_path=str(artifact_dir),
        sha256=sha256,
        metrics=metrics,
    )


@transaction.atomic
def model_promote(*, version: ModelVersion, reason: str = "") -> ModelVersion:
    """Make `version` the promoted model of its kind; the previous one is archived."""
    locked = ModelVersion.objects.select_for_update().get(pk=version.pk)
    if locked.sha256 != artifact_sha256(Path(locked.artifact_path)):
        raise ArtifactIncomplete(f"{locked} no longer matches its recorded sha256")
    ModelVersion.objects.filter(kind=locked.kind, status=ModelVersion.Status.PROMOTED).exclude(
        pk=locked.pk
    ).update(status=ModelVersion.Status.ARCHIVED)
    locked.status = ModelVersion.Status.PROMOTED
    locked.status_reason = reason
    locked.promoted_at = timezone.now()
    locked.save(update_fields=["status", "status_reason", "promoted_at"])
    return locked


@transaction.atomic
def model_rollback(*, kind: str) -> ModelVersion:
    """Archive the promoted model of `kind` and promote the one promoted before it."""
    current = (
        ModelVersion.objects.select_for_update()
        .filter(kind=kind, status=ModelVersion.Status.PROMOTED)
        .first()
    )
    if current is None:
        raise ModelVersion.DoesNotExist(f"no {kind} model is promoted")
    previous = (
        ModelVersion.objects.filter(
            kind=kind,
            status=ModelVersion.Status.ARCHIVED,
            promoted_at__isnull=False,
            rolled_back_at__isnull=True,
        )
        .order_by(F("promoted_at").desc())
        .first()
    )
    if previous is None:
        raise ModelVersion.DoesNotExist(f"no earlier promoted {kind} model to roll back to")
    current.status = ModelVersion.Status.ARCHIVED
    current.status_reason = f"rolled back to v{previous.version}"
    current.rolled_back_at = timezone.now()
    current.save(update_fields=["status", "status_reason", "rolled_back_at"])
    return model_promote(version=previous, reason=f"rollback from v{current.version}")


def runs_requeue_unclaimed(*, older_than_seconds: int) -> list[int]:
    """Send the task again for queued runs no worker claimed in time: their message was lost
    (the broker was down when they were queued, or restarted without persistence). A duplicate
    message is harmless: only one can claim the run."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    stale = list(
        TrainingRun.objects.filter(
            status=TrainingRun.Status.QUEUED, created_at__lt=cutoff
        ).values_list("pk", flat=True)
    )
    for run_id in stale:
        _enqueue(run_id)
    return stale


def _enqueue(run_id: int) -> None:
    from training.tasks import run_training  # tasks import services; resolve at call time

    try:
        run_training.delay(run_id)
    except Exception:
        # The run stays queued and the reaper sends it again once the broker is back: a request
        # that queued a run never fails because Redis is down.
        log.exception("could not enqueue run %s; it stays queued and will be re-sent", run_id)
