"""Frozen-backbone outputs cached by content hash.

In `head` mode the pooled vector of each completion, in `top-n` mode the hidden states entering
the top N layers, never change while training: they depend only on the frozen weights and the
token ids. They are computed once, keyed by sha256(backbone weights, layer, token ids), and kept
in a safetensors file per (backbone, layer) under `cache_dir`, so retraining on a grown data set
embeds only the completions it has not seen.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm


def weights_fingerprint(module: nn.Module) -> str:
    """sha256 over a module's parameters: a cache made with other weights never matches."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def content_key(fingerprint: str, stage: str, ids: Sequence[int]) -> str:
    return hashlib.sha256(f"{fingerprint}:{stage}:{list(ids)}".encode()).hexdigest()


class FeatureCache:
    """content key -> tensor, backed by `<cache_dir>/<fingerprint>-<stage>.safetensors`."""

    def __init__(self, cache_dir: str | Path | None, fingerprint: str, stage: str) -> None:
        self.fingerprint, self.stage = fingerprint, stage
        self.path = Path(cache_dir) / f"{fingerprint[:16]}-{stage}.safetensors" if cache_dir else None
        self.store: dict[str, torch.Tensor] = {}
        if self.path and self.path.exists():
            self.store = load_file(self.path)
        self.computed = 0  # how many were missing and had to be run through the backbone

    def get_or_compute(
        self,
        sequences: Sequence[list[int]],
        compute: Callable[[list[list[int]]], list[torch.Tensor]],
        batch_size: int = 32,
    ) -> list[torch.Tensor]:
        """One tensor per sequence; only sequences missing from the cache go to `compute`."""
        keys = [content_key(self.fingerprint, self.stage, s) for s in sequences]
        missing = sorted({k: s for k, s in zip(keys, sequences, strict=True) if k not in self.store}.items())
        # longest first so batches pad little and the slowest work is visible early
        missing.sort(key=lambda item: -len(item[1]))
        starts = range(0, len(missing), batch_size)
        for start in tqdm(starts, desc=f"caching {self.stage}", disable=len(starts) < 2):
            chunk = missing[start : start + batch_size]
            for (key, _), value in zip(chunk, compute([s for _, s in chunk]), strict=True):
                self.store[key] = value.contiguous()
        self.computed += len(missing)
        if missing and self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_file(self.store, str(self.path))
        return [self.store[k] for k in keys]
