"""Frozen-representation evaluation: extract features from a world model and fit probes on them.

The representation of a model is whatever its objective's `features(world, video)` returns — for V-JEPA
the EMA target encoder's tokens. Probes never update the model.

* `extract_features(model, dataloader)` -> `FeatureSet`: pooled (N, D) features (mean over tokens) and
  every label the batches carry; optionally the tokens themselves (for attentive probes).
* `linear_probe(train, test, task)` -> `ProbeResult`: a logistic-regression probe on standardised pooled
  features, trained full-batch with AdamW, scored by accuracy on `test`.
* `load_world(recipe, checkpoint)` -> (WorldModel, datamodule) built from a recipe exactly as
  ``patchworld fit`` builds it, with weights from a Lightning checkpoint (or left at their seeded random
  initialisation, the usual baseline).

From the shell::

    python -m patchworld.probes --config recipes/vjepa-tiny.yaml --ckpt path/to/last.ckpt --task direction

trains the probe on the recipe's validation split and scores it on its test split (for SyntheticWorld
both are disjoint from the training clips); without ``--ckpt`` it probes the random-init encoder.
"""
from __future__ import annotations

import argparse
import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn


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


@dataclass
class ProbeResult:
    """Accuracy of one probe on one task (chance = frequency of the most common test class)."""

    task: str
    train_accuracy: float
    test_accuracy: float
    chance: float
    classes: int


@torch.no_grad()
def extract_features(model, dataloader: Iterable[dict], keep_tokens: bool = False, max_batches: int | None = None,
                     autocast_dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> FeatureSet:
    """Run a frozen `WorldModel` over a dataloader of {"video", "labels"?} batches.

    Args:
        model: a `WorldModel` (its objective decides which encoder gives the features).
        dataloader: batches with "video" (B, C, T, H, W) and optionally "labels" {task: (B,)}.
        keep_tokens: also keep every token (N, L, D) and its position, for attentive probes.
        max_batches: stop after this many batches.
        autocast_dtype: run under autocast in this dtype (e.g. torch.bfloat16 on CPU); features are
            returned in float32 either way.
        device: where to run (default: where the model's parameters are).
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
                features, where = model.features(video)  # (B, L, D), (B, L, 3)
            features = features.float().cpu()
            pooled.append(features.mean(dim=1))
            if keep_tokens:
                tokens.append(features)
                positions.append(where.cpu())
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


def linear_probe(train: FeatureSet, test: FeatureSet, task: str, steps: int = 300, lr: float = 1e-2,
                 weight_decay: float = 1e-4, seed: int = 0) -> ProbeResult:
    """Fit a linear classifier on `train.pooled` for `task` and report accuracy on `test`.

    Features are standardised with the training set's per-channel mean and std; the classifier is trained
    full-batch with AdamW and cross-entropy for `steps` steps (deterministic for a given `seed`).
    """
    for name, split in (("train", train), ("test", test)):
        if task not in split.labels:
            raise KeyError(f"task {task!r} is not among the {name} labels: {', '.join(sorted(split.labels)) or 'none'}")
    x_train, y_train = train.pooled.float(), train.labels[task]
    x_test, y_test = test.pooled.float(), test.labels[task]
    mean, std = x_train.mean(0), x_train.std(0).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    classes = int(max(y_train.max(), y_test.max())) + 1
    generator = torch.Generator().manual_seed(seed)
    probe = nn.Linear(x_train.shape[1], classes)
    with torch.no_grad():
        probe.weight.copy_(torch.randn(probe.weight.shape, generator=generator) * 0.01)
        probe.bias.zero_()
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    with torch.enable_grad():
        for _ in range(steps):
            loss = nn.functional.cross_entropy(probe(x_train), y_train)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        train_accuracy = (probe(x_train).argmax(1) == y_train).float().mean().item()
        test_accuracy = (probe(x_test).argmax(1) == y_test).float().mean().item()
    chance = torch.bincount(y_test, minlength=classes).max().item() / len(y_test)
    return ProbeResult(task, train_accuracy, test_accuracy, chance, classes)


def load_world(recipe: str | Path, checkpoint: str | Path | None = None, overrides: list[str] | None = None):
    """(WorldModel, datamodule) from a recipe, as ``patchworld fit`` would build them.

    `overrides` are extra CLI arguments (e.g. ``["--data.init_args.val_size", "512"]``). With a
    `checkpoint` (a Lightning .ckpt) the model's weights are loaded from it; without one they keep their
    random initialisation, seeded by the recipe's ``seed_everything``.
    """
    from .cli import PatchworldCLI
    from .plugins import load_plugins

    load_plugins()
    cli = PatchworldCLI(args=["--config", str(recipe), *(overrides or [])], run=False)
    model = cli.model
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own Lightning checkpoint
        model.load_state_dict(state["state_dict"])
    return model, cli.datamodule


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchworld.probes", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the recipe the model was trained with")
    parser.add_argument("--ckpt", help="Lightning checkpoint; omit to probe the random-init model")
    parser.add_argument("--task", action="append", help="label(s) to probe (default: direction)")
    parser.add_argument("--train-size", type=int, default=512, help="probe training clips (validation split)")
    parser.add_argument("--test-size", type=int, default=256, help="probe test clips (test split)")
    parser.add_argument("--bf16", action="store_true", help="extract features under bf16 autocast")
    args = parser.parse_args(argv)
    overrides = ["--data.init_args.val_size", str(args.train_size), "--data.init_args.test_size", str(args.test_size)]
    model, data = load_world(args.config, args.ckpt, overrides)
    data.setup("fit")
    dtype = torch.bfloat16 if args.bf16 else None
    train = extract_features(model, data.val_dataloader(), autocast_dtype=dtype)
    test = extract_features(model, data.test_dataloader(), autocast_dtype=dtype)
    which = "random init" if args.ckpt is None else args.ckpt
    for task in args.task or ["direction"]:
        result = linear_probe(train, test, task)
        print(f"{task:<10} linear probe ({which}): test accuracy {result.test_accuracy:.3f} "
              f"(train {result.train_accuracy:.3f}, chance {result.chance:.3f}, {len(train)}/{len(test)} clips)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
