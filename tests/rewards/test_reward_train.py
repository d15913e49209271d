import itertools
import json

import pytest
import torch
from reward_factories import separable_rankings

from rewards.train import TrainConfig, cosine_with_warmup, fit_reward_model, train_reward_model


def tiny_config(**overrides) -> TrainConfig:
    defaults = dict(
        base="tiny",
        mode="full",
        max_length=48,
        epochs=12,
        batch_size=8,
        lr=3e-3,
        head_lr=3e-2,
        warmup_fraction=0.1,
        seed=0,
    )
    return TrainConfig(**{**defaults, **overrides})


@pytest.mark.parametrize(
    ("mode", "encoding"),
    [("head", "separate"), ("full", "separate"), ("full", "joint"), ("top-n", "joint")],
)
def test_tiny_model_reaches_full_training_accuracy_on_separable_rankings(mode, encoding, tmp_path):
    # given 24 K=3 rankings where good > okay > bad
    rankings = separable_rankings(24)
    steps = []
    # when
    metrics = train_reward_model(
        tiny_config(mode=mode, top_n=1, encoding=encoding),
        rankings,
        val_rankings=separable_rankings(6, seed=9),
        out_dir=tmp_path,
        progress_callback=lambda step, total, record: steps.append((step, total)),
    )
    # then
    assert metrics["train"]["accuracy"] == 1.0
    assert metrics["train"]["kendall_tau"] == pytest.approx(1.0)
    if mode != "head":  # a frozen random backbone need not separate unseen texts
        assert metrics["val"]["accuracy"] == 1.0
    assert steps[-1] == (metrics["steps"], metrics["steps"])
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    per_step = [row for row in logged if "step" in row]
    assert len(per_step) == metrics["steps"]
    assert {"loss", "pair_accuracy", "margin", "lr"} <= per_step[0].keys()


def test_head_penalty_is_chosen_on_the_validation_split():
    config = tiny_config(mode="head", head_l2_grid=(0.01, 1.0, 100.0))
    metrics = train_reward_model(config, separable_rankings(24), separable_rankings(6, seed=9))
    tried = [fit["l2"] for fit in metrics["val_per_epoch"]]
    assert tried == [0.01, 1.0, 100.0]  # one fit per candidate, each scored on validation
    best = max(fit["accuracy"] for fit in metrics["val_per_epoch"])
    assert metrics["val"]["accuracy"] == pytest.approx(best)  # the model kept is the best one


def test_normalisation_makes_training_rewards_mean_zero_std_one():
    rankings = separable_rankings(16)
    model, _ = fit_reward_model(tiny_config(mode="head", epochs=2), rankings, [])
    scores = torch.tensor([s for r in rankings for s in model.score(r.messages, r.completions)])
    assert scores.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert scores.std().item() == pytest.approx(1.0, abs=1e-4)


def test_a_tiny_run_is_reproducible_bit_for_bit():
    rankings = separable_rankings(16)
    scores = []
    for _ in range(2):
        model, _ = fit_reward_model(tiny_config(epochs=2), rankings, [])
        scores.append(model.score("question 1?", ["good", "so bad"], normalize=False))
    assert scores[0] == scores[1]


def test_head_cache_embeds_only_new_completions(tmp_path):
    config = tiny_config(mode="head", epochs=1, cache_dir=str(tmp_path))
    old, extra = separable_rankings(10), separable_rankings(4, seed=5)
    first = train_reward_model(config, old, [])
    second = train_reward_model(config, old + extra, [])
    seen = {(r.messages[0]["content"], c) for r in old for c in r.completions}
    new = {(r.messages[0]["content"], c) for r in extra for c in r.completions} - seen
    assert first["cache_computed"] == 30
    assert 0 < second["cache_computed"] == len(new) < 42  # not the 30 seen before


def test_learning_rate_warms_up_then_decays_to_the_floor():
    rates = [cosine_with_warmup(s, total=100, warmup=10, min_ratio=0.1) for s in range(100)]
    assert rates[0] == pytest.approx(0.1)
    assert max(rates) == pytest.approx(1.0)
    assert rates[-1] == pytest.approx(0.1, abs=1e-3)
    assert all(a >= b for a, b in itertools.pairwise(rates[10:]))


def test_default_is_the_cached_head_and_epochs_follow_the_mode():
    assert TrainConfig().mode == "head"
    assert TrainConfig().epochs == 30
    assert TrainConfig(mode="top-n").epochs == 1
    assert TrainConfig(mode="full", epochs=3).epochs == 3
    assert TrainConfig().encoding == "separate"
    assert TrainConfig(mode="top-n").encoding == "joint"  # its layer cache needs one sequence
