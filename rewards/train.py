"""Training a reward model on human rankings, top to bottom.

    1. split by prompt (no conversation on both sides), seed everything
    2. encode every completion once (chat template, left truncation)
    3. per mode, the inputs of the trainable part:
         head  - pooled features of the frozen backbone, cached by content hash
         top-n - hidden states entering the top N layers, cached the same way
         full  - token ids (everything trains; the GPU path)
    4. loop: one ranking per batch element, K-wise Bradley-Terry loss (rewards/loss.py), AdamW,
       linear warm-up then cosine decay, gradient accumulation, metrics per step as JSONL
    5. reward normalisation over the training completions, held-out evaluation, artifact

`train_reward_model` is what the command line and the Celery worker call.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from rewards.artifacts import save_reward_model
from rewards.cache import FeatureCache, weights_fingerprint
from rewards.data import Ranking, data_hash, split_by_prompt
from rewards.evaluate import evaluate_scores
from rewards.loss import pair_matrix, pair_stats, ranking_loss
from rewards.model import Normalisation, RewardModel, build_reward_model, pad_batch

MODES = ("head", "top-n", "full")


@dataclass
class TrainConfig:
    """Hyperparameters; saved in meta.json next to the weights and on the training-run row."""

    base: str = "minilm"  # "tiny", "minilm", a local Hugging Face directory or a .gguf file
    mode: str = "head"  # "head" (frozen backbone), "top-n" (top N layers train) or "full"
    top_n: int = 2  # layers that train in top-n mode
    # "separate": completion and latest user turn encoded apart, head on [r, r * c] (what
    # learns on a CPU, bench/RESULTS.md); "joint": one sequence, conversation then completion.
    # None: separate, except in top-n mode, whose layer cache needs one sequence.
    encoding: str | None = None
    max_length: int = 128  # tokens per (conversation, completion); conversation cut on the left
    epochs: int | None = None  # passes over the training rankings; None: 30 head, 1 otherwise
    batch_size: int = 8  # rankings per micro-batch (each ranking scores all its K completions)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float = 1e-4  # peak learning rate of the backbone layers that train
    head_lr: float = 1e-3  # peak learning rate of the scalar head
    weight_decay: float = 0.01  # AdamW decoupled weight decay (not applied to biases and norms)
    warmup_fraction: float = 0.1  # share of the steps with linear warm-up from 0
    min_lr_ratio: float = 0.1  # cosine decays to this share of the peak
    include_ties: bool = False  # tie pairs in the loss (as half a win each way)
    center_coef: float = 0.0  # weight of mean(r^2), which keeps rewards near zero
    val_fraction: float = 0.1  # prompts held out when no validation set is given
    seed: int = 0  # seeds Python, NumPy, torch, the split and the shuffling
    device: str = "auto"  # "auto" (cuda when present), "cpu" or "cuda"
    cache_dir: str | None = None  # where head/top-n caches persist between runs (None: memory)
    embed_batch_size: int = 32  # sequences per forward pass when filling the caches
    max_grad_norm: float = 1.0  # gradient clipping
    # head mode: "lbfgs" fits the head on all training rankings at once with an L2 penalty
    # chosen on the validation split (seconds on cached features; what generalises on
    # thousands of rankings); "adamw" runs the same loop as the other modes.
    head_optimizer: str = "lbfgs"
    head_l2_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)  # standardised

    def __post_init__(self) -> None:
        # The head trains in seconds per epoch on cached features; a backbone pass is costly.
        if self.epochs is None:
            self.epochs = 30 if self.mode == "head" else 1
        if self.encoding is None:
            self.encoding = "joint" if self.mode == "top-n" else "separate"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def cosine_with_warmup(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Learning-rate multiplier: linear 0 -> 1 over `warmup` steps, cosine 1 -> min_ratio after."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class Scorer:
    """The trainable part of the model for one mode, fed with that mode's per-completion inputs."""

    def __init__(self, model: RewardModel, config: TrainConfig, device: torch.device) -> None:
        self.model, self.config, self.device = model, config, device
        self.mode = config.mode
        self.n = config.top_n if config.mode == "top-n" else 0
        if self.mode == "top-n" and not 1 <= self.n <= model.num_layers:
            raise ValueError(f"top_n must be in 1..{model.num_layers}")
        if self.mode == "top-n" and model.encoding != "joint":
            raise ValueError("top-n mode needs the joint encoding (encoding='joint')")
        fingerprint = weights_fingerprint(model.backbone) if self.mode != "full" else ""
        stage = "pooled" if self.mode == "head" else f"layer{model.num_layers - self.n}"
        self.cache = FeatureCache(config.cache_dir, fingerprint, stage)

    def autocast(self) -> Any:
        """bf16 on GPU (the backbone; the head and loss stay fp32), plain fp32 on CPU."""
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    @torch.no_grad()
    def _frozen(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        self.model.eval()
        ids, mask = pad_batch(sequences, self.model.pad_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        with self.autocast():
            if self.mode == "head":
                pooled = self.model.features(ids, mask).float().cpu()  # (N, H)
                return list(pooled)
            hidden = self.model.hidden_below(ids, mask, self.n).cpu()  # (N, T, H)
        # stored in half precision: the cache of a few thousand completions stays under 1 GB
        return [h[: len(s)].to(torch.bfloat16) for h, s in zip(hidden, sequences, strict=True)]

    def inputs(self, sequences: list[list[int]]) -> list[torch.Tensor]:
        """Per-completion inputs of the trainable part (cached for head and top-n)."""
        if self.mode == "full":
            return [torch.tensor(s, dtype=torch.long) for s in sequences]
        return self.cache.get_or_compute(sequences, self._frozen, self.config.embed_batch_size)

    def __call__(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """(N,) raw rewards of N completions."""
        if self.mode == "head":
            features = torch.stack(list(items)).to(self.device)  # (N, H)
            return self.model.head(features).squeeze(-1)
        lengths = [len(x) for x in items]
        mask = torch.zeros(len(items), max(lengths), dtype=torch.long)  # (N, T)
        for i, n in enumerate(lengths):
            mask[i, :n] = 1
        mask = mask.to(self.device)
        with self.autocast():
            if self.mode == "full":
                ids, _ = pad_batch([x.tolist() for x in items], self.model.pad_id)
                return self.model(ids.to(self.device), mask).float()
            hidden = torch.nn.utils.rnn.pad_sequence(list(items), batch_first=True)  # (N, T, H)
            hidden = hidden.to(self.device, torch.float32)
            return self.model.forward_from_hidden(hidden, mask, self.n).float()

    @torch.no_grad()
    def scores(self, items: Sequence[torch.Tensor], batch_size: int = 64) -> torch.Tensor:
        self.model.eval()
        out = [
            self(items[i : i + batch_size]).float().cpu() for i in range(0, len(items), batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0)


def _param_groups(model: RewardModel, config: TrainConfig) -> list[dict[str, Any]]:
    """Head at head_lr; backbone at lr, without weight decay on biases and norm weights."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for p in model.backbone.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": list(model.head.parameters()), "lr": config.head_lr, "weight_decay": 0.0}]
    if decay:
        groups.append({"params": decay, "lr": config.lr, "weight_decay": config.weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "lr": config.lr, "weight_decay": 0.0})
    return groups


def _scores_per_ranking(
    scorer: Scorer, rankings: Sequence[Ranking], items: list[list[torch.Tensor]]
) -> list[list[float]]:
    flat = scorer.scores([x for per_ranking in items for x in per_ranking]).tolist()
    out, start = [], 0
    for r in rankings:
        out.append(flat[start : start + len(r.completions)])
        start += len(r.completions)
    return out


ProgressCallback = Callable[[int, int, dict[str, Any]], None]


def train_reward_model(
    config: TrainConfig,
    train_rankings: Sequence[Ranking],
    val_rankings: Sequence[Ranking] | None = None,
    out_dir: str | Path | None = None,
    progress_callback: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Train, normalise, evaluate on held-out prompts, save to `out_dir`; returns the metrics.

    Without `val_rankings`, `config.val_fraction` of the prompts are held out.
    progress_callback(step, total_steps, step_metrics) is called after every optimizer step
    (a Celery task can store it on the run row).
    """
    return fit_reward_model(config, train_rankings, val_rankings, out_dir, progress_callback)[1]


def fit_reward_model(
    config: TrainConfig,
    train_rankings: Sequence[Ranking],
    val_rankings: Sequence[Ranking] | None = None,
    out_dir: str | Path | None = None,
    progress_callback: ProgressCallback | None = None,
) -> tuple[RewardModel, dict[str, Any]]:
    """`train_reward_model` that also returns the trained model (for notebooks and benches)."""
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {config.mode!r}")
    started = time.perf_counter()
    # 1. split and seed
    seed_everything(config.seed)
    if val_rankings is None:
        train, val = split_by_prompt(train_rankings, config.val_fraction, config.seed)
    else:
        train, val = list(train_rankings), list(val_rankings)
    if not train:
        raise ValueError("no training rankings")
    device = resolve_device(config.device)
    model = build_reward_model(
        config.base, config.max_length, config.seed, config.encoding or "separate"
    )
    model = model.to(device)

    # 2. encode every completion once
    def encode(rankings: Sequence[Ranking]) -> list[list[list[int]]]:
        return [[model.encode(r.messages, c) for c in r.completions] for r in rankings]

    train_seqs, val_seqs = encode(train), encode(val)

    # 3. the trainable part's inputs (frozen work done here, once)
    scorer = Scorer(model, config, device)
    model.set_trainable(config.mode, config.top_n)

    def inputs(seqs: list[list[list[int]]]) -> list[list[torch.Tensor]]:
        flat = scorer.inputs([s for per_ranking in seqs for s in per_ranking])
        out, start = [], 0
        for per_ranking in seqs:
            out.append(flat[start : start + len(per_ranking)])
            start += len(per_ranking)
        return out

    train_items, val_items = inputs(train_seqs), inputs(val_seqs)
    embed_seconds = time.perf_counter() - started

    if config.mode == "head" and config.head_optimizer == "lbfgs":
        fits, n_fits = _fit_head(
            model, config, (train, train_items), (val, val_items), progress_callback, out_dir
        )
        return _finish(
            model,
            config,
            scorer,
            started,
            embed_seconds,
            train,
            val,
            train_items,
            val_items,
            fits,
            n_fits,
            out_dir,
        )
    if config.head_optimizer not in ("lbfgs", "adamw"):
        raise ValueError(f"head_optimizer must be lbfgs or adamw, not {config.head_optimizer!r}")

    # 4. the loop
    optimizer = torch.optim.AdamW(_param_groups(model, config))
    batches_per_epoch = math.ceil(len(train) / config.batch_size)
    epochs = config.epochs or 1
    total_steps = math.ceil(batches_per_epoch / config.grad_accum) * epochs
    warmup = max(1, int(config.warmup_fraction * total_steps))
    peak = [g["lr"] for g in optimizer.param_groups]
    generator = torch.Generator().manual_seed(config.seed)
    log = None
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(out_dir) / "metrics.jsonl", "w")  # noqa: SIM115
    history: list[dict[str, Any]] = []
    step = 0
    bar = tqdm(total=total_steps, desc=f"reward {config.mode}", unit="step")
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator).tolist()
        batches = [
            order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)
        ]
        for b, batch in enumerate(batches):
            rankings = [train[i] for i in batch]
            k_max = max(len(r.completions) for r in rankings)
            items = [x for i in batch for x in train_items[i]]
            flat = scorer(items)  # (N,) N = sum of K over the batch
            rewards = torch.zeros(len(batch), k_max, device=device)  # (B, K) padded
            valid = torch.zeros(len(batch), k_max, dtype=torch.bool, device=device)
            start = 0
            for row, r in enumerate(rankings):
                k = len(r.completions)
                rewards[row, :k] = flat[start : start + k]
                valid[row, :k] = True
                start += k
            win, tie = pair_matrix(rankings, k_max, config.include_ties)
            win, tie = win.to(device), tie.to(device)  # (B, K, K)
            loss = ranking_loss(rewards, win, tie, valid, config.center_coef)
            (loss / config.grad_accum).backward()
            if (b + 1) % config.grad_accum and b + 1 < len(batches):
                continue
            for group, lr in zip(optimizer.param_groups, peak, strict=True):
                group["lr"] = lr * cosine_with_warmup(
                    step, total_steps, warmup, config.min_lr_ratio
                )
            torch.nn.utils.clip_grad_norm_(
                [p for g in optimizer.param_groups for p in g["params"]], config.max_grad_norm
            )
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            accuracy, margin = pair_stats(rewards.detach(), win)
            record = {
                "step": step + 1,
                "epoch": epoch + (b + 1) / len(batches),
                "loss": loss.item(),
                "pair_accuracy": accuracy,
                "margin": margin,
                "lr": optimizer.param_groups[-1]["lr"],
                "seconds": round(time.perf_counter() - started, 3),
            }
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{accuracy:.2f}")
            if log:
                log.write(json.dumps(record) + "\n")
            if progress_callback:
                progress_callback(step, total_steps, record)
        if val:
            epoch_metrics = evaluate_scores(val, _scores_per_ranking(scorer, val, val_items))
            history.append({"epoch": epoch + 1, **epoch_metrics})
            if log:
                log.write(json.dumps({"epoch_end": epoch + 1, "val": epoch_metrics}) + "\n")
    bar.close()
    if log:
        log.close()
    return _finish(
        model, config, scorer, started, embed_seconds, train, val, train_items, val_items,
        history, step, out_dir,
    )  # fmt: skip


def _finish(
    model: RewardModel,
    config: TrainConfig,
    scorer: Scorer,
    started: float,
    embed_seconds: float,
    train: list[Ranking],
    val: list[Ranking],
    train_items: list[list[torch.Tensor]],
    val_items: list[list[torch.Tensor]],
    history: list[dict[str, Any]],
    step: int,
    out_dir: str | Path | None,
) -> tuple[RewardModel, dict[str, Any]]:
    device = model.head.weight.device
    train_seconds = time.perf_counter() - started - embed_seconds

    # 5. normalisation over the training completions, held-out evaluation, artifact
    train_scores = torch.cat([scorer.scores(per_ranking) for per_ranking in train_items])
    model.normalisation = Normalisation(
        mean=float(train_scores.mean()), std=float(train_scores.std().clamp(min=1e-6))
    )
    metrics: dict[str, Any] = {
        "train": evaluate_scores(train, _scores_per_ranking(scorer, train, train_items)),
        "val": evaluate_scores(val, _scores_per_ranking(scorer, val, val_items)) if val else {},
        "val_per_epoch": history,
        "train_rankings": len(train),
        "val_rankings": len(val),
        "steps": step,
        "embed_seconds": round(embed_seconds, 2),
        "train_seconds": round(train_seconds, 2),
        "cache_computed": scorer.cache.computed,
    }
    if out_dir:
        save_reward_model(
            model.cpu(),
            out_dir,
            config=asdict(config),
            metrics=metrics,
            data_sha256=data_hash(train),
        )
    return model.to(device), metrics


RankingFeatures = tuple[list[Ranking], list[list[torch.Tensor]]]


def _fit_head(
    model: RewardModel,
    config: TrainConfig,
    train: RankingFeatures,
    val: RankingFeatures,
    progress_callback: ProgressCallback | None,
    out_dir: str | Path | None,
) -> tuple[list[dict[str, Any]], int]:
    """Head mode's fit: L2-penalised Bradley-Terry over all training rankings at once (L-BFGS),
    the penalty chosen on the validation split from `config.head_l2_grid`, as one would fit a
    logistic regression. Features are standardised for the fit and the scale folded back into
    the head, so the saved model is the plain linear head. Returns (per-candidate metrics,
    number of fits)."""
    device = model.head.weight.device
    train_x, train_win, train_tie = _stacked(train, config, device)
    scale = train_x[train_x.abs().sum(-1) > 0].std(0).clamp(min=1e-6)  # (H,) over completions
    val_x = _stacked(val, config, device)[0] if val[0] else None
    history: list[dict[str, Any]] = []
    log = None
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        log = open(Path(out_dir) / "metrics.jsonl", "w")  # noqa: SIM115
    grid = list(config.head_l2_grid) if val_x is not None else [1.0]
    best: tuple[float, float, torch.Tensor] | None = None
    for step, l2 in enumerate(grid, start=1):
        w = _lbfgs(train_x / scale, train_win, train_tie, l2, config.center_coef)
        rewards = (train_x / scale) @ w
        accuracy, margin = pair_stats(rewards, train_win)
        record: dict[str, Any] = {"step": step, "l2": l2, "pair_accuracy": accuracy}
        record["loss"] = float(ranking_loss(rewards, train_win, train_tie))
        record["margin"] = margin
        record["lr"] = 0.0
        if val_x is not None:
            val_scores = ((val_x / scale) @ w).tolist()
            per_ranking = [
                row[: len(r.completions)] for row, r in zip(val_scores, val[0], strict=True)
            ]
            record["val"] = evaluate_scores(val[0], per_ranking)
            history.append({"epoch": step, "l2": l2, **record["val"]})
            key = record["val"]["accuracy"]
            if best is None or key > best[0]:  # a tie keeps the smaller penalty seen first
                best = (key, l2, w)
        else:
            best = (0.0, l2, w)
        if log:
            log.write(json.dumps(record) + "\n")
        if progress_callback:
            progress_callback(step, len(grid), record)
    if log:
        log.close()
    assert best is not None
    with torch.no_grad():
        model.head.weight.copy_((best[2] / scale).unsqueeze(0))
        model.head.bias.zero_()  # Bradley-Terry sees only differences; normalisation centres
    return history, len(grid)


def _stacked(
    data: RankingFeatures, config: TrainConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(B, K, H) features padded with zeros, and the (B, K, K) win and tie masks."""
    rankings, items = data
    k_max = max(len(r.completions) for r in rankings)
    x = torch.zeros(len(rankings), k_max, items[0][0].shape[-1], device=device)
    for row, per_ranking in enumerate(items):
        x[row, : len(per_ranking)] = torch.stack(list(per_ranking)).to(device)
    win, tie = pair_matrix(rankings, k_max, config.include_ties)
    return x, win.to(device), tie.to(device)


def _lbfgs(
    x: torch.Tensor, win: torch.Tensor, tie: torch.Tensor, l2: float, center_coef: float
) -> torch.Tensor:
    """argmin_w ranking_loss(x @ w) + l2 * |w|^2 over all rankings."""
    w = torch.zeros(x.shape[-1], device=x.device, requires_grad=True)
    optimizer = torch.optim.LBFGS([w], lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = ranking_loss(x @ w, win, tie, center_coef=center_coef) + l2 * (w @ w)
        loss.backward()
        return loss

    optimizer.step(closure)
    return w.detach()
