"""Frozen-representation evaluation: extract features from a world model and fit probes on them.

The representation of a model is whatever its objective's `features(world, video)` returns — for V-JEPA
the EMA target encoder's tokens. Probes never update the model.

* `extract_features(model, dataloader)` -> `FeatureSet`: pooled (N, D) features (mean over tokens) and
  every label the batches carry; optionally the tokens themselves (for attentive probes).
* `linear_probe(train, test, task)` -> `ProbeResult`: a logistic-regression probe on standardised pooled
  features, trained full-batch with AdamW, scored by accuracy on `test`.
* `AttentiveProbe` / `LinearProbe`, `train_probe`, `probe_sweep`: the comparison's probes (learned-query
  cross-attention pooling over all tokens + linear, or linear on standardised mean-pooled features), one
  independent query/head per task, an (lr, weight decay) sweep chosen on validation only, test accuracy
  reported; `auroc` for surprise scores.
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
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from .precision import autocast_bf16



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

    from .data.video_io import atomic_path

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

    from .errors import DataError

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


def linear_probe(train: FeatureSet, test: FeatureSet, task: str, steps: int = 300, lr: float = 1e-2,
                 weight_decay: float = 1e-4, seed: int = 0, inputs: str = "pooled") -> ProbeResult:
    """Fit a linear classifier for `task` on `train` and report accuracy on `test`.

    `inputs` = "pooled" uses the mean-pooled features (N, D); "tokens" uses every token's features
    concatenated (N, L*D), which keeps where things are (needs sets extracted with keep_tokens=True).
    Features are standardised with the training set's per-channel mean and std; the classifier is trained
    full-batch with AdamW and cross-entropy for `steps` steps (deterministic for a given `seed`).
    """
    for name, split in (("train", train), ("test", test)):
        if task not in split.labels:
            raise KeyError(f"task {task!r} is not among the {name} labels: {', '.join(sorted(split.labels)) or 'none'}")
        if inputs == "tokens" and split.tokens is None:
            raise ValueError(f"inputs='tokens' needs the {name} set extracted with keep_tokens=True (same token count)")
    if inputs not in ("pooled", "tokens"):
        raise ValueError(f"linear_probe inputs must be 'pooled' or 'tokens', got {inputs!r}")
    pick = (lambda s: s.pooled.float()) if inputs == "pooled" else (lambda s: s.tokens.float().flatten(1))
    x_train, y_train = pick(train), train.labels[task]
    x_test, y_test = pick(test), test.labels[task]
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


# ---- probes on frozen tokens: attentive and linear, several tasks at once, with a validation sweep -----
def _heads_for(dim: int, heads: int) -> int:
    """The largest head count <= `heads` that divides `dim`."""
    return max(h for h in range(1, max(1, heads) + 1) if dim % h == 0)


class TaskHeads(nn.Module):
    """Independent linear classifiers, one per task, evaluated together: pooled (B, T, D) or (B, D) ->
    logits (B, T, C) with C the largest class count; a task's unused class slots are -inf."""

    def __init__(self, dim: int, classes: list[int]):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(len(classes), max(classes), dim))
        self.bias = nn.Parameter(torch.zeros(len(classes), max(classes)))
        self.register_buffer("valid", torch.arange(max(classes))[None] < torch.tensor(classes)[:, None])  # (T, C)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        # pooled: (B, T, D) one vector per task, or (B, D) shared by every task
        pattern = "btd,tcd->btc" if pooled.dim() == 3 else "bd,tcd->btc"
        logits = torch.einsum(pattern, pooled.float(), self.weight) + self.bias  # (B, T, C)
        return logits.masked_fill(~self.valid, float("-inf"))


class AttentiveProbe(nn.Module):
    """Learned-query cross-attention pooling over all tokens, then a linear classifier (V-JEPA style),
    one independent query and head per task.

    Each task t has `heads` learned queries; head h attends over channel slice h of the tokens, which
    `probe_inputs` layer-norms once (without affine parameters) rather than at every training step. A key
    projection would fold into the free query, a value projection into the linear head.
    With zero queries the probe pools uniformly, i.e. it is a linear probe on mean-pooled (normed) tokens;
    training moves the queries to where the label is. Tasks share no parameters, so training them
    together on the sum of their losses trains each exactly as if alone.

    Args:
        dim: token width D.
        classes: number of classes of each task.
        heads: attention heads (reduced to a divisor of `dim`).
    """

    def __init__(self, dim: int, classes: list[int], heads: int = 4):
        super().__init__()
        self.dim, self.heads = dim, _heads_for(dim, heads)
        self.queries = nn.Parameter(torch.zeros(len(classes), self.heads, dim // self.heads))
        self.classifier = TaskHeads(dim, classes)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """layer-normed tokens (B, L, D) -> one pooled vector per task (B, T, D)."""
        B, L, D = tokens.shape
        x = tokens.float().view(B, L, self.heads, D // self.heads)  # (B, L, H, d)
        logits = torch.einsum("blhd,thd->bthl", x, self.queries) / (D // self.heads) ** 0.5  # (B, T, H, L)
        weights = logits.softmax(dim=-1)  # (B, T, H, L): attention over all tokens
        return torch.einsum("bthl,blhd->bthd", weights, x).reshape(B, -1, D)  # (B, T, D)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(tokens))  # (B, T, C)


class LinearProbe(nn.Module):
    """Independent linear classifiers, one per task, on one pooled (standardised) vector per clip (B, D)."""

    def __init__(self, dim: int, classes: list[int]):
        super().__init__()
        self.classifier = TaskHeads(dim, classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(pooled)  # (B, T, C)


PROBES = ("attentive", "linear")


@dataclass
class ProbeInputs:
    """What a probe of one kind reads for N clips: tokens (N, L, D) for attentive, standardised pooled
    (N, D) for linear; labels {task: (N,) long}."""

    x: torch.Tensor
    labels: dict[str, torch.Tensor]

    def subset(self, index: torch.Tensor) -> "ProbeInputs":
        return ProbeInputs(self.x[index], {task: y[index] for task, y in self.labels.items()})


def probe_inputs(kind: str, train: FeatureSet, *others: FeatureSet) -> list[ProbeInputs]:
    """Inputs of probe `kind` for the training set and any other sets: layer-normed tokens for the
    attentive probe; for the linear probe pooled features standardised with the training set's statistics."""
    if kind not in PROBES:
        raise ValueError(f"unknown probe {kind!r}; probes: {', '.join(PROBES)}")
    sets = (train, *others)
    if kind == "attentive":
        if any(s.tokens is None for s in sets):
            raise ValueError("the attentive probe needs tokens: extract features with keep_tokens=True")
        return [ProbeInputs(nn.functional.layer_norm(s.tokens.float(), s.tokens.shape[-1:]), s.labels) for s in sets]
    mean, std = train.pooled.float().mean(0), train.pooled.float().std(0).clamp_min(1e-6)
    return [ProbeInputs((s.pooled.float() - mean) / std, s.labels) for s in sets]


def train_probe(kind: str, train: ProbeInputs, tasks: list[str], classes: list[int], lr: float,
                weight_decay: float, steps: int = 200, seed: int = 0, batch_size: int = 512,
                heads: int = 4) -> nn.Module:
    """Fit one probe of `kind` for every task at once (tasks share no parameters) with AdamW and cross-
    entropy: full-batch when the training set has at most `batch_size` clips, else seeded mini-batches."""
    generator = torch.Generator().manual_seed(seed)
    dim = train.x.shape[-1]
    probe = AttentiveProbe(dim, classes, heads) if kind == "attentive" else LinearProbe(dim, classes)
    with torch.no_grad():  # seeded per task, independent of the global RNG and of the other tasks
        for t, count in enumerate(classes):
            task_generator = torch.Generator().manual_seed(seed * 7919 + t)
            weight = probe.classifier.weight
            weight[t, :count] = torch.randn(weight[t, :count].shape, generator=task_generator) * 0.02
            if kind == "attentive":
                probe.queries[t] = torch.randn(probe.queries[t].shape, generator=task_generator) * 0.02
    optimizer = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    n = train.x.shape[0]
    labels = torch.stack([train.labels[task] for task in tasks], dim=1)  # (N, T)
    full = train.x.float() if n <= batch_size else None
    with torch.enable_grad():
        for _ in range(steps):
            index = None if full is not None else torch.randint(0, n, (batch_size,), generator=generator)
            x, y = (full, labels) if index is None else (train.x[index].float(), labels[index])
            logits = probe(x)  # (B, T, C)
            # the sum over tasks of each task's mean cross-entropy
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum") / x.shape[0]
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return probe.eval()


@torch.no_grad()
def probe_correct(probe: nn.Module, data: ProbeInputs, tasks: list[str], batch_size: int = 512) -> torch.Tensor:
    """Whether a trained probe gets each clip right, per task: (N, T) bool."""
    labels = torch.stack([data.labels[task] for task in tasks], dim=1)  # (N, T)
    return torch.cat([probe(data.x[start : start + batch_size].float()).argmax(-1) == labels[start : start + batch_size]
                      for start in range(0, data.x.shape[0], batch_size)])


def probe_accuracy(probe: nn.Module, data: ProbeInputs, tasks: list[str], batch_size: int = 512) -> dict[str, float]:
    """Accuracy of a trained probe on every task."""
    correct = probe_correct(probe, data, tasks, batch_size).float().mean(0)
    return {task: float(c) for task, c in zip(tasks, correct)}


def label_subset(n: int, fraction: float, seed: int) -> torch.Tensor:
    """A seeded random `fraction` of n clip indices (at least 2)."""
    keep = min(n, max(2, round(fraction * n)))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep]


@dataclass
class SweepResult:
    """The sweep point chosen on validation for one task, and the test accuracy reported for it."""

    task: str
    lr: float
    weight_decay: float
    val_accuracy: float
    test_accuracy: float
    chance: float
    grid: list[dict] = field(default_factory=list)  # every sweep point's val (and test) accuracy
    test_correct: torch.Tensor | None = None  # (N,) bool: the chosen point's verdict on each test clip


def probe_sweep(kind: str, train: ProbeInputs, val: ProbeInputs, test: ProbeInputs, tasks: list[str],
                lrs: list[float], weight_decays: list[float], steps: int = 200, seed: int = 0,
                fraction: float = 1.0, heads: int = 4, batch_size: int = 512) -> dict[str, SweepResult]:
    """Train probe `kind` on a `fraction` of the training clips at every (lr, weight decay) point, pick
    each task's point by validation accuracy only (ties: the first point in sweep order) and report its
    test accuracy. Test accuracies of the other points are kept in `grid` for inspection, never used."""
    classes = [int(max(int(s.labels[task].max()) for s in (train, val, test))) + 1 for task in tasks]
    subset = train.subset(label_subset(train.x.shape[0], fraction, seed))
    grid = []
    for lr in lrs:
        for wd in weight_decays:
            probe = train_probe(kind, subset, tasks, classes, lr, wd, steps, seed, batch_size, heads)
            correct = probe_correct(probe, test, tasks)  # (N, T)
            grid.append({"lr": lr, "weight_decay": wd, "val": probe_accuracy(probe, val, tasks),
                         "test": {task: float(c) for task, c in zip(tasks, correct.float().mean(0))},
                         "correct": correct})
    results = {}
    for task, count in zip(tasks, classes):
        best = select_by_validation([point["val"][task] for point in grid])
        chance = torch.bincount(test.labels[task], minlength=count).max().item() / len(test.labels[task])
        results[task] = SweepResult(task, grid[best]["lr"], grid[best]["weight_decay"], grid[best]["val"][task],
                                    grid[best]["test"][task], chance,
                                    [{"lr": p["lr"], "weight_decay": p["weight_decay"], "val": p["val"][task],
                                      "test": p["test"][task]} for p in grid],
                                    grid[best]["correct"][:, tasks.index(task)])
    return results


def select_by_validation(val_scores: list[float]) -> int:
    """Index of the best validation score (the first of equals)."""
    return max(range(len(val_scores)), key=lambda i: (val_scores[i], -i))


def auroc(scores, labels) -> float:
    """Area under the ROC curve of `scores` (higher = more positive) for binary `labels` (1 = positive):
    the probability that a random positive outscores a random negative, ties counting one half
    (Mann-Whitney U with average ranks)."""
    scores = torch.as_tensor(scores, dtype=torch.float64).flatten()
    labels = torch.as_tensor(labels).flatten().bool()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        raise ValueError(f"AUROC needs both classes; got {positives} positives and {negatives} negatives")
    order = scores.argsort()
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    unique, inverse = scores.unique(return_inverse=True)  # average the ranks of tied scores
    sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
    ranks = (sums / counts)[inverse]
    u = ranks[labels].sum() - positives * (positives + 1) / 2
    return float(u / (positives * negatives))


def load_world(recipe: str | Path, checkpoint: str | Path | None = None, overrides: list[str] | None = None):
    """(WorldModel, datamodule) from a recipe, as ``patchworld fit`` would build them.

    `recipe` is a path or a shipped recipe name; `overrides` are extra CLI arguments (e.g.
    ``["--data.init_args.val_size", "512"]``). With a `checkpoint` (a patchworld .ckpt, or ``"last"``: the
    newest ``last.ckpt`` under the recipe's ``trainer.default_root_dir``) the model's weights
    are loaded from it, and a checkpoint trained with other settings is a `PatchworldError` naming the keys
    that differ; without one they keep their random initialisation, seeded by the recipe's ``seed_everything``.
    """
    from .checkpoints import check_fits, find_last, load_checkpoint
    from .cli import PatchworldCLI, resolve_recipe_args
    from .plugins import load_plugins

    import warnings

    args = resolve_recipe_args(["--config", str(recipe)], load_plugins()) + list(overrides or [])
    with warnings.catch_warnings():  # we pass args on purpose
        warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within Python.*")
        cli = PatchworldCLI(args=args, run=False)
    model = cli.model
    if checkpoint is not None:
        if str(checkpoint) == "last":  # the newest last.ckpt of the recipe's runs
            checkpoint = find_last(cli.trainer.default_root_dir)
        state = load_checkpoint(checkpoint)
        check_fits(model, state, checkpoint, str(recipe))
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
    parser.add_argument("--tokens", action="store_true", help="also probe all tokens concatenated, not only the mean")
    args = parser.parse_args(argv)
    overrides = ["--data.init_args.val_size", str(args.train_size), "--data.init_args.test_size", str(args.test_size)]
    model, data = load_world(args.config, args.ckpt, overrides)
    data.setup("fit")
    dtype = torch.bfloat16 if autocast_bf16(args.bf16) else None
    train = extract_features(model, data.val_dataloader(), keep_tokens=args.tokens, autocast_dtype=dtype)
    test = extract_features(model, data.test_dataloader(), keep_tokens=args.tokens, autocast_dtype=dtype)
    which = "random init" if args.ckpt is None else args.ckpt
    for task in args.task or ["direction"]:
        for inputs in ("pooled", "tokens") if args.tokens else ("pooled",):
            result = linear_probe(train, test, task, inputs=inputs)
            print(f"{task:<10} linear probe on {inputs} features ({which}): test accuracy {result.test_accuracy:.3f} "
                  f"(train {result.train_accuracy:.3f}, chance {result.chance:.3f}, {len(train)}/{len(test)} clips)")
    return 0


if __name__ == "__main__":
    from .cli import guarded

    raise SystemExit(guarded(main, sys.argv[1:]))
