"""Probes: light classifiers fitted on frozen features (`patchworld.evaluation.features`); they never
update the model.

* `linear_probe(train, test, task)` -> `ProbeResult`: a logistic-regression probe on standardised pooled
  features, trained full-batch with AdamW, scored by accuracy on `test`.
* `AttentiveProbe` / `LinearProbe`, `train_probe`, `probe_sweep`: the comparison's probes (learned-query
  cross-attention pooling over all tokens + linear, or linear on standardised mean-pooled features), one
  independent query/head per task, an (lr, weight decay) sweep chosen on validation only, test accuracy
  reported.

From the shell::

    python -m patchworld.evaluation.probes --config recipes/vjepa-tiny.yaml --ckpt path/to/last.ckpt --task direction

trains the probe on the recipe's validation split and scores it on its test split (for SyntheticWorld
both are disjoint from the training clips); without ``--ckpt`` it probes the random-init encoder.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import torch
from torch import nn

from ..recipes import load_world
from ..precision import autocast_bf16
from .features import FeatureSet, extract_features


@dataclass
class ProbeResult:
    """Accuracy of one probe on one task (chance = frequency of the most common test class)."""

    task: str
    train_accuracy: float
    test_accuracy: float
    chance: float
    classes: int


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
        """layer-normed tokens (B, L, D) -> one pooled vector per task (B, T, D).

        Written as two large matrix products (3x faster on a CPU than one small product per head): every
        (task, head) query is a column of a block-diagonal (D, T*H) matrix, and every head's weights pool
        all D channels, of which the head's own d-channel slice is kept."""
        B, L, D = tokens.shape
        T, H, d = self.queries.shape
        x = tokens.float()
        block_diagonal = torch.einsum("thd,hg->hdtg", self.queries, torch.eye(H, device=x.device)).reshape(D, T * H)
        logits = (x.reshape(B * L, D) @ block_diagonal).view(B, L, T * H) / d**0.5  # (B, L, T*H)
        weights = logits.softmax(dim=1)  # (B, L, T*H): attention over all tokens
        pooled = torch.bmm(weights.transpose(1, 2), x).view(B, T, H, H, d)  # (B, T, H, H', d): head h's weights
        return pooled.diagonal(dim1=2, dim2=3).transpose(2, 3).reshape(B, T, D)  # (B, T, D): h' = h slices

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchworld.evaluation.probes", description=__doc__.split("\n\n")[0])
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
    from ..parsing import guarded

    raise SystemExit(guarded(main, sys.argv[1:]))
