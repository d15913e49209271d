import json

import pytest

from rewards.data import (
    load_rankings,
    parse_hh_prompt,
    ranking_from_record,
    rankings_from_records,
    split_by_prompt,
)

from reward_factories import SHARED_DATA, separable_rankings


def test_hh_prompt_becomes_chat_messages():
    text = "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell a joke\n\nAssistant:"
    assert parse_hh_prompt(text) == [
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell a joke"},
    ]


def test_pairs_record_is_a_k2_ranking():
    r = ranking_from_record({"prompt": "\n\nHuman: q\n\nAssistant:", "chosen": "a", "rejected": "b"})
    assert r.completions == ["a", "b"]
    assert r.groups == [[0], [1]]
    assert r.messages == [{"role": "user", "content": "q"}]


def test_flat_ranking_groups_alias_and_completion_objects():
    flat = ranking_from_record({"prompt": "p", "completions": ["a", "b", "c"], "ranking": [2, 0, 1]})
    grouped = ranking_from_record(
        {"prompt": "p", "completions": [{"text": "a"}, "b", {"text": "c"}], "groups": [[2], [0, 1]]}
    )
    assert flat.groups == [[2], [0], [1]]
    assert grouped.completions == ["a", "b", "c"]
    assert grouped.groups == [[2], [0, 1]]
    assert grouped.rank_of() == [1, 1, 0]


def test_messages_take_precedence_over_prompt_text():
    messages = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    r = ranking_from_record({"prompt": "User: a ...", "messages": messages, "completions": ["x", "y"], "ranking": [1, 0]})
    assert r.messages == messages


def test_ranking_that_does_not_index_its_completions_is_refused():
    with pytest.raises(ValueError, match="does not index"):
        ranking_from_record({"prompt": "p", "completions": ["a", "b"], "ranking": [0, 2]})


def test_single_group_rankings_are_dropped():
    assert rankings_from_records([{"prompt": "p", "completions": ["a", "b"], "groups": [[0, 1]]}]) == []


def test_split_by_prompt_keeps_a_conversation_on_one_side():
    rankings = separable_rankings(20) + separable_rankings(20, seed=1)  # every prompt twice
    train, held = split_by_prompt(rankings, 0.25, seed=3)
    assert len(held) == 10  # 5 of 20 prompts, each with its 2 rankings
    assert not {r.prompt_key for r in train} & {r.prompt_key for r in held}
    assert split_by_prompt(rankings, 0.25, seed=3) == (train, held)


def test_load_rankings_reads_jsonl(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completions": ["a", "b"], "ranking": [1, 0]}) + "\n\n")
    assert [r.groups for r in load_rankings(path)] == [[[1], [0]]]


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="shared data folder ../shared/data absent")
def test_shared_files_load():
    oasst = load_rankings(SHARED_DATA / "oasst1_en_rankings.jsonl")
    hh = load_rankings(SHARED_DATA / "hh_rlhf_helpful_base_test.jsonl")
    assert len(oasst) == 608
    assert max(len(r.completions) for r in oasst) == 9
    assert len(hh) == 2339
    assert hh[0].messages[-1]["role"] == "user"
