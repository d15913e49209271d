"""PPO: the math against hand-computed values and reference loops, then tiny runs end to end."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rewards.artifacts import save_reward_model
from rewards.model import build_reward_model
from training.ppo import (
    AdaptiveKLController,
    ArtifactError,
    PolicyWithValue,
    PPOConfig,
    gae,
    gae_reference,
    kl_per_token,
    load_lm,
    load_policy,
    masked_whiten,
    parse_hh,
    read_prompts,
    response_logprobs,
    reward_fn_from_scorer,
    reward_fn_from_spec,
    run_ppo,
    save_policy,
    sha256_file,
    synthetic_reward,
    tiny_policy,
)
from training.sampling import encode_prompt, left_pad, truncate_after_eos

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]
PROMPTS = [
    "Say a word",
    "Tell me",
    "Hello",
    "What is up",
    "Write",
    "Go on",
    "Name a fruit",
    "Count",
]

# The tiny-policy run the learning test uses: 30 steps, reward = number of "a" in the response.
LEARN = PPOConfig(
    steps=30,
    batch_size=32,
    minibatch_size=16,
    max_new_tokens=16,
    learning_rate=1e-3,
    kl_coef=0.4,
    target_kl=8.0,
    kl_horizon=480,
    missing_eos_penalty=0.0,
    progress=False,
)


def short(**changes: object) -> PPOConfig:
    """A few-step tiny run for the plumbing tests."""
    base = {"steps": 2, "batch_size": 8, "minibatch_size": 4, "max_new_tokens": 8}
    return PPOConfig(**{**LEARN.__dict__, **base, **changes})


# --- GAE -------------------------------------------------------------------------------------


def test_gae_matches_a_hand_computed_example() -> None:
    # given one response of 3 tokens, reward 1 at the end, zero values, gamma 1, lambda 0.5
    rewards = torch.tensor([[0.0, 0.0, 1.0]])
    values = torch.zeros(1, 3)
    # then A = (0.25, 0.5, 1): the final reward discounted by lambda per step back
    expected = torch.tensor([[0.25, 0.5, 1.0]])
    torch.testing.assert_close(gae_reference(rewards, values, 1.0, 0.5), expected)
    torch.testing.assert_close(gae(rewards, values, 1.0, 0.5), expected)


@pytest.mark.parametrize(("gamma", "lam"), [(1.0, 0.95), (0.99, 0.9), (0.5, 0.0), (1.0, 1.0)])
def test_vectorised_gae_equals_the_reference_loop(gamma: float, lam: float) -> None:
    generator = torch.Generator().manual_seed(0)
    rewards = torch.randn(6, 40, generator=generator)  # (B, T)
    values = torch.randn(6, 40, generator=generator)  # (B, T)
    # responses of different lengths: rewards and values are zero after the end, as in PPO
    mask = (
        torch.arange(40).unsqueeze(0) < torch.tensor([[40], [1], [7], [23], [39], [12]])
    ).float()
    for r, v in [(rewards, values), (rewards * mask, values * mask)]:
        torch.testing.assert_close(
            gae(r, v, gamma, lam), gae_reference(r, v, gamma, lam), atol=1e-5, rtol=1e-5
        )


def test_masked_whiten_ignores_padding_and_can_keep_the_mean() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    white = masked_whiten(x, mask)
    assert white[0, 3] == 0
    assert abs(white[0, :3].mean().item()) < 1e-6
    torch.testing.assert_close(
        white[0, :3].std(unbiased=False), torch.tensor(1.0), atol=1e-4, rtol=0
    )
    kept = masked_whiten(x, mask, shift_mean=False)
    torch.testing.assert_close(kept[0, :3].mean(), torch.tensor(2.0))


# --- KL estimators and the controller ---------------------------------------------------------


def test_k3_is_never_negative() -> None:
    generator = torch.Generator().manual_seed(0)
    logprobs = -10 * torch.rand(10_000, generator=generator)
    ref_logprobs = -10 * torch.rand(10_000, generator=generator)
    k1 = kl_per_token(logprobs, ref_logprobs, "k1")
    k3 = kl_per_token(logprobs, ref_logprobs, "k3")
    assert (k1 < 0).any()  # k1 is unbiased but single samples go below zero
    assert (k3 >= 0).all()
    with pytest.raises(ValueError, match="k2"):
        kl_per_token(logprobs, ref_logprobs, "k2")


def test_k1_and_k3_means_match_the_exact_kl() -> None:
    # given a policy p and a reference q over 5 tokens, and the exact KL(p || q)
    p = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    q = torch.tensor([0.2, 0.2, 0.2, 0.2, 0.2])
    exact = (p * (p / q).log()).sum().item()
    # when tokens are sampled from p, as in a rollout
    generator = torch.Generator().manual_seed(0)
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=generator)
    k1 = kl_per_token(p.log()[tokens], q.log()[tokens], "k1")
    k3 = kl_per_token(p.log()[tokens], q.log()[tokens], "k3")
    # then both estimators are unbiased
    assert k1.mean().item() == pytest.approx(exact, abs=0.01)
    assert k3.mean().item() == pytest.approx(exact, abs=0.01)


def test_adaptive_kl_controller_moves_beta_towards_the_target() -> None:
    above = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert above.update(kl=12.0, n_steps=10) > 0.1  # too far from the reference: penalise more
    below = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert below.update(kl=1.0, n_steps=10) < 0.1  # close to it: penalise less
    # Ziegler et al.: the proportional error is clipped to +-0.2
    assert above.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    assert below.value == pytest.approx(0.1 * (1 - 0.2 * 10 / 100))
    on_target = AdaptiveKLController(0.1, target=6.0, horizon=100)
    assert on_target.update(kl=6.0, n_steps=10) == pytest.approx(0.1)
    fixed = AdaptiveKLController(0.1, target=6.0, horizon=100, adaptive=False)
    assert fixed.update(kl=50.0, n_steps=10) == 0.1


# --- Rollout plumbing -------------------------------------------------------------------------


def test_responses_are_cut_after_their_first_eos() -> None:
    eos, pad = 3, 0
    response = torch.tensor([[5, 6, 3, 7, 3], [5, 6, 7, 8, 9]])
    cut, mask, ended = truncate_after_eos(response, [eos], pad)
    assert cut.tolist() == [[5, 6, 3, 0, 0], [5, 6, 7, 8, 9]]
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert ended.tolist() == [True, False]


def test_left_padding_does_not_change_what_the_policy_computes() -> None:
    lm, tokenizer = tiny_policy(seed=0)
    policy = PolicyWithValue(lm).eval()
    torch.nn.init.normal_(policy.value_head.weight)  # a non-zero head, so values differ by input
    short_ids = encode_prompt(tokenizer, "Hi")
    long_ids = encode_prompt(tokenizer, "A much longer prompt")
    ids, mask = left_pad([short_ids, long_ids], tokenizer.pad_token_id)  # (2, P)
    with torch.no_grad():
        padded_logits, padded_values = policy(ids, mask)
        alone_logits, alone_values = policy(
            torch.tensor([short_ids]), torch.ones(1, len(short_ids))
        )
    n = len(short_ids)
    torch.testing.assert_close(padded_logits[0, -n:], alone_logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(padded_values[0, -n:], alone_values[0], atol=1e-5, rtol=1e-5)


def test_value_head_starts_at_zero() -> None:
    lm, _ = tiny_policy()
    policy = PolicyWithValue(lm)
    _, values = policy(torch.tensor([[10, 11, 12]]), torch.ones(1, 3, dtype=torch.long))
    assert values.abs().max().item() == 0


def test_a_scorer_with_another_tokenizer_scores_decoded_text_grouped_by_prompt() -> None:
    class LengthScorer:
        def __init__(self) -> None:
            self.calls: list[tuple[object, list[str]]] = []

        def score(self, prompt: object, completions: list[str]) -> list[float]:
            self.calls.append((prompt, list(completions)))
            return [float(len(c)) for c in completions]

    scorer = LengthScorer()
    reward_fn = reward_fn_from_scorer(scorer)
    scores = reward_fn(["p", "q", "p"], ["a", "bb", "ccc"])
    assert torch.as_tensor(scores).tolist() == [1.0, 2.0, 3.0]
    assert scorer.calls == [("p", ["a", "ccc"]), ("q", ["bb"])]


def test_hh_transcripts_become_chat_messages(tmp_path: Path) -> None:
    text = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Bake bread?\n\nAssistant:"
    assert parse_hh(text) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bake bread?"},
    ]
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        json.dumps({"prompt": text})
        + "\n"
        + json.dumps({"prompt": "plain"})
        + "\n\n"
        + json.dumps({"messages": [{"role": "user", "content": "m"}]})
        + "\n"
    )
    assert read_prompts(path) == [parse_hh(text), "plain", [{"role": "user", "content": "m"}]]


# --- PPO end to end on the tiny policy --------------------------------------------------------


def test_ppo_raises_the_reward_while_the_kl_stays_under_target() -> None:
    # given a random tiny policy that writes "a" about once in 100 characters
    # when 30 PPO steps reward every "a"
    _, _, metrics = run_ppo(LEARN, PROMPTS, synthetic_reward("a"))
    rewards = [m["reward"] for m in metrics]
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    # then the mean reward rises clearly, and the KL to the reference stays under the target
    assert last > first + 1.0
    assert last > 4 * first
    assert max(m["kl"] for m in metrics) < LEARN.target_kl
    for key in ("entropy", "clip_frac", "approx_kl", "value_loss", "response_length", "kl_k3"):
        assert all(math.isfinite(m[key]) for m in metrics), key


def test_two_seeded_tiny_runs_are_identical_bit_for_bit() -> None:
    runs = [run_ppo(short(steps=3), PROMPTS, synthetic_reward("a")) for _ in range(2)]
    (policy_a, _, metrics_a), (policy_b, _, metrics_b) = runs
    drop = {"seconds"}
    assert [{k: v for k, v in m.items() if k not in drop} for m in metrics_a] == [
        {k: v for k, v in m.items() if k not in drop} for m in metrics_b
    ]
    state_a, state_b = policy_a.state_dict(), policy_b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    # and another seed gives another run
    _, _, metrics_c = run_ppo(short(steps=3, seed=1), PROMPTS, synthetic_reward("a"))
    assert [m["sample"] for m in metrics_c] != [m["sample"] for m in metrics_a]


def test_k3_and_a_fixed_coefficient_run() -> None:
    _, _, metrics = run_ppo(
        short(kl_estimator="k3", adaptive_kl=False, whiten_rewards=True),
        PROMPTS,
        synthetic_reward("a"),
    )
    assert [m["kl_coef"] for m in metrics] == [LEARN.kl_coef] * 2


def test_a_response_that_never_ends_is_penalised() -> None:
    # max_new_tokens=1: almost no response reaches EOS, so the penalty shows in the advantages;
    # the score logged is the reward model's, before the penalty
    seen: list[list[str]] = []

    def zero(prompts: list, responses: list[str]) -> list[float]:
        seen.append(responses)
        return [0.0] * len(responses)

    _, _, metrics = run_ppo(short(max_new_tokens=1, missing_eos_penalty=5.0), PROMPTS, zero)
    assert all(m["reward"] == 0 for m in metrics)
    assert all(m["eos_frac"] < 1 for m in metrics)
    assert all(len(r) <= 1 for batch in seen for r in batch)


# --- Artifacts --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PolicyWithValue, object]:
    torch.set_num_threads(1)
    policy, tokenizer, metrics = run_ppo(short(), PROMPTS, synthetic_reward("a"))
    out = tmp_path_factory.mktemp("policy")
    save_policy(policy, tokenizer, out, short(), metrics, parent="v0")
    return out, policy, tokenizer


def test_a_saved_policy_loads_back_and_scores_identically(saved) -> None:
    out, policy, tokenizer = saved
    loaded, loaded_tokenizer, meta = load_policy(out, with_value_head=True)
    assert meta["parent"] == "v0"
    assert meta["config"]["kl_coef"] == LEARN.kl_coef
    assert meta["steps"] == 2
    ids, mask = left_pad([encode_prompt(tokenizer, p) for p in PROMPTS], tokenizer.pad_token_id)
    assert torch.equal(ids, left_pad([encode_prompt(loaded_tokenizer, p) for p in PROMPTS], 0)[0])
    with torch.no_grad():
        logits, values = policy(ids, mask)
        loaded_logits, loaded_values = loaded(ids, mask)
    assert torch.equal(logits, loaded_logits)
    assert torch.equal(values, loaded_values)


def test_a_tampered_policy_is_refused(saved, tmp_path: Path) -> None:
    out, _, _ = saved
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_policy(copy)


def test_a_pickle_is_refused_even_with_a_matching_hash(saved, tmp_path: Path) -> None:
    out, _, _ = saved
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(out), str(copy)], check=True)
    torch.save({"w": torch.zeros(1)}, copy / "model.safetensors")
    meta = json.loads((copy / "meta.json").read_text())
    meta["sha256"]["model.safetensors"] = sha256_file(copy / "model.safetensors")
    (copy / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="pickle"):
        load_policy(copy)


def test_lora_trains_adapters_and_saves_a_plain_model(tmp_path: Path) -> None:
    pytest.importorskip("peft")
    policy, tokenizer, metrics = run_ppo(short(lora_r=4), PROMPTS, synthetic_reward("a"))
    assert len(metrics) == 2
    base, _ = tiny_policy(seed=0)
    save_policy(policy, tokenizer, tmp_path, short(lora_r=4), metrics)
    loaded, _, _ = load_policy(tmp_path)
    assert set(loaded.state_dict()) == set(base.state_dict())  # merged: no adapter weights left


# --- The command line -------------------------------------------------------------------------


def test_python_m_training_ppo_trains_from_files(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "training.ppo",
        "--policy", "tiny", "--reward", "synthetic:a", "--prompts", str(prompts),
        "--steps", "2", "--batch-size", "8", "--minibatch-size", "4", "--max-new-tokens", "8",
        "--no-progress", "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "step    2" in result.stdout
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    _, _, meta = load_policy(out)
    assert meta["config"]["steps"] == 2
    assert meta["base"] == "tiny"


def test_a_saved_policy_is_the_starting_point_of_the_next_run(saved) -> None:
    out, policy, _ = saved
    # given --policy DIR naming a saved policy, the next run starts from its weights
    lm, _ = load_lm(str(out))
    trained = policy.lm.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in lm.state_dict().items())
    _, _, metrics = run_ppo(short(policy=str(out), steps=1), PROMPTS, synthetic_reward("a"))
    assert len(metrics) == 1


def test_a_reward_model_directory_from_the_rewards_library_scores_responses(tmp_path: Path) -> None:
    model = build_reward_model("tiny", max_length=64, seed=0)
    save_reward_model(model, tmp_path, config={}, metrics={}, data_sha256="")
    reward_fn = reward_fn_from_spec(str(tmp_path))
    scores = torch.as_tensor(reward_fn(["Hi", "Hi", "Bye"], ["hello", "yo", "ciao"]))
    expected = model.score("Hi", ["hello", "yo"]) + model.score("Bye", ["ciao"])
    torch.testing.assert_close(scores, torch.tensor(expected))


def test_recomputed_log_probabilities_match_those_of_the_rollout() -> None:
    # Huang et al. 2024: the forward pass of the update must see what generation saw (left
    # padding, position ids from the mask), or PPO's ratios start away from 1.
    lm, tokenizer = tiny_policy(seed=0)
    prompts = [encode_prompt(tokenizer, p) for p in ["Hi", "A longer prompt here", "Mid one"]]
    query, query_mask = left_pad(prompts, tokenizer.pad_token_id)  # (3, P)
    torch.manual_seed(0)
    out = lm.generate(  # type: ignore[operator]
        input_ids=query,
        attention_mask=query_mask,
        do_sample=True,
        top_k=0,
        max_new_tokens=6,
        min_new_tokens=6,  # no EOS, so every logit row belongs to a real response token
        pad_token_id=tokenizer.pad_token_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    response = out.sequences[:, query.shape[1] :]  # (3, R)
    rollout = torch.stack(out.logits, dim=1).log_softmax(-1)  # (3, R, V)
    rollout_logprobs = rollout.gather(-1, response.unsqueeze(-1)).squeeze(-1)  # (3, R)
    ids = torch.cat([query, response], dim=1)
    mask = torch.cat([query_mask, torch.ones_like(response)], dim=1)
    with torch.no_grad():
        logits, _ = PolicyWithValue(lm).eval()(ids, mask)
    logprobs, _ = response_logprobs(logits, response, query.shape[1], temperature=1.0)
    torch.testing.assert_close(logprobs, rollout_logprobs, atol=1e-4, rtol=1e-4)
