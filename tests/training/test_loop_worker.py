"""The training loop with real processes: a Celery worker on Redis trains, registers and
promotes reward models; SIGKILL and a Redis restart lose nothing and promote nothing half-made.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from annotation.roles import Role, user_set_role
from tests.factories import UserFactory
from tests.processes import CeleryWorker, RedisServer, wait_until
from tests.training.loop_factories import TINY_TRAIN, learnable_batch, rank_through_api
from training.models import ModelVersion, TrainingRun
from training.tasks import reap_stale_runs, retrain_if_due

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres")]


def _loop_env(artifacts: Path, **train: object) -> dict[str, str]:
    return {
        "RANKLOOP_ARTIFACT_ROOT": str(artifacts),
        "RANKLOOP_RETRAIN_MIN_NEW_COMPARISONS": "50",
        "RANKLOOP_REWARD_HELDOUT_FRACTION": "0.25",
        "RANKLOOP_REWARD_TRAIN": json.dumps({**TINY_TRAIN, **train}),
        "RANKLOOP_RUN_HEARTBEAT_TIMEOUT": "3",
    }


@pytest.fixture
def loop(settings, tmp_path: Path) -> dict[str, str]:
    env = _loop_env(tmp_path / "artifacts")
    settings.ARTIFACT_ROOT = Path(env["RANKLOOP_ARTIFACT_ROOT"])
    settings.RETRAIN_MIN_NEW_COMPARISONS = 50
    settings.REWARD_HELDOUT_FRACTION = 0.25
    settings.REWARD_TRAIN_DEFAULTS = TINY_TRAIN
    settings.RUN_HEARTBEAT_TIMEOUT = 3
    return env


def _run(kind: str = "reward") -> TrainingRun | None:
    return TrainingRun.objects.filter(kind=kind).order_by("-id").first()


StartWorker = Callable[..., CeleryWorker]


def test_the_worker_retrains_registers_promotes_and_the_api_scores(
    start_worker: StartWorker, loop: dict[str, str]
) -> None:
    worker = start_worker(env=loop)
    _, accepted = rank_through_api(annotators=2, prompts=12)
    assert accepted == 24  # 72 comparisons, above the threshold of 50

    retrain_if_due.delay()

    wait_until(
        lambda: ModelVersion.objects.filter(status="promoted").exists(),
        timeout=300,
        what=lambda: f"a promoted model; worker log:\n{worker.log[-3000:]}",
    )
    run = _run()
    assert run is not None
    assert run.status == "succeeded"
    assert run.worker.startswith("test-")
    version = ModelVersion.objects.get(status="promoted")
    assert version.run_id == run.pk
    researcher = UserFactory()
    user_set_role(user=researcher, role=Role.RESEARCHER)
    client = APIClient()
    client.force_authenticate(researcher)
    response = client.post(
        "/api/v1/reward/score/",
        {"prompt": "question 0-3?", "completions": ["good", "bad"]},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["model_version"]["version"] == version.version


def test_a_worker_killed_mid_training_registers_nothing_and_the_retry_succeeds(
    start_worker: StartWorker, loop: dict[str, str]
) -> None:
    learnable_batch(prompts=24)
    slow = start_worker(env=loop, name="slow")
    call_command("train_reward", "--set", "epochs=100")
    run = _run()
    assert run is not None

    # when the worker dies (SIGKILL, as an OOM kill would) in the middle of training
    wait_until(
        lambda: TrainingRun.objects.get(pk=run.pk).progress > 0.02,
        timeout=180,
        what="training to start",
    )
    slow.kill()
    run.refresh_from_db()
    assert run.status == "running"
    assert run.progress < 1

    # then nothing of it is registered, and the reaper fails it and retries once
    assert ModelVersion.objects.count() == 0
    time.sleep(3.5)  # past the heartbeat timeout
    fresh = start_worker(env=loop, name="fresh")
    reap_stale_runs.delay()
    wait_until(
        lambda: TrainingRun.objects.get(pk=run.pk).status == "failed",
        timeout=60,
        what="the dead run to fail",
    )
    retry = TrainingRun.objects.get(retry_of=run)
    wait_until(
        lambda: TrainingRun.objects.get(pk=retry.pk).status not in TrainingRun.ACTIVE,
        timeout=300,
        what=lambda: f"the retry to finish; log:\n{fresh.log[-3000:]}",
    )
    retry.refresh_from_db()
    assert retry.status == "succeeded", retry.error
    version = ModelVersion.objects.get()
    assert version.run_id == retry.pk
    assert version.status == "promoted"
    assert "no heartbeat" in TrainingRun.objects.get(pk=run.pk).error


def test_training_queued_while_redis_is_down_runs_once_it_is_back(
    start_worker: StartWorker, broker: RedisServer, loop: dict[str, str]
) -> None:
    learnable_batch(prompts=24)
    worker = start_worker(env=loop)
    # given Redis is down: annotators still rank through the API
    broker.stop()
    _, accepted = rank_through_api(annotators=1, prompts=4, seed=9)
    assert accepted == 4
    # and a run is queued meanwhile
    started = time.monotonic()
    call_command("train_reward")
    assert time.monotonic() - started < 60
    run = _run()
    assert run is not None
    assert run.status == "queued"

    # when Redis comes back (empty: it keeps nothing on disk) and the reaper runs
    broker.start()
    time.sleep(3.5)
    wait_until(lambda: _send_reaper(), timeout=60, what="the reaper to be sent")

    # then the run is trained
    wait_until(
        lambda: TrainingRun.objects.get(pk=run.pk).status == "succeeded",
        timeout=300,
        what=lambda: f"the run to succeed; log:\n{worker.log[-3000:]}",
    )
    assert ModelVersion.objects.get().status == "promoted"


def _send_reaper() -> bool:
    try:
        reap_stale_runs.delay()
    except Exception:
        return False
    return True
