"""Preference data a tiny reward model can learn, written through the real services."""

import random

from rest_framework.test import APIClient

from annotation.models import Completion, Prompt, PromptBatch
from annotation.roles import Role, user_set_role
from annotation.services import ranking_submit
from tests.factories import BatchFactory, UserFactory

# A tiny reward-model configuration that learns the data below in seconds on a CPU.
TINY_TRAIN = {
    "base": "tiny",
    "mode": "full",
    "max_length": 32,
    "epochs": 3,
    "batch_size": 4,
    "lr": 3e-3,
    "head_lr": 3e-2,
    "embed_batch_size": 16,
}


def learnable_batch(
    *, prompts: int, annotators: int = 1, seed: int = 0, name: str = ""
) -> PromptBatch:
    """Prompts with K=3 completions where "good" beats "okay" beats "bad", ranked by humans."""
    rng = random.Random(seed)
    # Closed: its rankings are training data, but no annotator is offered its prompts.
    batch = BatchFactory(
        k_min=2, k_max=9, status=PromptBatch.Status.CLOSED, **({"name": name} if name else {})
    )
    people = [UserFactory() for _ in range(annotators)]
    for i in range(prompts):
        prompt = Prompt.objects.create(
            batch=batch,
            text=f"question {seed}-{i}?",
            external_id=f"q{seed}-{i}",
            messages=[{"role": "user", "content": f"question {seed}-{i}?"}],
        )
        words = ["good", "okay", "bad"]
        order = list(range(3))
        rng.shuffle(order)
        completions = [
            Completion.objects.create(
                prompt=prompt,
                position=position,
                text=" ".join([*rng.choices(["so", "well", "hmm"], k=rng.randint(0, 2)), words[j]]),
            )
            for position, j in enumerate(order)
        ]
        best_first = sorted(completions, key=lambda c: words.index(c.text.split()[-1]))
        for person in people:
            ranking_submit(prompt=prompt, groups=[c.pk for c in best_first], annotator=person)
    return batch


def rank_through_api(*, annotators: int, prompts: int, seed: int = 0) -> tuple[PromptBatch, int]:
    """A published batch ranked by `annotators` people through the annotation API, the way the
    ranking page does it: next assignment, then its ranking. Returns the batch and the number
    of rankings the API accepted."""
    rng = random.Random(seed)
    batch = BatchFactory(k_min=3, k_max=3, overlap=annotators)
    words = ["good", "okay", "bad"]
    for i in range(prompts):
        prompt = Prompt.objects.create(
            batch=batch, text=f"question {seed}-{i}?", external_id=f"api{seed}-{i}"
        )
        for position, word in enumerate(rng.sample(words, 3)):
            Completion.objects.create(
                prompt=prompt, position=position, text=f"{rng.choice(['so', 'well'])} {word}"
            )
    accepted = 0
    for _ in range(annotators):
        person = UserFactory()
        user_set_role(user=person, role=Role.ANNOTATOR)
        client = APIClient()
        client.force_authenticate(person)
        while (response := client.get("/api/v1/assignments/next/")).status_code == 200:
            assignment = response.json()
            shown = assignment["completions"]
            best_first = sorted(shown, key=lambda c: words.index(c["text"].split()[-1]))
            submitted = client.post(
                f"/api/v1/assignments/{assignment['id']}/ranking/",
                {"order": [c["id"] for c in best_first]},
                format="json",
            )
            assert submitted.status_code == 201, submitted.content
            accepted += 1
        assert response.status_code == 204, response.content
    return batch, accepted
