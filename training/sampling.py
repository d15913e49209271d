"""Sampling completions from a causal language model: prompts in, K distinct completions out.

This is the half of "closing the loop" that knows nothing about Django: the policy writes K
completions per prompt (temperature and top-p settable, exact duplicates resampled), and the
caller turns them into a draft batch for annotators. PPO's rollout (`training/ppo.py`, stage 1)
uses the same prompt encoding and generation, so the completions annotators rank come from the
distribution the policy was trained on.

Prompts are text or chat messages ([{"role": "user", "content": ...}, ...]). A tokenizer with a
chat template gets the template with the generation prompt; one without gets the plain
"User: ...\nAssistant:" rendering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedTokenizerBase

Messages = list[dict[str, str]]
Prompt = str | Messages


# ---------------------------------------------------------------------------------------------
# Prompt encoding
# ---------------------------------------------------------------------------------------------


def as_messages(prompt: Prompt) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def render_plain(messages: Messages) -> str:
    """Prompt text for tokenizers without a chat template."""
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*turns, "Assistant:"])


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompt,
    max_prompt_tokens: int = 256,
    chat_template: bool = True,
) -> list[int]:
    """Token ids of one prompt, ready for the model to continue; long prompts keep their end."""
    if chat_template and tokenizer.chat_template:
        text = tokenizer.apply_chat_template(
            as_messages(prompt), add_generation_prompt=True, tokenize=False
        )
        assert isinstance(text, str)
        # the template already writes the special tokens (<|im_start|>, BOS) it wants
        ids = tokenizer.encode(text, add_special_tokens=False)
    else:
        ids = tokenizer.encode(render_plain(as_messages(prompt)), add_special_tokens=False)
    return ids[-max_prompt_tokens:]


def left_pad(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (N, P) ids and attention mask, so that every prompt ends at the same column and
    generation continues all of them at once (Huang et al. 2024, "The N Implementation Details of
    RLHF with PPO": left padding for batched generation)."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, s in enumerate(sequences):
        if s:
            ids[i, longest - len(s) :] = torch.tensor(s, dtype=torch.long)
            mask[i, longest - len(s) :] = 1
    return ids, mask  # (N, P), (N, P)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each row's first real token, so that left padding does not shift
    them (Huang et al. 2024: the position ids must be computed from the attention mask)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)  # same shape as mask


def eos_ids(tokenizer: PreTrainedTokenizerBase, model: nn.Module | None = None) -> list[int]:
    """Every id that ends a response: the tokenizer's EOS and the model's generation EOS(es)."""
    ids: list[int] = []
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    generation_config = getattr(model, "generation_config", None)
    extra = getattr(generation_config, "eos_token_id", None)
    for i in extra if isinstance(extra, list) else [extra]:
        if i is not None and int(i) not in ids:
            ids.append(int(i))
    if not ids:
        raise ValueError("the tokenizer has no EOS token: responses could never end")
    return ids


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(eos_ids(tokenizer)[0])


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def truncate_after_eos(
    response: torch.Tensor, eos: list[int], pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut each response after its first EOS (kept: it is the action that ends the episode).

    Returns the response with pad after the end (N, R), its mask (N, R), and whether each row
    ended with EOS (N,). Huang et al. 2024: "truncate the response after the EOS token".
    """
    is_eos = torch.isin(response, torch.tensor(eos, dtype=response.dtype))  # (N, R)
    ended = is_eos.any(dim=1)  # (N,)
    # index of the first EOS, or R-1 for a response that never ends
    first = torch.where(ended, is_eos.float().argmax(dim=1), response.shape[1] - 1)  # (N,)
    columns = torch.arange(response.shape[1]).unsqueeze(0)  # (1, R)
    mask = (columns <= first.unsqueeze(1)).long()  # (N, R)
    return response.masked_fill(mask == 0, pad), mask, ended


@torch.no_grad()
def generate(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[list[int]],
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one response per prompt.

    Returns query ids (N, P) and mask (N, P), response ids (N, R), response mask (N, R) and
    ended (N,). No top-k, no minimum length, and top-p 1 by default: PPO's log-probabilities are
    those of the full distribution at `temperature`, so the rollout must sample from exactly that
    distribution.
    """
    device = next(model.parameters()).device
    pad = pad_id(tokenizer)
    eos = eos_ids(tokenizer, model)
    query, query_mask = left_pad(prompt_ids, pad)  # (N, P)
    config = GenerationConfig(
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    out = model.generate(  # type: ignore[operator]
        input_ids=query.to(device),
        attention_mask=query_mask.to(device),
        generation_config=config,
    )
    response = out[:, query.shape[1] :].cpu()  # (N, R), R <= max_new_tokens
    response, response_mask, ended = truncate_after_eos(response, eos, pad)
    return query, query_mask, response, response_mask, ended


def decode(
    tokenizer: PreTrainedTokenizerBase, response: torch.Tensor, mask: torch.Tensor
) -> list[str]:
    """Response texts without special tokens (the EOS is not part of what a reader sees)."""
    return [
        str(tokenizer.decode(row[m.bool()].tolist(), skip_special_tokens=True)).strip()
        for row, m in zip(response, mask, strict=True)
    ]


def _unwrap(policy: Any) -> nn.Module:
    """The language model inside a PPO policy (value head and all), or the model itself."""
    return policy.lm if hasattr(policy, "lm") and hasattr(policy, "value_head") else policy


def sample_completions(
    policy: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Prompt],
    k: int = 4,
    temperature: float = 0.7,
    top_p: float = 0.95,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 16,
    max_retries: int = 5,
    max_prompt_tokens: int = 256,
) -> list[list[str]]:
    """K completions for each prompt, distinct from each other where the model allows it.

    Completions that exactly repeat an earlier one of the same prompt are sampled again, all
    duplicates of the whole call in one batch, at most `max_retries` times; a duplicate that
    survives (a model that can only write one thing) is kept rather than looping forever.
    Seeded: the same call returns the same completions. The caller's random state is untouched.
    """
    model = _unwrap(policy)
    was_training = model.training
    model.eval()
    encoded = [encode_prompt(tokenizer, p, max_prompt_tokens) for p in prompts]
    completions: list[list[str]] = [[""] * k for _ in prompts]

    def fill(slots: list[tuple[int, int]]) -> None:
        for start in range(0, len(slots), batch_size):
            chunk = slots[start : start + batch_size]
            _, _, response, mask, _ = generate(
                model,
                tokenizer,
                [encoded[p] for p, _ in chunk],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
            )
            for (p, j), text in zip(chunk, decode(tokenizer, response, mask), strict=True):
                completions[p][j] = text

    def duplicates() -> list[tuple[int, int]]:
        slots = []
        for p, texts in enumerate(completions):
            seen: set[str] = set()
            for j, text in enumerate(texts):
                if text in seen:
                    slots.append((p, j))
                seen.add(text)
        return slots

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fill([(p, j) for p in range(len(prompts)) for j in range(k)])
        for _ in range(max_retries):
            again = duplicates()
            if not again:
                break
            fill(again)
    model.train(was_training)
    return completions
