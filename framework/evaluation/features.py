"""Frozen features of a world model, extracted once and cached: what probes and the layer search read.

The representation of a model is whatever its objective's `features(world, video)` returns (for V-JEPA
the EMA target encoder's tokens), read where `where` says (`Objective.feature_options`).

* `extract_features(model, dataloader)` -> `FeatureSet`: pooled (N, D) features (mean over tokens) and
  every label the batches carry; optionally the tokens themselves (for attentive probes).
* `save_features` / `load_features`: a FeatureSet as one safetensors file (users can probe precomputed
  features of their own in the same layout).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch


@dataclass
class FeatureSet:
    """Frozen features of N clips: pooled (N, D) float32, labels {task: (N,) long}; optionally tokens
    (N, L, D) and positions (N, L, 3) when every clip has the same token count L."""

    pooled: torch.Tensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: torch.Tensor | None = None
    positions: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.pooled.shape[0]




@torch.no_grad()
def extract_features(model, dataloader: Iterable[dict], keep_tokens: bool = False, max_batches: int | None = None,
                     autocast_dtype: torch.dtype | None = None, device: torch.device | str | None = None,
                     where: dict | None = None) -> FeatureSet:
    """Run a frozen `WorldModel` over a dataloader of {"video", "labels"?} batches.

    Args:
        model: a `WorldModel` (its objective decides which encoder gives the features).
        dataloader: batches with "video" (B, C, T, H, W) and optionally "labels" {task: (B,)}.
        keep_tokens: also keep every token (N, L, D) and its position, for attentive probes.
        max_batches: stop after this many batches.
        autocast_dtype: run under autocast in this dtype (e.g. torch.bfloat16 on CPU); features are
            returned in float32 either way.
        device: where to run (default: where the model's parameters are).
        where: where to read the features, as keyword arguments of `features` (e.g. {"depth": 2}; see
            `Objective.feature_options`); default: the objective's own reading.
    """
    was_training = model.training
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    pooled, tokens, positions = [], [], []
    labels: dict[str, list[torch.Tensor]] = {}
    try:
        for index, batch in enumerate(dataloader):
            if max_batches is not None and index >= max_batches:
                break
            video = batch["video"].to(device)
            context = torch.autocast(device.type, autocast_dtype) if autocast_dtype else contextlib.nullcontext()
            with context:
                features, at = model.features(video, **(where or {}))  # (B, L, D), (B, L, 3)
            features = features.float().cpu()
            pooled.append(features.mean(dim=1))
            if keep_tokens:
                tokens.append(features)
                positions.append(at.cpu())
            for task, value in batch.get("labels", {}).items():
                labels.setdefault(task, []).append(torch.as_tensor(value).long().cpu())
    finally:
        model.train(was_training)
    if not pooled:
        raise ValueError("extract_features got an empty dataloader")
    same_length = keep_tokens and len({t.shape[1] for t in tokens}) == 1
    return FeatureSet(
        pooled=torch.cat(pooled),
        labels={task: torch.cat(values) for task, values in labels.items()},
        tokens=torch.cat(tokens) if same_length else None,
        positions=torch.cat(positions) if same_length else None,
    )


def save_features(features: FeatureSet, path: str | Path) -> Path:
    """Write a FeatureSet as safetensors (atomically): "pooled", "tokens", "positions", "labels.<task>"."""
    from safetensors.torch import save_file

    from ..data.video_io import atomic_path

    tensors = {"pooled": features.pooled} | {f"labels.{t}": y for t, y in features.labels.items()}
    if features.tokens is not None:
        tensors |= {"tokens": features.tokens, "positions": features.positions}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
    return path


def load_features(path: str | Path) -> FeatureSet:
    """A FeatureSet saved by `save_features` (or made by you: "pooled" (N, D) or "tokens" (N, L, D), and a
    "labels.<task>" (N,) per task); a missing or malformed file is a one-line error naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..errors import DataError

    try:
        tensors = load_file(str(path))
    except (FileNotFoundError, SafetensorError, OSError) as error:
        raise DataError(f"cannot read features {path}: {error}") from None
    tokens = tensors.get("tokens")
    pooled = tensors.get("pooled", tokens.float().mean(1) if tokens is not None else None)
    labels = {k.split(".", 1)[1]: v.long() for k, v in tensors.items() if k.startswith("labels.")}
    if pooled is None or not labels:
        raise DataError(f"features {path} need 'pooled' or 'tokens' and at least one 'labels.<task>'; found "
                        f"{', '.join(sorted(tensors)) or 'nothing'}")
    positions = tensors.get("positions")
    if tokens is not None and positions is None:
        positions = torch.zeros(*tokens.shape[:2], 3, dtype=torch.long)
    return FeatureSet(pooled.float(), labels, tokens, positions)
