"""Only safetensors are ever loaded: a pickle where a checkpoint should be is refused on every
path that reads or promotes one, even when an attacker also rewrote the recorded hashes. The
reward model's and the policy's own loaders are tested in tests/rewards/test_reward_artifacts.py
and tests/training/test_ppo.py (`test_a_pickle_is_refused_even_with_a_matching_hash`); here: the
scoring API, the admin's promote action, `promote_model`, and the reward loader once more with a
payload that would leave a trace if it ever ran.
"""

import hashlib
import json
import pickle
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from annotation.roles import Role
from rewards.artifacts import FORMAT, ArtifactError, load_reward_model
from tests.hardening.world import make_user, token_client
from training.models import ModelVersion

pytestmark = pytest.mark.django_db


class Trace:
    """Unpickling this writes a file: proof that a loader ran pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


def pickle_artifact(folder: Path, marker: Path) -> str:
    """A reward-model directory whose weights are a pickle and whose meta.json vouches for it."""
    folder.mkdir(parents=True)
    weights = folder / "model.safetensors"
    weights.write_bytes(pickle.dumps({"head.weight": Trace(marker)}))
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    (folder / "meta.json").write_text(
        json.dumps({"format": FORMAT, "sha256": {"model.safetensors": digest}})
    )
    return digest


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "unpickled.txt"


def test_the_reward_loader_refuses_a_pickle_without_running_it(tmp_path: Path, marker: Path):
    pickle_artifact(tmp_path / "model", marker)

    with pytest.raises(ArtifactError, match="pickle"):
        load_reward_model(tmp_path / "model")

    assert not marker.exists()


def test_the_scoring_api_refuses_a_promoted_pickle_with_a_clear_503(tmp_path: Path, marker: Path):
    # given: the registry's promoted reward model was swapped for a pickle, hashes and all
    digest = pickle_artifact(tmp_path / "model", marker)
    ModelVersion.objects.create(
        kind="reward", version=1, artifact_path=str(tmp_path / "model"), sha256=digest,
        status=ModelVersion.Status.PROMOTED,
    )  # fmt: skip
    researcher = token_client(make_user("rita", Role.RESEARCHER))

    # when
    response = researcher.post(
        "/api/v1/reward/score/", {"prompt": "q?", "completions": ["a", "b"]}, format="json"
    )

    # then
    assert response.status_code == 503
    assert "pickle" in response.json()["detail"]
    assert not marker.exists()


def test_the_admin_will_not_promote_a_pickle(tmp_path: Path, marker: Path) -> None:
    digest = pickle_artifact(tmp_path / "model", marker)
    version = ModelVersion.objects.create(
        kind="reward", version=1, artifact_path=str(tmp_path / "model"), sha256=digest
    )
    staff = Client()
    staff.force_login(make_user("adam", Role.ADMIN))

    response = staff.post(
        "/admin/training/modelversion/",
        {"action": "promote", "_selected_action": [version.pk]},
        follow=True,
    )

    assert response.status_code == 200
    assert "pickle" in response.content.decode()
    version.refresh_from_db()
    assert version.status == ModelVersion.Status.CANDIDATE
    assert not marker.exists()


def test_promote_model_will_not_promote_a_pickle(tmp_path: Path, marker: Path) -> None:
    digest = pickle_artifact(tmp_path / "model", marker)
    version = ModelVersion.objects.create(
        kind="reward", version=1, artifact_path=str(tmp_path / "model"), sha256=digest
    )

    with pytest.raises(CommandError, match="pickle"):
        call_command("promote_model", str(version.pk))

    version.refresh_from_db()
    assert version.status == ModelVersion.Status.CANDIDATE
    assert not marker.exists()
