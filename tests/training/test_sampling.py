"""Sampling completions for the next batch: K distinct completions per prompt, seeded."""

import pytest
import torch

from training.ppo import PolicyWithValue, tiny_policy
from training.sampling import encode_prompt, sample_completions

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["Name a fruit", [{"role": "user", "content": "Say hi"}], "Count to three"]


def test_k_distinct_completions_per_prompt() -> None:
    lm, tokenizer = tiny_policy(seed=0)
    # one new token each: about a hundred possible completions, so ten samples of a prompt
    # collide often and the duplicates must be resampled
    completions = sample_completions(
        lm, tokenizer, PROMPTS, k=10, temperature=1.0, top_p=1.0, max_new_tokens=1, seed=0
    )
    assert len(completions) == len(PROMPTS)
    for texts in completions:
        assert len(texts) == 10
        assert len(set(texts)) == 10


def test_same_seed_same_completions_and_the_callers_random_state_is_untouched() -> None:
    lm, tokenizer = tiny_policy(seed=0)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    first = sample_completions(lm, tokenizer, PROMPTS, k=3, max_new_tokens=12, seed=7)
    after = torch.rand(1)
    assert torch.equal(before, after)
    assert sample_completions(lm, tokenizer, PROMPTS, k=3, max_new_tokens=12, seed=7) == first
    assert sample_completions(lm, tokenizer, PROMPTS, k=3, max_new_tokens=12, seed=8) != first


def test_a_model_that_can_write_only_one_thing_gets_k_copies_not_an_endless_loop() -> None:
    lm, tokenizer = tiny_policy(seed=0)
    # a near-zero temperature is greedy decoding: every sample is the same
    completions = sample_completions(
        PolicyWithValue(lm), tokenizer, PROMPTS[:1], k=4, temperature=1e-4, max_new_tokens=6
    )
    assert len(completions[0]) == 4
    assert len(set(completions[0])) == 1


def test_prompts_use_the_chat_template_when_there_is_one() -> None:
    _, tokenizer = tiny_policy()
    ids = encode_prompt(tokenizer, "Hi")
    assert tokenizer.decode(ids) == "<|user|>Hi<|end|><|assistant|>"
    plain = encode_prompt(tokenizer, "Hi", chat_template=False)
    assert tokenizer.decode(plain) == "User: Hi\nAssistant:"
