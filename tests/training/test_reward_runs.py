"""Reward runs from the loop, in-process (Celery eager, as on a laptop)."""

import threading
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from rest_framework.test import APIClient

from annotation.models import DatasetSnapshot
from annotation.roles import Role, user_set_role
from tests.factories import UserFactory
from tests.training.loop_factories import TINY_TRAIN, learnable_batch
from training.models import ModelVersion, TrainingRun
from training.reward_runs import human_pairwise_agreement, retrain_if_due

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres")]


@pytest.fixture(autouse=True)
def loop_settings(settings, tmp_path: Path) -> None:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.RETRAIN_MIN_NEW_COMPARISONS = 50
    settings.REWARD_TRAIN_DEFAULTS = TINY_TRAIN
    settings.REWARD_HELDOUT_FRACTION = 0.25


def _researcher_client() -> APIClient:
    user = UserFactory()
    user_set_role(user=user, role=Role.RESEARCHER)
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_nothing_is_trained_before_enough_new_comparisons() -> None:
    learnable_batch(prompts=10)  # 30 comparisons, below 50

    assert retrain_if_due() is None
    assert TrainingRun.objects.count() == 0
    assert DatasetSnapshot.objects.count() == 0


def test_a_due_retrain_trains_registers_and_promotes_the_first_model() -> None:
    learnable_batch(prompts=24)  # 72 comparisons

    run = retrain_if_due()

    assert run is not None
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    version = ModelVersion.objects.get(run=run)
    assert (version.kind, version.version, version.status) == ("reward", 1, "promoted")
    assert version.status_reason == "first reward model"
    assert Path(version.artifact_path, "model.safetensors").is_file()
    assert not Path(version.artifact_path).with_name(f"run-{run.pk}.partial").exists()
    assert version.metrics["accuracy"] is not None
    assert version.metrics["val_rankings"] > 0  # judged on the held-out prompts
    assert "loss" in run.metrics[-1]
    assert run.summary["decision"] == "promoted: first reward model"
    assert run.snapshot is not None
    # nothing new since: not due again
    assert retrain_if_due() is None


def test_the_scoring_api_answers_with_the_promoted_version() -> None:
    client = _researcher_client()
    assert (
        client.post(
            "/api/v1/reward/score/", {"prompt": "q?", "completions": ["a"]}, format="json"
        ).status_code
        == 503
    )
    learnable_batch(prompts=24)
    retrain_if_due()
    version = ModelVersion.objects.get(status="promoted")

    response = client.post(
        "/api/v1/reward/score/",
        {"prompt": "question 0-1?", "completions": ["so good", "bad", "okay"]},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["model_version"] == {"id": version.pk, "version": 1}
    good, bad, okay = response.json()["scores"]
    assert good > okay > bad


def test_a_second_model_no_worse_on_the_same_held_out_prompts_is_promoted() -> None:
    learnable_batch(prompts=24, seed=0)
    first = retrain_if_due()
    learnable_batch(prompts=24, seed=1)

    second = retrain_if_due()

    assert second is not None
    second.refresh_from_db()
    assert second.status == "succeeded", second.error
    v1, v2 = ModelVersion.objects.get(run=first), ModelVersion.objects.get(run=second)
    assert v2.version == 2
    assert second.parent_id == v1.pk
    promoted = ModelVersion.objects.get(status="promoted")
    assert promoted.pk in (v1.pk, v2.pk)
    assert v2.status_reason.startswith(("promoted: held-out accuracy", "kept as candidate"))


def test_train_reward_command_trains_the_named_batch(capsys: pytest.CaptureFixture[str]) -> None:
    learnable_batch(prompts=16, name="mine")
    learnable_batch(prompts=16, name="other", seed=3)

    call_command("train_reward", "--batch", "mine", "--wait", "--no-progress")

    run = TrainingRun.objects.get()
    snapshot = DatasetSnapshot.objects.get(pk=run.snapshot_id)
    assert snapshot.manifest["batches"] == {"mine": 16}
    assert run.status == "succeeded"
    assert '"decision": "promoted: first reward model"' in capsys.readouterr().out


def test_train_reward_refuses_an_unknown_batch_and_queues_nothing() -> None:
    with pytest.raises(CommandError, match="no such batch: nope"):
        call_command("train_reward", "--batch", "nope")

    assert TrainingRun.objects.count() == 0


@pytest.mark.usefixtures("tasks_queued_not_run")
def test_two_retrain_if_due_calls_at_once_create_one_run_and_one_snapshot() -> None:
    learnable_batch(prompts=24)
    barrier = threading.Barrier(2)
    created: list[TrainingRun | None] = []

    def call() -> None:
        try:
            barrier.wait()
            created.append(retrain_if_due())
        finally:
            connection.close()

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len([run for run in created if run is not None]) == 1
    assert TrainingRun.objects.count() == 1
    # the loser's snapshot was rolled back with its run
    assert DatasetSnapshot.objects.count() == 1


def test_human_agreement_counts_pairs_two_annotators_order_alike() -> None:
    from rewards.data import Ranking as RankedCompletions

    chat = [{"role": "user", "content": "q"}]
    texts = ["a", "b", "c"]
    first = RankedCompletions(chat, texts, [[0], [1], [2]])
    second = RankedCompletions(chat, texts, [[0], [2], [1]])  # disagrees on (b, c) only
    tied = RankedCompletions(chat, texts, [[0, 1], [2]])  # its tie (a, b) is left out

    assert human_pairwise_agreement([first, second]) == pytest.approx(2 / 3)
    # first-second 2/3, first-tied 2/2, second-tied 1/2: 5 of 7
    assert human_pairwise_agreement([first, second, tied]) == pytest.approx(5 / 7)
    assert human_pairwise_agreement([first]) is None


def test_a_model_below_the_accuracy_floor_is_never_promoted(settings) -> None:
    settings.REWARD_MIN_ACCURACY = 1.01  # unreachable: even a perfect model stays a candidate
    learnable_batch(prompts=24)

    run = retrain_if_due()

    assert run is not None
    version = ModelVersion.objects.get(run=run)
    assert version.status == "candidate"
    assert "is below the floor 1.01" in version.status_reason
    client = _researcher_client()
    response = client.post(
        "/api/v1/reward/score/", {"prompt": "q?", "completions": ["a"]}, format="json"
    )
    assert response.status_code == 503
