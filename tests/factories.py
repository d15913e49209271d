"""factory-boy factories for the preference data."""

import factory
from django.contrib.auth import get_user_model

from annotation.models import Completion, Prompt, PromptBatch


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"annotator{n}")
    password = factory.django.Password("a-long-test-password")


class BatchFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PromptBatch

    name = factory.Sequence(lambda n: f"batch-{n}")
    k_min = 2
    k_max = 9
    status = PromptBatch.Status.PUBLISHED


class PromptFactory(factory.django.DjangoModelFactory):
    """A prompt with `k` completions (default 4): `PromptFactory(k=6)`."""

    class Meta:
        model = Prompt
        skip_postgeneration_save = True

    batch = factory.SubFactory(BatchFactory)
    text = factory.Sequence(lambda n: f"Prompt number {n}: explain something.")
    messages = factory.LazyAttribute(lambda o: [{"role": "user", "content": o.text}])
    external_id = factory.Sequence(lambda n: f"p{n}")

    @factory.post_generation
    def k(self, create: bool, extracted: int | None, **kwargs: object) -> None:
        if not create:
            return
        Completion.objects.bulk_create(
            Completion(prompt=self, text=f"Answer {i} to {self.text}", position=i)
            for i in range(extracted or 4)
        )


def completion_ids(prompt: Prompt) -> list[int]:
    return list(prompt.completions.order_by("position").values_list("id", flat=True))
