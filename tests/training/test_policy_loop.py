"""Closing the loop with real processes: a Celery worker on Redis trains a policy with PPO
against the promoted reward model, registers and promotes it, then samples a draft batch whose
completions name that policy."""

from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command

from annotation.models import Completion, PromptBatch
from tests.processes import CeleryWorker
from tests.training.policy_factories import TINY_PPO, promoted_reward_model, prompt_batch
from training.models import ModelVersion, PolicySample, TrainingRun
from training.ppo import load_policy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("postgres")]


def test_a_worker_trains_a_policy_and_samples_a_draft_batch_it_wrote(
    start_worker: Callable[..., CeleryWorker], settings, tmp_path: Path
) -> None:
    # given a promoted reward model, a batch of prompts and a worker on the gpu queue
    artifacts = tmp_path / "artifacts"
    settings.ARTIFACT_ROOT = artifacts
    settings.POLICY_PPO_DEFAULTS = TINY_PPO
    reward = promoted_reward_model(tmp_path)
    batch = prompt_batch(prompts=6, overlap=2, guidelines="Be kind.")
    worker = start_worker(env={"RANKLOOP_ARTIFACT_ROOT": str(artifacts)})

    # when a policy run is queued and followed to its end
    out = StringIO()
    call_command(
        "train_policy", "--batch", batch.name, "--steps", "3", "--wait", "--no-progress", stdout=out
    )

    # then the worker trained it and the registry holds the promoted policy
    run = TrainingRun.objects.get(kind="policy")
    assert run.status == "succeeded", f"{run.error}\n{worker.log[-3000:]}"
    assert run.worker.startswith("test-")
    assert run.config["reward_model"]["id"] == reward.pk
    assert [row["step"] for row in run.metrics] == [1, 2, 3]
    assert all({"reward", "kl", "entropy", "clip_frac"} <= row.keys() for row in run.metrics)
    policy = ModelVersion.objects.get(kind="policy")
    assert policy.run_id == run.pk
    assert policy.status == "promoted", policy.status_reason
    assert Path(policy.artifact_path) == artifacts / "policy" / f"run-{run.pk}"
    assert not (artifacts / "policy" / f"run-{run.pk}.partial").exists()
    _, _, meta = load_policy(policy.artifact_path)  # every file's sha256 checks out
    assert meta["steps"] == 3
    assert '"decision": "promoted' in out.getvalue()

    # when the promoted policy samples the batch's prompts into a new batch
    call_command(
        "sample_batch",
        "--from-batch",
        batch.name,
        "--k",
        "3",
        "--name",
        "round-2",
        "--max-new-tokens",
        "8",
        "--wait",
        "--no-progress",
        stdout=StringIO(),
    )

    # then the worker wrote a draft batch whose every completion names that policy
    sampling = TrainingRun.objects.get(kind="sampling")
    assert sampling.status == "succeeded", f"{sampling.error}\n{worker.log[-3000:]}"
    assert sampling.worker.startswith("test-")
    drafted = PromptBatch.objects.get(name="round-2")
    assert drafted.status == "draft"
    assert (drafted.k_min, drafted.k_max, drafted.overlap) == (3, 3, 2)
    assert drafted.guidelines == "Be kind."
    assert sorted(drafted.prompts.values_list("text", flat=True)) == sorted(
        batch.prompts.values_list("text", flat=True)
    )
    completions = Completion.objects.filter(prompt__batch=drafted)
    assert completions.count() == 18
    assert set(completions.values_list("source", flat=True)) == {f"policy v{policy.version}"}
    samples = PolicySample.objects.filter(completion__prompt__batch=drafted)
    assert samples.count() == 18
    assert set(samples.values_list("model_version", flat=True)) == {policy.pk}
    assert set(samples.values_list("run", flat=True)) == {sampling.pk}
    assert sampling.summary["batch"] == "round-2"
