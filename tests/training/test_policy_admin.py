"""The admin side of policies: a policy run's reward and KL curves, samples of successive
policy versions side by side, and publishing the draft batch a sampling run wrote."""

from pathlib import Path

import pytest
from django.test import Client

from annotation.models import Completion, Prompt, PromptBatch
from annotation.roles import Role, user_set_role
from tests.factories import BatchFactory, UserFactory
from tests.training.policy_factories import promoted_policy
from training.models import ModelVersion, PolicySample, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client_(client: Client) -> Client:
    admin = UserFactory()
    user_set_role(user=admin, role=Role.ADMIN)
    client.force_login(admin)
    return client


def test_a_policy_run_page_draws_reward_and_kl_curves(admin_client_: Client) -> None:
    run = TrainingRun.objects.create(
        kind="policy",
        status="succeeded",
        metrics=[
            {
                "step": s,
                "reward": s / 10,
                "kl": s / 100,
                "kl_k3": s / 120,
                "policy_loss": -0.01,
                "value_loss": 1 / s,
                "response_length": 20.0,
                "sample": "<b>text</b>",
            }
            for s in range(1, 6)
        ],
    )

    page = admin_client_.get(f"/admin/training/trainingrun/{run.pk}/change/").content.decode()

    assert 'aria-label="reward"' in page
    assert 'aria-label="KL to the starting policy (nats per response)"' in page
    assert 'aria-label="losses"' in page
    # reward; kl and kl_k3; two losses; response length
    assert page.count("<polyline") == 6
    assert "<b>text</b>" not in page


def _sample(
    *,
    batch: PromptBatch,
    prompt_text: str,
    texts: list[str],
    version: ModelVersion | None,
    run: TrainingRun,
) -> None:
    prompt = Prompt.objects.create(
        batch=batch, text=prompt_text, messages=[{"role": "user", "content": prompt_text}]
    )
    for position, text in enumerate(texts):
        completion = Completion.objects.create(prompt=prompt, text=text, position=position)
        PolicySample.objects.create(
            completion=completion,
            run=run,
            model_version=version,
            policy="tiny" if version is None else version.artifact_path,
            is_reference=version is None,
        )


def test_samples_of_successive_policies_line_up_by_prompt(
    admin_client_: Client, tmp_path: Path
) -> None:
    # given two policy versions that each sampled the same probe prompt, the second one with
    # reference samples beside its own
    first = promoted_policy(tmp_path, seed=0)
    second = promoted_policy(tmp_path, seed=1)
    runs = [
        TrainingRun.objects.create(kind="sampling", status="succeeded", parent=version)
        for version in (first, second)
    ]
    round_1, round_2 = BatchFactory(status="draft"), BatchFactory(status="draft")
    _sample(
        batch=round_1,
        prompt_text="Name a colour.",
        texts=["blue", "red"],
        version=first,
        run=runs[0],
    )
    _sample(
        batch=round_2,
        prompt_text="Name a colour.",
        texts=["teal", "ochre"],
        version=second,
        run=runs[1],
    )
    _sample(
        batch=round_2,
        prompt_text="Name a colour.",
        texts=["<i>grey</i>"],
        version=None,
        run=runs[1],
    )
    _sample(batch=round_1, prompt_text="Only once?", texts=["yes"], version=first, run=runs[0])

    # when an admin opens the side-by-side page
    response = admin_client_.get("/admin/training/modelversion/samples/")

    # then one row per prompt, one column per version, the shared prompt first
    assert response.status_code == 200
    page = response.content.decode()
    header = page.index("<th>policy v1</th>")
    assert header < page.index("<th>policy v2</th>") < page.index("<th>reference</th>")
    row = page[page.index("Name a colour.") : page.index("Only once?")]
    assert row.index("blue") < row.index("teal") < row.index("&lt;i&gt;grey&lt;/i&gt;")
    assert "<i>grey</i>" not in page

    # and ?versions= picks the columns
    page = admin_client_.get("/admin/training/modelversion/samples/?versions=2").content.decode()
    assert "<th>policy v2</th>" in page
    assert "<th>policy v1</th>" not in page
    assert "Only once?" not in page


def test_the_registry_links_to_the_side_by_side_page(admin_client_: Client) -> None:
    page = admin_client_.get("/admin/training/modelversion/").content.decode()

    assert 'href="/admin/training/modelversion/samples/"' in page


def test_an_admin_publishes_a_draft_batch(admin_client_: Client) -> None:
    draft, closed = BatchFactory(status="draft"), BatchFactory(status="closed")

    response = admin_client_.post(
        "/admin/annotation/promptbatch/",
        {"action": "publish", "_selected_action": [draft.pk, closed.pk]},
    )

    assert response.status_code == 302
    draft.refresh_from_db()
    closed.refresh_from_db()
    assert draft.status == "published"
    assert closed.status == "closed"
