"""The training registry: runs claimed once, one active run and one promoted model per kind."""

import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from training import services
from training.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


def _artifact(root: Path, name: str, weights: bytes = b"weights") -> Path:
    folder = root / name
    folder.mkdir()
    (folder / services.WEIGHTS_FILE).write_bytes(weights)
    (folder / services.META_FILE).write_text(json.dumps({"name": name}))
    return folder


def _version(tmp_path: Path, name: str) -> ModelVersion:
    return services.model_version_register(
        kind="reward",
        artifact_dir=_artifact(tmp_path, name, name.encode()),
        metrics={"accuracy": 0.6},
    )


def test_a_second_active_run_of_a_kind_is_refused() -> None:
    first = services.run_create(kind="reward")

    with pytest.raises(services.RunAlreadyActive) as excinfo:
        services.run_create(kind="reward")

    assert excinfo.value.existing == first
    assert services.run_create(kind="policy").kind == "policy"
    assert TrainingRun.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres", "tasks_queued_not_run")
def test_racing_run_creations_make_one_run() -> None:
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def create() -> None:
        try:
            barrier.wait()
            services.run_create(kind="reward")
            outcomes.append("created")
        except services.RunAlreadyActive:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(outcomes) == ["created"] + ["refused"] * 5
    assert TrainingRun.objects.get().status == TrainingRun.Status.QUEUED


def test_a_run_is_claimed_once() -> None:
    run = services.run_create(kind="reward")

    claimed = services.run_claim(run_id=run.pk, worker="gpu-1")
    again = services.run_claim(run_id=run.pk, worker="gpu-2")

    assert claimed is not None
    assert claimed.status == TrainingRun.Status.RUNNING
    assert claimed.worker == "gpu-1"
    assert again is None


def test_reporting_on_a_cancelled_run_tells_the_worker_to_stop() -> None:
    run = services.run_claim(run_id=services.run_create(kind="reward").pk, worker="w")
    assert services.run_report(run=run, progress=0.5, metrics=[{"step": 1, "loss": 0.7}])

    services.run_cancel(run=run)

    assert not services.run_report(run=run, progress=0.6, metrics=[{"step": 2, "loss": 0.6}])
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED
    assert run.metrics == [{"step": 1, "loss": 0.7}]


def test_a_stale_run_is_failed_and_retried_once() -> None:
    run = services.run_claim(
        run_id=services.run_create(kind="reward", config={"lr": 1}).pk, worker="w"
    )
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    retries = services.runs_reap_stale(timeout_seconds=600)

    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert "no heartbeat" in run.error
    assert [r.retry_of_id for r in retries] == [run.pk]
    assert retries[0].config == {"lr": 1}
    # the retry dies too: it is failed, not retried again
    retry = services.run_claim(run_id=retries[0].pk, worker="w")
    TrainingRun.objects.filter(pk=retry.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    assert services.runs_reap_stale(timeout_seconds=600) == []
    assert TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE).count() == 0


def test_a_fresh_heartbeat_is_not_reaped() -> None:
    services.run_claim(run_id=services.run_create(kind="reward").pk, worker="w")

    assert services.runs_reap_stale(timeout_seconds=600) == []
    assert TrainingRun.objects.get().status == TrainingRun.Status.RUNNING


def test_a_half_written_artifact_is_never_registered(tmp_path: Path) -> None:
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / services.WEIGHTS_FILE).write_bytes(b"partial")  # meta.json never written

    with pytest.raises(services.ArtifactIncomplete):
        services.model_version_register(kind="reward", artifact_dir=folder, metrics={})

    assert ModelVersion.objects.count() == 0


def test_versions_are_numbered_per_kind(tmp_path: Path) -> None:
    assert [_version(tmp_path, f"m{i}").version for i in range(3)] == [1, 2, 3]
    policy = services.model_version_register(
        kind="policy", artifact_dir=_artifact(tmp_path, "p"), metrics={}
    )
    assert policy.version == 1


def test_promotion_keeps_one_promoted_model_per_kind(tmp_path: Path) -> None:
    v1, v2 = _version(tmp_path, "a"), _version(tmp_path, "b")

    services.model_promote(version=v1)
    services.model_promote(version=v2, reason="better accuracy")

    v1.refresh_from_db()
    v2.refresh_from_db()
    assert (v1.status, v2.status) == ("archived", "promoted")
    assert v2.status_reason == "better accuracy"


def test_the_database_refuses_two_promoted_models_of_a_kind(tmp_path: Path) -> None:
    v1, v2 = _version(tmp_path, "a"), _version(tmp_path, "b")
    services.model_promote(version=v1)

    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=v2.pk).update(status=ModelVersion.Status.PROMOTED)


def test_a_tampered_artifact_cannot_be_promoted(tmp_path: Path) -> None:
    version = _version(tmp_path, "a")
    (Path(version.artifact_path) / services.WEIGHTS_FILE).write_bytes(b"swapped")

    with pytest.raises(services.ArtifactIncomplete, match="sha256"):
        services.model_promote(version=version)

    version.refresh_from_db()
    assert version.status == ModelVersion.Status.CANDIDATE


def test_rollback_walks_back_through_earlier_promotions(tmp_path: Path) -> None:
    v1, v2, v3 = (_version(tmp_path, name) for name in "abc")
    for version in (v1, v2, v3):
        services.model_promote(version=version)

    assert services.model_rollback(kind="reward").pk == v2.pk
    assert services.model_rollback(kind="reward").pk == v1.pk
    with pytest.raises(ModelVersion.DoesNotExist, match="no earlier promoted"):
        services.model_rollback(kind="reward")
    assert ModelVersion.objects.get(status="promoted").pk == v1.pk
