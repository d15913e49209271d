"""Training tasks in a real Celery worker process on Redis."""

from datetime import timedelta

from django.utils import timezone

from tests.processes import CeleryWorker, wait_until
from training import services
from training.models import TrainingRun
from training.tasks import reap_stale_runs, run_training


def _status(run: TrainingRun) -> str:
    run.refresh_from_db()
    return run.status


def test_the_worker_reaps_a_run_whose_heartbeat_stopped(celery_worker: CeleryWorker) -> None:
    # given a run claimed by a worker that then went silent an hour ago
    run = TrainingRun.objects.create(kind="policy", status="running", worker="gone@host")
    TrainingRun.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))

    # when the periodic reaper runs in the worker
    reap_stale_runs.delay()

    # then the run is failed and retried once
    wait_until(lambda: _status(run) == "failed", what="the stale run to be failed", timeout=30)
    retry = TrainingRun.objects.get(retry_of=run)
    assert retry.kind == "policy"
    assert "no heartbeat from worker 'gone@host'" in TrainingRun.objects.get(pk=run.pk).error


def test_a_duplicated_message_does_nothing_to_a_claimed_run(celery_worker: CeleryWorker) -> None:
    run = TrainingRun.objects.create(kind="policy")
    services.run_claim(run_id=run.pk, worker="first@host")

    result = run_training.delay(run.pk)

    assert result.id
    wait_until(
        lambda: "not claimed (status running)" in celery_worker.log,
        what="the worker to skip",
        timeout=30,
    )
    run.refresh_from_db()
    assert (run.status, run.worker) == ("running", "first@host")
