"""A trained reward model on disk: files that describe themselves and are checked on loading.

    DIR/model.safetensors     backbone + head weights (never a pickle)
    DIR/backbone/config.json  the backbone architecture
    DIR/tokenizer/...         tokenizer files (JSON and text)
    DIR/meta.json             training config, base, data hash, metrics, reward normalisation,
                              library versions, and the sha256 of every file above

Loading recomputes every sha256 and refuses a file that does not match, and refuses weights
that are not safetensors (a pickle can run code when it is read).
"""

from __future__ import annotations

import hashlib
import json
import platform
import struct
from pathlib import Path
from typing import Any

import safetensors
import torch
import transformers
from safetensors.torch import load_file, save_file

from rewards.model import Normalisation, RewardModel, backbone_from_config

FORMAT = "rankloop-reward-model/1"
WEIGHTS = "model.safetensors"


class ArtifactError(ValueError):
    """The directory is not an artifact (reward model or policy) this code can trust."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
    }


def save_reward_model(
    model: RewardModel,
    out_dir: str | Path,
    config: dict[str, Any],
    metrics: dict[str, Any],
    data_sha256: str,
) -> Path:
    """Write weights, architecture, tokenizer and meta.json (with their sha256) to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS), metadata={"format": FORMAT})
    model.backbone.config.save_pretrained(out / "backbone")
    model.tokenizer.save_pretrained(out / "tokenizer")
    files = [
        out / WEIGHTS,
        *sorted((out / "backbone").rglob("*")),
        *sorted((out / "tokenizer").rglob("*")),
    ]
    meta = {
        "format": FORMAT,
        "base": model.base,
        "max_length": model.max_length,
        "pooling": model.pooling,
        "encoding": model.encoding,
        "config": config,
        "data_sha256": data_sha256,
        "metrics": metrics,
        "normalisation": {"mean": model.normalisation.mean, "std": model.normalisation.std},
        "versions": library_versions(),
        "sha256": {str(f.relative_to(out)): sha256_file(f) for f in files if f.is_file()},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str))
    return out


def refuse_pickle(path: Path) -> None:
    """A pickle (protocol 2+) or a torch.save zip is refused, whatever its recorded hash."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:2] == b"PK" or head[:1] == b"\x80":
        raise ArtifactError(f"{path} is a pickle / torch.save checkpoint: refused, never unpickled")


def check_safetensors(path: Path) -> None:
    """A safetensors file starts with an 8-byte header length and a JSON header."""
    refuse_pickle(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{" or struct.unpack("<Q", head[:8])[0] > 100_000_000:
        raise ArtifactError(f"{path} is not a safetensors file")


def read_meta(path: str | Path) -> dict[str, Any]:
    meta_path = Path(path) / "meta.json"
    if not meta_path.is_file():
        raise ArtifactError(f"{meta_path} missing: not a reward model directory")
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ArtifactError(f"unknown format {meta.get('format')!r}")
    return meta


def load_reward_model(path: str | Path, device: str = "cpu") -> RewardModel:
    """The reward model saved in `path`, after checking every file's sha256."""
    root = Path(path)
    meta = read_meta(root)
    expected: dict[str, str] = meta["sha256"]
    if WEIGHTS not in expected:
        raise ArtifactError("meta.json lists no weights")
    for name, digest in expected.items():
        file = root / name
        if not file.is_file() or sha256_file(file) != digest:
            raise ArtifactError(f"{file}: sha256 does not match meta.json (modified or missing)")
    check_safetensors(root / WEIGHTS)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    backbone = backbone_from_config(root / "backbone")
    model = RewardModel(
        backbone,
        tokenizer,
        base=meta["base"],
        max_length=meta["max_length"],
        encoding=meta.get("encoding", "joint"),  # models saved before encodings were joint
    )
    model.load_state_dict(load_file(str(root / WEIGHTS)), strict=True)
    model.normalisation = Normalisation(**meta["normalisation"])
    model.meta = meta
    return model.to(device).eval()
