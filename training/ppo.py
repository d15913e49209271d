"""PPO with a KL penalty: a causal language model learns to please a reward model without
drifting far from where it started (Ziegler et al. 2019; Stiennon et al. 2020; InstructGPT).

Every step runs five stages, numbered below where they happen:

    1 rollout       sample one response per prompt from the policy
    2 score         the reward function scores (prompt, response text)
    3 KL-shaped     per-token reward = -beta * KL(policy || reference), score added at the end
    4 advantages    GAE over the response tokens (gamma 1, lambda 0.95)
    5 update        clipped policy and value losses, several epochs over minibatches

Where the code follows a detail from Huang et al. 2024, "The N Implementation Details of RLHF
with PPO" (ICLR blog track; the details of OpenAI's lm-human-preferences), the comment says so.

Nothing here imports Django: the Celery task, `python -m training.ppo` and a notebook call the
same `train_ppo`. Policies are "tiny" (a 2-layer GPT-2 built in code over the tiny reward model's
character tokenizer, for tests), a local Hugging Face directory, a .gguf file (dequantised
by transformers), or a policy this module saved. Saved policies are safetensors plus meta.json,
checked on loading.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn
from tqdm import tqdm
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rewards.artifacts import ArtifactError, check_safetensors, library_versions, sha256_file
from rewards.model import tiny_tokenizer
from training.sampling import Prompt, decode, encode_prompt, generate, position_ids

RewardFn = Callable[[list[Prompt], list[str]], "list[float] | torch.Tensor"]


# ---------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------


@dataclass
class PPOConfig:
    """Hyperparameters; saved in meta.json next to the weights and on the training-run row.

    The KL controller's defaults (beta 0.15, target 6 nats, horizon 10000) and the learning rate
    are those of OpenAI's lm-human-preferences (Ziegler et al. 2019), as Huang et al. 2024 list.
    """

    policy: str = "tiny"  # "tiny", a Hugging Face directory, a .gguf file, or a saved policy
    seed: int = 0  # seeds Python, NumPy and torch: a tiny CPU run repeats bit for bit
    steps: int = 30  # PPO iterations, each one rollout batch and its update
    time_budget_s: float = 0.0  # stop after the step that spends this many seconds (0: no limit)
    batch_size: int = 16  # prompts (and responses) per rollout
    minibatch_size: int = 8  # responses per gradient step
    ppo_epochs: int = 4  # passes over each rollout batch
    max_new_tokens: int = 24  # response length limit; longer responses are truncated
    max_prompt_tokens: int = 256  # longer prompts keep their end
    chat_template: bool = True  # render prompts with the tokenizer's chat template if it has one
    temperature: float = 1.0  # sampling temperature, also applied to the logits in training
    learning_rate: float = 1e-5  # Adam step size (full fine-tuning; LoRA wants ~1e-4)
    adam_eps: float = 1e-5  # Adam epsilon (Huang et al. 2024: 1e-5, not PyTorch's 1e-8)
    max_grad_norm: float = 1.0  # gradient clipping by global norm
    gamma: float = 1.0  # discount: an episode is one response, no reason to discount
    lam: float = 0.95  # GAE lambda
    clip_range: float = 0.2  # policy ratio clipped to [1 - c, 1 + c]
    clip_range_value: float = 0.2  # value prediction clipped to old value +- c
    vf_coef: float = 0.1  # weight of the value loss
    kl_coef: float = 0.15  # beta: initial weight of the per-token KL penalty
    kl_estimator: str = "k1"  # "k1" (log ratio, unbiased, can be < 0) or "k3" (>= 0, low variance)
    adaptive_kl: bool = True  # adapt beta towards target_kl (Ziegler et al. 2019)
    target_kl: float = 6.0  # KL per response (nats, summed over tokens) the controller aims at
    kl_horizon: int = 10000  # controller horizon, in responses
    missing_eos_penalty: float = 1.0  # subtracted from the score of a response that never ends
    whiten_rewards: bool = False  # scale per-token rewards to unit variance before GAE
    whiten_advantages: bool = True  # normalise advantages per batch (Huang et al. 2024)
    lora_r: int = 0  # LoRA rank; 0 trains every weight (LoRA needs `peft`)
    lora_alpha: int = 16  # LoRA scaling numerator
    device: str = "auto"  # "auto" (cuda when present), "cpu" or "cuda"; float32 throughout
    progress: bool = True  # show a tqdm bar


# ---------------------------------------------------------------------------------------------
# Helpers: seeding, masked statistics, GAE, KL estimators, the adaptive KL controller
# ---------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Unit variance over the unmasked entries; `shift_mean=False` keeps the mean (rewards)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def gae_reference(
    rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float
) -> torch.Tensor:
    """GAE as the loop in Schulman et al. 2016 writes it (the test oracle). (B, T) -> (B, T)."""
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    return advantages


def gae(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimation without a Python loop over time.

    A_t = sum_{s >= t} (gamma lam)^(s - t) delta_s, with delta_t = r_t + gamma V_{t+1} - V_t and
    V_T = 0: one matrix product with an upper-triangular discount matrix. Rewards and values
    must be 0 after a response's end, so that padding adds nothing.
    """
    T = rewards.shape[1]
    next_values = F.pad(values[:, 1:], (0, 1))  # (B, T), V_T = 0
    deltas = rewards + gamma * next_values - values  # (B, T)
    steps = torch.arange(T, dtype=rewards.dtype, device=rewards.device)
    lag = steps.unsqueeze(0) - steps.unsqueeze(1)  # (T, T): lag[t, s] = s - t
    discount = ((gamma * lam) ** lag.clamp(min=0)) * (lag >= 0)  # (T, T), zero below the diagonal
    return deltas @ discount.T  # (B, T)


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str
) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from the sampled tokens' log-probabilities.

    Schulman 2020, "Approximating KL Divergence": with r = p_ref(x) / p(x) and x ~ p,
    k1 = -log r (unbiased, negative for some samples) and k3 = (r - 1) - log r (unbiased, never
    negative, lower variance when the policies are close).
    """
    log_ratio = ref_logprobs - logprobs  # log r
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}: use 'k1' or 'k3'")


class AdaptiveKLController:
    """Ziegler et al. 2019, section 2.2: beta_{t+1} = beta_t (1 + K_beta e_t), with the
    proportional error e_t = clip(KL_t / KL_target - 1, -0.2, 0.2) and K_beta = n / horizon
    (n responses in the step). A fixed coefficient is the same object with `adaptive=False`."""

    def __init__(self, init: float, target: float, horizon: int, adaptive: bool = True):
        self.value, self.target, self.horizon, self.adaptive = init, target, horizon, adaptive

    def update(self, kl: float, n_steps: int) -> float:
        if self.adaptive:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


# ---------------------------------------------------------------------------------------------
# Policies: the tiny GPT-2, a Hugging Face directory, a GGUF file, a saved policy
# ---------------------------------------------------------------------------------------------

TINY = "tiny"
POLICY_FORMAT = "rankloop-policy/1"
WEIGHTS = "model.safetensors"
VALUE_HEAD = "value_head.safetensors"


def tiny_policy(seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A 2-layer GPT-2 with 64-dimensional states over the tiny reward model's character
    tokenizer (`rewards.model`), random weights from `seed`.

    Not the tiny reward model's Llama-style config: on the synthetic-reward test (30 steps,
    three seeds) that decoder raised the mean reward from about 0.2 to only 1.0-1.2, where this
    GPT-2 reaches 1.6-2.1 (bench/RESULTS.md); the test's margin needs the faster learner.
    """
    tokenizer = tiny_tokenizer()
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=512,
        n_embd=64,
        n_layer=2,
        n_head=4,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config), tokenizer


def load_lm(spec: str, seed: int = 0) -> tuple[Any, PreTrainedTokenizerBase]:
    """Causal LM and tokenizer for `spec`: "tiny", a saved policy, a HF directory or a .gguf."""
    if spec == TINY:
        return tiny_policy(seed)
    path = Path(spec)
    if path.is_file() and path.suffix == ".gguf":
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
        return model, tokenizer
    if (path / "meta.json").is_file():
        saved, saved_tokenizer, _ = load_policy(path)
        return saved, saved_tokenizer
    if not path.is_dir():
        raise FileNotFoundError(f"policy {spec!r} is neither 'tiny', a directory nor a .gguf file")
    # use_safetensors: never fall back to unpickling a pytorch_model.bin
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(path)


class PolicyWithValue(nn.Module):
    """The language model and a scalar value head on its last hidden state.

    The value head starts at zero, so the first values are 0 and the first advantages are the
    rewards themselves rather than noise from a random head.
    """

    def __init__(self, lm: Any):
        super().__init__()
        self.lm: Any = lm  # a transformers causal LM, or a peft model wrapping one
        self.value_head = nn.Linear(lm.config.hidden_size, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits (B, L, V) and values (B, L) for left-padded sequences (B, L)."""
        out = self.lm(
            input_ids=ids,
            attention_mask=mask,
            position_ids=position_ids(mask),
            output_hidden_states=True,
            use_cache=False,
        )
        values = self.value_head(out.hidden_states[-1]).squeeze(-1)  # (B, L)
        return out.logits, values


def with_lora(lm: PreTrainedModel, config: PPOConfig) -> nn.Module:
    """LoRA adapters on every linear layer of the LM; the base weights stay frozen."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as error:
        raise ImportError("lora_r > 0 needs the `peft` package: pip install peft") from error
    lora = LoraConfig(
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(lm, lora)


def response_logprobs(
    logits: torch.Tensor, response: torch.Tensor, prompt_len: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities (B, R) of the response tokens and the entropies (B, R) of their
    distributions. The logit at position t predicts token t + 1, hence the shift by one; logits
    are divided by the sampling temperature (Huang et al. 2024: without it the log-probabilities
    are not those of the distribution that was sampled)."""
    R = response.shape[1]
    logits = logits[:, prompt_len - 1 : prompt_len - 1 + R].float() / temperature  # (B, R, V)
    logp_all = F.log_softmax(logits, dim=-1)  # (B, R, V)
    logprobs = logp_all.gather(-1, response.unsqueeze(-1)).squeeze(-1)  # (B, R)
    entropy = -(logp_all.exp() * logp_all).sum(-1)  # (B, R)
    return logprobs, entropy


# ---------------------------------------------------------------------------------------------
# Rewards: any object with .score(prompt, completions), or a synthetic one for tests
# ---------------------------------------------------------------------------------------------


def reward_fn_from_scorer(scorer: Any) -> RewardFn:
    """A reward function from anything with `.score(prompt, completions) -> list[float]`, such as
    `rewards.load_reward_model(path)`: it tokenizes the texts itself, so the reward model may
    use another tokenizer than the policy. Responses to the same prompt are scored together."""

    def reward_fn(prompts: list[Prompt], responses: list[str]) -> torch.Tensor:
        groups: dict[str, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(json.dumps(prompt), []).append(i)
        scores = torch.zeros(len(responses))
        for indices in groups.values():
            values = scorer.score(prompts[indices[0]], [responses[i] for i in indices])
            scores[indices] = torch.tensor([float(v) for v in values])
        return scores

    return reward_fn


def synthetic_reward(token: str) -> RewardFn:
    """Reward = number of occurrences of `token` in the response (for tests and smoke runs)."""

    def reward_fn(prompts: list[Prompt], responses: list[str]) -> torch.Tensor:
        return torch.tensor([float(r.count(token)) for r in responses])

    return reward_fn


def reward_fn_from_spec(spec: str, device: str = "cpu") -> RewardFn:
    """`synthetic:TOKEN`, or a reward-model directory saved by the rewards library."""
    if spec.startswith("synthetic:"):
        return synthetic_reward(spec.removeprefix("synthetic:"))
    from rewards.artifacts import load_reward_model  # training -> rewards is the allowed arrow

    return reward_fn_from_scorer(load_reward_model(spec, device=device))


# ---------------------------------------------------------------------------------------------
# Artifacts: safetensors + meta.json, sha256 checked on loading, never a pickle
# ---------------------------------------------------------------------------------------------


def save_policy(
    policy: PolicyWithValue,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    config: PPOConfig,
    metrics: list[dict[str, Any]] | None = None,
    parent: str | None = None,
) -> Path:
    """Write the LM (LoRA merged in), its value head, architecture, tokenizer and meta.json.

    DIR/model.safetensors, DIR/value_head.safetensors, DIR/config/config.json, DIR/tokenizer/*,
    DIR/meta.json (format, base, PPO config, last metrics, parent, versions, sha256 of each file).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lm: Any = policy.lm
    if hasattr(lm, "merge_and_unload"):  # a peft model: save plain weights a reader can load
        lm = copy.deepcopy(lm).merge_and_unload()
    if any(p.device.type != "cpu" for p in lm.parameters()):
        lm = copy.deepcopy(lm).cpu()
    # save_model drops the duplicate of tied weights (GPT-2's and SmolLM2's embeddings)
    save_model(lm, str(out / WEIGHTS), metadata={"format": POLICY_FORMAT})
    value_state = {
        k: v.detach().cpu().contiguous() for k, v in policy.value_head.state_dict().items()
    }
    save_file(value_state, str(out / VALUE_HEAD), metadata={"format": POLICY_FORMAT})
    architecture = copy.deepcopy(lm.config)
    if hasattr(architecture, "quantization_config"):
        # a GGUF policy was dequantised on loading: the weights saved are plain float32
        del architecture.quantization_config
    architecture.save_pretrained(out / "config")
    tokenizer.save_pretrained(out / "tokenizer")
    files = [
        out / WEIGHTS,
        out / VALUE_HEAD,
        *sorted((out / "config").rglob("*")),
        *sorted((out / "tokenizer").rglob("*")),
    ]
    meta = {
        "format": POLICY_FORMAT,
        "base": config.policy,
        "parent": parent,
        "config": asdict(config),
        "metrics": (metrics or [])[-1:],
        "steps": len(metrics or []),
        "versions": library_versions(),
        "sha256": {str(f.relative_to(out)): sha256_file(f) for f in files if f.is_file()},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return out


def read_policy_meta(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / "meta.json"
    if not meta_path.is_file():
        raise ArtifactError(f"{meta_path} missing: not a policy directory")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("format") != POLICY_FORMAT:
        raise ArtifactError(f"unknown format {meta.get('format')!r}")
    return meta


def load_policy(
    path: str | Path, with_value_head: bool = False
) -> tuple[nn.Module, PreTrainedTokenizerBase, dict[str, Any]]:
    """(model, tokenizer, meta) of the policy saved in `path`, after checking every sha256.

    The model is the plain causal LM, or a `PolicyWithValue` with `with_value_head=True`.
    """
    root = Path(path)
    meta = read_policy_meta(root)
    expected: dict[str, str] = meta["sha256"]
    for required in (WEIGHTS, VALUE_HEAD):
        if required not in expected:
            raise ArtifactError(f"meta.json lists no {required}")
    for name, digest in expected.items():
        file = root / name
        if not file.is_file() or sha256_file(file) != digest:
            raise ArtifactError(f"{file}: sha256 does not match meta.json (modified or missing)")
    check_safetensors(root / WEIGHTS)
    check_safetensors(root / VALUE_HEAD)

    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    lm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(root / "config"))
    load_model(lm, str(root / WEIGHTS), strict=True)
    lm.eval()
    if not with_value_head:
        return lm, tokenizer, meta
    policy = PolicyWithValue(lm)
    policy.value_head.load_state_dict(load_file(str(root / VALUE_HEAD)))
    return policy.eval(), tokenizer, meta


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def prompt_batches(
    n_prompts: int, batch_size: int, generator: torch.Generator
) -> Iterator[list[int]]:
    """Prompt indices, shuffled once per pass over the prompts, forever."""
    order: list[int] = []
    while True:
        while len(order) < batch_size:
            order += torch.randperm(n_prompts, generator=generator).tolist()
        yield order[:batch_size]
        order = order[batch_size:]


def run_ppo(
    config: PPOConfig,
    prompts: Sequence[Prompt],
    reward_fn: RewardFn,
    progress_callback: Callable[[dict[str, Any]], None] | None = None,
    metrics_path: str | Path | None = None,
    model: tuple[PreTrainedModel, PreTrainedTokenizerBase] | None = None,
) -> tuple[PolicyWithValue, PreTrainedTokenizerBase, list[dict[str, Any]]]:
    """Train a policy with PPO; returns it, its tokenizer and one dict of metrics per step.

    `model` supplies an already loaded (LM, tokenizer) instead of loading `config.policy`.
    `progress_callback(metrics)` is called after every step (the Celery task stores the curve).
    """
    if not prompts:
        raise ValueError("PPO needs at least one prompt")
    if config.batch_size % config.minibatch_size:
        raise ValueError("batch_size must be a multiple of minibatch_size")
    seed_everything(config.seed)
    device = resolve_device(config.device)
    lm: Any
    lm, tokenizer = model if model is not None else load_lm(config.policy, config.seed)
    lm = lm.to(device)
    # The reference is the policy as it starts, frozen. With LoRA it is the same network with
    # the adapters switched off, so a 135M-parameter model is not held twice.
    reference: nn.Module | None = None
    if config.lora_r > 0:
        lm = with_lora(lm, config)
    else:
        reference = copy.deepcopy(lm).requires_grad_(False).eval()
    policy = PolicyWithValue(lm).to(device)
    # Huang et al. 2024: disable dropout, so that the log-probabilities of the rollout and of the
    # update come from the same function. Eval mode does it for every dropout layer at once.
    policy.eval()
    trainable = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(trainable, lr=config.learning_rate, eps=config.adam_eps)
    kl_controller = AdaptiveKLController(
        config.kl_coef, config.target_kl, config.kl_horizon, config.adaptive_kl
    )
    generator = torch.Generator().manual_seed(config.seed)
    batches = prompt_batches(len(prompts), config.batch_size, generator)
    encoded = [
        encode_prompt(tokenizer, p, config.max_prompt_tokens, config.chat_template) for p in prompts
    ]
    metrics: list[dict[str, Any]] = []
    log = open(metrics_path, "w") if metrics_path else None  # noqa: SIM115 (closed below)

    def reference_forward(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": position_ids(mask)}
        if reference is not None:
            return reference(**kwargs, use_cache=False).logits
        with lm.disable_adapter():
            return lm(**kwargs, use_cache=False).logits

    bar = tqdm(range(config.steps), desc="ppo", disable=not config.progress)
    run_started = time.perf_counter()
    try:
        for step in bar:
            started = time.perf_counter()
            indices = next(batches)
            batch_prompts = [prompts[i] for i in indices]

            # 1 rollout: one response per prompt, sampled at `temperature` from the full
            #   distribution, cut after its first EOS (Huang et al. 2024).
            rollout = generate(
                policy.lm,
                tokenizer,
                [encoded[i] for i in indices],
                max_new_tokens=config.max_new_tokens,
                temperature=config.temperature,
            )
            query, query_mask, response, response_mask, ended = (t.to(device) for t in rollout)
            P = query.shape[1]
            ids = torch.cat([query, response], dim=1)  # (B, P + R)
            mask = torch.cat([query_mask, response_mask], dim=1)  # (B, P + R)
            rmask = response_mask.float()  # (B, R)

            # 2 score: the reward function sees text, so a reward model may tokenize it its own
            #   way. A response that never reached EOS is penalised (Huang et al. 2024 replace
            #   its score with -1; subtracting keeps the reward model's ranking among them).
            texts = decode(tokenizer, response, response_mask)
            scores = torch.as_tensor(reward_fn(batch_prompts, texts), dtype=torch.float32)
            scores = scores.to(device)  # (B,)
            raw_scores = scores.clone()
            scores = scores - config.missing_eos_penalty * (~ended).float()

            # 3 KL-shaped reward: log-probabilities recomputed with a forward pass (not taken from
            #   generate), values from the same pass, a minibatch at a time to bound memory;
            #   per-token reward -beta * KL_t, the score added at the last token of the response
            #   (Ziegler et al. 2019; Huang et al. 2024).
            with torch.no_grad():
                parts = []
                for c in torch.arange(len(indices), device=device).split(config.minibatch_size):
                    logits, values = policy(ids[c], mask[c])
                    logprobs, _ = response_logprobs(logits, response[c], P, config.temperature)
                    ref_logits = reference_forward(ids[c], mask[c])
                    ref, _ = response_logprobs(ref_logits, response[c], P, config.temperature)
                    # the value at t is that of the state before response token t
                    parts.append((logprobs, ref, values[:, P - 1 : -1]))
                    del logits, ref_logits
            old_logprobs, ref_logprobs, old_values = (
                torch.cat(t) * rmask for t in zip(*parts, strict=True)
            )  # (B, R) each
            kl = kl_per_token(old_logprobs, ref_logprobs, config.kl_estimator) * rmask  # (B, R)
            beta = kl_controller.value
            rewards = -beta * kl  # (B, R)
            last = (response_mask.sum(1) - 1).clamp(min=0)  # (B,) index of the last token
            rewards[torch.arange(len(indices), device=device), last] += scores
            if config.whiten_rewards:
                rewards = masked_whiten(rewards, rmask, shift_mean=False)

            # 4 advantages: GAE (gamma 1, lambda 0.95) over the response tokens; returns are the
            #   value targets. Advantages whitened per batch (Huang et al. 2024).
            advantages = gae(rewards, old_values, config.gamma, config.lam) * rmask  # (B, R)
            returns = advantages + old_values  # (B, R)
            if config.whiten_advantages:
                advantages = masked_whiten(advantages, rmask)

            # 5 clipped update: several epochs over shuffled minibatches; PPO-clip policy loss
            #   and clipped value loss (Schulman et al. 2017; Huang et al. 2024), gradient clipping.
            stats: dict[str, list[float]] = {
                k: [] for k in ("pg", "vf", "clip", "approx_kl", "ent")
            }
            for _ in range(config.ppo_epochs):
                order = torch.randperm(len(indices), generator=generator).to(device)
                for start in range(0, len(indices), config.minibatch_size):
                    mb = order[start : start + config.minibatch_size]
                    m = rmask[mb]  # (b, R)
                    logits, values = policy(ids[mb], mask[mb])
                    logprobs, entropy = response_logprobs(
                        logits, response[mb], P, config.temperature
                    )  # (b, R), (b, R)
                    new_values = values[:, P - 1 : -1]  # (b, R)

                    log_ratio = (logprobs - old_logprobs[mb]) * m  # (b, R)
                    ratio = torch.exp(log_ratio)
                    adv = advantages[mb]
                    pg_losses = -adv * ratio
                    pg_clipped = -adv * ratio.clamp(1 - config.clip_range, 1 + config.clip_range)
                    pg_loss = masked_mean(torch.maximum(pg_losses, pg_clipped), m)

                    v_clipped = old_values[mb] + (new_values - old_values[mb]).clamp(
                        -config.clip_range_value, config.clip_range_value
                    )
                    vf_losses = torch.maximum(
                        (new_values - returns[mb]) ** 2, (v_clipped - returns[mb]) ** 2
                    )
                    vf_loss = 0.5 * masked_mean(vf_losses, m)

                    loss = pg_loss + config.vf_coef * vf_loss
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                    optimizer.step()

                    # clip fraction: the share of tokens where the clipped objective is the one used
                    with torch.no_grad():
                        stats["pg"].append(pg_loss.item())
                        stats["vf"].append(vf_loss.item())
                        stats["clip"].append(
                            masked_mean((pg_clipped > pg_losses).float(), m).item()
                        )
                        stats["approx_kl"].append(masked_mean(0.5 * log_ratio**2, m).item())
                        stats["ent"].append(masked_mean(entropy, m).item())

            # The controller sees the KL summed over each response (what target_kl means),
            # averaged over the batch: Ziegler et al. 2019.
            kl_k1 = (kl_per_token(old_logprobs, ref_logprobs, "k1") * rmask).sum(1).mean().item()
            kl_k3 = (kl_per_token(old_logprobs, ref_logprobs, "k3") * rmask).sum(1).mean().item()
            kl_controller.update(kl_k1 if config.kl_estimator == "k1" else kl_k3, len(indices))
            row = {
                "step": step + 1,
                "reward": raw_scores.mean().item(),
                "reward_std": raw_scores.std().item() if len(raw_scores) > 1 else 0.0,
                "kl": kl_k1,
                "kl_k3": kl_k3,
                "kl_coef": beta,
                "entropy": sum(stats["ent"]) / len(stats["ent"]),
                "clip_frac": sum(stats["clip"]) / len(stats["clip"]),
                "approx_kl": sum(stats["approx_kl"]) / len(stats["approx_kl"]),
                "policy_loss": sum(stats["pg"]) / len(stats["pg"]),
                "value_loss": sum(stats["vf"]) / len(stats["vf"]),
                "response_length": response_mask.sum(1).float().mean().item(),
                "eos_frac": ended.float().mean().item(),
                "seconds": time.perf_counter() - started,
                "sample": texts[0],
            }
            metrics.append(row)
            bar.set_postfix(reward=f"{row['reward']:.3f}", kl=f"{row['kl']:.3f}")
            if log is not None:
                log.write(json.dumps(row) + "\n")
                log.flush()
            if progress_callback is not None:
                progress_callback(row)
            if config.time_budget_s and time.perf_counter() - run_started > config.time_budget_s:
                break
    finally:
        bar.close()
        if log is not None:
            log.close()
    return policy, tokenizer, metrics


def train_ppo(
    config: PPOConfig,
    prompts: Sequence[Prompt],
    reward_fn: RewardFn,
    out_dir: str | Path,
    progress_callback: Callable[[dict[str, Any]], None] | None = None,
    parent: str | None = None,
) -> list[dict[str, Any]]:
    """Train with PPO and save the policy to `out_dir` (with metrics.jsonl); returns the metrics.

    This is what the Celery task and `python -m training.ppo` call.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    policy, tokenizer, metrics = run_ppo(
        config, prompts, reward_fn, progress_callback, metrics_path=out / "metrics.jsonl"
    )
    save_policy(policy, tokenizer, out, config, metrics, parent=parent)
    return metrics


# ---------------------------------------------------------------------------------------------
# Prompt files and the command line
# ---------------------------------------------------------------------------------------------


def parse_hh(text: str) -> list[dict[str, str]]:
    """Anthropic HH's "\\n\\nHuman: ...\\n\\nAssistant: ..." transcript as chat messages."""
    messages = []
    for chunk in text.split("\n\n"):
        for speaker, role in (("Human:", "user"), ("Assistant:", "assistant")):
            if chunk.startswith(speaker):
                messages.append({"role": role, "content": chunk[len(speaker) :].strip()})
                break
        else:
            if messages and chunk.strip():
                messages[-1]["content"] += "\n\n" + chunk.strip()
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()  # the empty turn the completion would fill
    return messages


def read_prompts(path: str | Path) -> list[Prompt]:
    """Prompts from JSONL: {"messages": [...]} or {"prompt": str} a line (HH transcripts become
    messages), or a bare JSON string a line."""
    prompts: list[Prompt] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), start=1):
        if not line.strip():
            continue
        row = json.loads(line)
        if isinstance(row, str):
            prompts.append(row)
        elif "messages" in row:
            prompts.append(row["messages"])
        elif "prompt" in row:
            text = row["prompt"]
            prompts.append(parse_hh(text) if "\n\nHuman:" in text else text)
        else:
            raise ValueError(f"{path}:{n}: a line needs 'prompt' or 'messages'")
    return prompts


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(
        prog="python -m training.ppo",
        description="PPO with a KL penalty: train a policy against a reward model, from files.",
    )
    parser.add_argument("--reward", required=True, help="reward-model directory or synthetic:TOKEN")
    parser.add_argument("--prompts", required=True, help="JSONL: {'prompt': ...} or {'messages'}")
    parser.add_argument("--out", required=True, help="directory for the policy and metrics.jsonl")
    defaults = PPOConfig()
    for f in fields(PPOConfig):
        default = getattr(defaults, f.name)
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=f"{default}")
    args = parser.parse_args(argv)
    config = PPOConfig(**{f.name: getattr(args, f.name) for f in fields(PPOConfig)})
    metrics = train_ppo(
        config, read_prompts(args.prompts), reward_fn_from_spec(args.reward), args.out
    )
    for row in metrics:
        print(
            f"step {row['step']:4d}  reward {row['reward']:+.4f}  kl {row['kl']:.4f}  "
            f"beta {row['kl_coef']:.4f}  len {row['response_length']:.1f}"
        )
    print(f"saved {args.out}")
    return metrics


if __name__ == "__main__":
    main()
