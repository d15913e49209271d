import json
import pickle

import pytest
import torch

from rewards.artifacts import ArtifactError, load_reward_model, sha256_file
from rewards.train import TrainConfig, fit_reward_model
from reward_factories import separable_rankings


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    out = tmp_path_factory.mktemp("rm")
    config = TrainConfig(base="tiny", mode="full", max_length=48, epochs=2, lr=3e-3, head_lr=3e-2)
    model, metrics = fit_reward_model(config, separable_rankings(16), separable_rankings(4, 7), out)
    return model, out


def test_saved_model_scores_identically_after_loading(saved):
    model, out = saved
    loaded = load_reward_model(out)
    completions = ["good", "uh okay", "so so bad"]
    assert loaded.score("question 3?", completions) == model.score("question 3?", completions)
    assert loaded.score("q", completions, normalize=False) == model.score("q", completions, normalize=False)


def test_meta_describes_the_model(saved):
    model, out = saved
    meta = json.loads((out / "meta.json").read_text())
    assert meta["base"] == "tiny"
    assert meta["config"]["mode"] == "full"
    assert len(meta["data_sha256"]) == 64
    assert meta["normalisation"] == {"mean": model.normalisation.mean, "std": model.normalisation.std}
    assert {"torch", "transformers", "safetensors"} <= meta["versions"].keys()
    assert meta["metrics"]["val"]["pairs"] == 12
    assert meta["sha256"]["model.safetensors"] == sha256_file(out / "model.safetensors")


def copy_artifact(out, tmp_path):
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(out, target)
    return target


def test_a_modified_weights_file_is_refused(saved, tmp_path):
    target = copy_artifact(saved[1], tmp_path)
    weights = target / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256"):
        load_reward_model(target)


def test_a_modified_tokenizer_is_refused(saved, tmp_path):
    target = copy_artifact(saved[1], tmp_path)
    tokenizer_json = target / "tokenizer" / "tokenizer.json"
    tokenizer_json.write_text(tokenizer_json.read_text().replace('"<unk>"', '"<UNK>"'))
    with pytest.raises(ArtifactError, match="sha256"):
        load_reward_model(target)


class Boom:
    def __reduce__(self):
        return (exec, ("raise SystemExit('unpickled!')",))


def test_a_pickle_is_refused_even_with_a_matching_hash(saved, tmp_path):
    # given an attacker who also rewrote meta.json's hash
    target = copy_artifact(saved[1], tmp_path)
    weights = target / "model.safetensors"
    weights.write_bytes(pickle.dumps({"head.weight": Boom()}))
    meta = json.loads((target / "meta.json").read_text())
    meta["sha256"]["model.safetensors"] = sha256_file(weights)
    (target / "meta.json").write_text(json.dumps(meta))
    # when / then: refused, never unpickled
    with pytest.raises(ArtifactError, match="pickle"):
        load_reward_model(target)
    torch.save({"x": torch.zeros(1)}, weights)
    meta["sha256"]["model.safetensors"] = sha256_file(weights)
    (target / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="pickle"):
        load_reward_model(target)


def test_a_directory_without_meta_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match=r"meta\.json"):
        load_reward_model(tmp_path)
