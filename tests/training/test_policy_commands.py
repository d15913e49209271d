"""train_policy and sample_batch from a shell: clear errors that write nothing, and a sampling
run (in-process, no broker) that mixes in the reference policy's samples."""

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from annotation.models import Completion, PromptBatch
from tests.training.policy_factories import (
    TINY_PPO,
    promoted_policy,
    promoted_reward_model,
    prompt_batch,
)
from training.models import ModelVersion, PolicySample, TrainingRun
from training.ppo import load_policy

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_ppo(settings, tmp_path: Path) -> Path:
    settings.ARTIFACT_ROOT = tmp_path / "artifacts"
    settings.POLICY_PPO_DEFAULTS = TINY_PPO
    return tmp_path


def _nothing_written() -> None:
    assert TrainingRun.objects.count() == 0


def test_train_policy_without_a_promoted_reward_model_says_so(tiny_ppo: Path) -> None:
    prompt_batch(name="chat")

    with pytest.raises(CommandError, match="no reward model is promoted"):
        call_command("train_policy", "--batch", "chat")
    _nothing_written()


def test_train_policy_names_every_unknown_batch(tiny_ppo: Path) -> None:
    promoted_reward_model(tiny_ppo)
    prompt_batch(name="chat")

    with pytest.raises(CommandError, match="no such batch: missing, other"):
        call_command("train_policy", "--batch", "chat", "--batch", "missing", "--batch", "other")
    _nothing_written()


def test_train_policy_refuses_an_unknown_setting_and_a_step_count_below_one(
    tiny_ppo: Path,
) -> None:
    promoted_reward_model(tiny_ppo)
    prompt_batch(name="chat")

    with pytest.raises(CommandError, match="--set 'lr=1'"):
        call_command("train_policy", "--set", "lr=1")
    with pytest.raises(CommandError, match="--steps must be at least 1"):
        call_command("train_policy", "--steps", "0")
    _nothing_written()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres")
def test_train_policy_runs_in_process_and_the_next_run_starts_from_the_promoted_policy(
    tiny_ppo: Path,
) -> None:
    promoted_reward_model(tiny_ppo)
    prompt_batch(name="chat", prompts=4)
    out = StringIO()

    call_command("train_policy", "--steps", "2", "--wait", "--no-progress", stdout=out)

    first = TrainingRun.objects.get(kind="policy")
    assert first.status == "succeeded", first.error
    assert first.parent is None  # the base policy, "tiny"
    assert json.loads(out.getvalue().split("\n", 1)[1])["steps"] == 2
    v1 = first.model_version
    assert v1.status == "promoted"

    call_command("train_policy", "--steps", "1", "--wait", "--no-progress", stdout=StringIO())

    second = TrainingRun.objects.exclude(pk=first.pk).get(kind="policy")
    assert second.status == "succeeded", second.error
    assert second.parent == v1
    _, _, meta = load_policy(second.model_version.artifact_path)
    assert meta["parent"] == "policy v1"
    assert meta["base"] == v1.artifact_path
    v1.refresh_from_db()
    assert (v1.status, second.model_version.status) == ("archived", "promoted")


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres")
def test_a_policy_past_the_kl_limit_stays_a_candidate(tiny_ppo: Path, settings) -> None:
    settings.POLICY_MAX_KL = -1.0  # any KL is too much
    promoted_reward_model(tiny_ppo)
    prompt_batch(name="chat", prompts=4)

    call_command("train_policy", "--steps", "1", "--wait", "--no-progress", stdout=StringIO())

    version = ModelVersion.objects.get(kind="policy")
    assert version.status == "candidate"
    assert "exceeds -1.0" in version.status_reason
    with pytest.raises(CommandError, match="no policy is promoted"):
        call_command("sample_batch", "--from-batch", "chat", "--name", "round-2")


def test_sample_batch_without_a_promoted_policy_says_so(tiny_ppo: Path) -> None:
    prompt_batch(name="chat")

    with pytest.raises(CommandError, match="no policy is promoted"):
        call_command("sample_batch", "--from-batch", "chat", "--name", "round-2")
    _nothing_written()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--from-batch", "missing"], "no such batch: missing"),
        (["--from-batch", "chat", "--k", "20"], "between 2 and 16"),
        (["--from-batch", "chat", "--k", "1"], "between 2 and 16"),
        (["--from-batch", "chat", "--top-p", "0"], "top-p"),
        ([], "give --from-batch NAME or --prompts FILE"),
    ],
)
def test_sample_batch_refuses_bad_options(
    tiny_ppo: Path, arguments: list[str], message: str
) -> None:
    promoted_policy(tiny_ppo)
    prompt_batch(name="chat")

    with pytest.raises(CommandError, match=message):
        call_command("sample_batch", "--name", "round-2", *arguments)
    _nothing_written()
    assert not PromptBatch.objects.filter(name="round-2").exists()


def test_sample_batch_refuses_a_name_already_taken(tiny_ppo: Path) -> None:
    promoted_policy(tiny_ppo)
    prompt_batch(name="chat")

    with pytest.raises(CommandError, match="a batch named 'chat' already exists"):
        call_command("sample_batch", "--from-batch", "chat", "--name", "chat")
    _nothing_written()


def test_sample_batch_lists_every_bad_line_of_a_prompt_file(tiny_ppo: Path) -> None:
    promoted_policy(tiny_ppo)
    prompts = tiny_ppo / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "fine"}\n'
        "not json\n"
        '{"messages": [{"role": "assistant", "content": "hi"}]}\n'
        '{"prompt": "fine"}\n'
    )

    with pytest.raises(CommandError) as error:
        call_command("sample_batch", "--prompts", str(prompts), "--name", "round-2")
    message = str(error.value)
    assert "3 bad line(s)" in message
    assert "prompts.jsonl:2: not valid JSON" in message
    assert "prompts.jsonl:3: the last message must be the user's" in message
    assert "prompts.jsonl:4: duplicate of line 1" in message
    _nothing_written()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("postgres")
def test_sample_batch_from_a_prompt_file_mixes_in_the_reference_policy(tiny_ppo: Path) -> None:
    # given a promoted policy (PPO moved it off its base, a tiny model from another seed)
    policy = promoted_policy(tiny_ppo, seed=1)
    prompts = tiny_ppo / "prompts.jsonl"
    prompts.write_text(
        '{"prompt": "Name a colour.", "id": "colour"}\n'
        '{"prompt": "\\n\\nHuman: Hi\\n\\nAssistant: Hello\\n\\nHuman: Name a fruit.'
        '\\n\\nAssistant:"}\n'
    )

    call_command(
        "sample_batch",
        "--prompts",
        str(prompts),
        "--name",
        "probe",
        "--k",
        "3",
        "--reference",
        "2",
        "--max-new-tokens",
        "6",
        "--temperature",
        "1.0",
        "--wait",
        "--no-progress",
        stdout=StringIO(),
    )

    run = TrainingRun.objects.get(kind="sampling")
    assert run.status == "succeeded", run.error
    batch = PromptBatch.objects.get(name="probe")
    assert (batch.status, batch.k_min, batch.k_max) == ("draft", 5, 5)
    fruit = batch.prompts.exclude(external_id="colour").get()
    assert [m["role"] for m in fruit.messages] == ["user", "assistant", "user"]
    for prompt in batch.prompts.all():
        sources = list(prompt.completions.values_list("source", flat=True))
        assert sources == [f"policy v{policy.version}"] * 3 + ["reference tiny"] * 2
    reference = PolicySample.objects.filter(is_reference=True)
    assert reference.count() == 4
    assert set(reference.values_list("model_version", flat=True)) == {None}
    assert PolicySample.objects.filter(model_version=policy).count() == 6
    assert Completion.objects.filter(prompt__batch=batch).count() == 10
