"""The training admin: curves drawn from a run's metrics, "train now", promotion."""

import json
from pathlib import Path

import pytest
from django.test import Client

from annotation.roles import Role, user_set_role
from tests.factories import UserFactory
from tests.training.loop_factories import TINY_TRAIN, learnable_batch
from training import services
from training.models import ModelVersion, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client: Client) -> Client:
    admin = UserFactory()
    user_set_role(user=admin, role=Role.ADMIN)
    client.force_login(admin)
    return client


def test_a_run_page_draws_its_loss_and_accuracy_curves(admin_client_: Client) -> None:
    run = TrainingRun.objects.create(
        kind="reward",
        status="succeeded",
        metrics=[{"step": s, "loss": 1 / s, "pair_accuracy": 0.5 + s / 40} for s in range(1, 11)],
    )

    page = admin_client_.get(f"/admin/training/trainingrun/{run.pk}/change/").content.decode()

    assert 'aria-label="losses"' in page
    assert 'aria-label="metrics"' in page
    assert page.count("<polyline") == 2
    assert ">loss<" in page
    assert ">pair_accuracy<" in page


def test_a_metric_name_cannot_inject_markup(admin_client_: Client) -> None:
    run = TrainingRun.objects.create(
        kind="reward", status="succeeded", metrics=[{"step": 1, "<script>x</script>": 1.0}]
    )

    page = admin_client_.get(f"/admin/training/trainingrun/{run.pk}/change/").content.decode()

    assert "<script>x</script>" not in page
    assert "&lt;script&gt;" in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres")
def test_train_now_trains_in_process_without_a_broker(
    admin_client_: Client, settings, tmp_path: Path
) -> None:
    settings.ARTIFACT_ROOT = tmp_path
    settings.REWARD_TRAIN_DEFAULTS = TINY_TRAIN
    settings.REWARD_HELDOUT_FRACTION = 0.25
    learnable_batch(prompts=16)

    response = admin_client_.post("/admin/training/trainingrun/train-now/", follow=True)

    assert response.status_code == 200
    run = TrainingRun.objects.get()
    assert run.status == "succeeded", run.error
    assert ModelVersion.objects.get().status == "promoted"
    assert f"Queued reward run {run.pk}." in response.content.decode()


def test_the_promote_action_promotes_one_model(admin_client_: Client, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"w")
    (folder / "meta.json").write_text(json.dumps({}))
    version = services.model_version_register(kind="reward", artifact_dir=folder, metrics={})

    admin_client_.post(
        "/admin/training/modelversion/",
        {"action": "promote", "_selected_action": [version.pk]},
    )

    version.refresh_from_db()
    assert version.status == "promoted"
    assert version.status_reason == "promoted by an admin"
