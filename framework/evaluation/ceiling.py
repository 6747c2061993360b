"""The ceiling of a probe task: how well its labels can be read from these clips at all.

A probe on frozen features is only informative next to what the data allows. `supervised_ceiling` trains a
small CNN (`ClipClassifier`) end to end on the labels of the same clips the probes train on, keeps for
each task the step whose validation accuracy is best (evaluated every `eval_every` steps) and reports that
step's test verdicts. A task whose ceiling is not clearly above chance (`learnable`) cannot tell models apart
at these data settings: the study refuses it unless told to keep it, and no family average includes it.

The ceiling is one network for every contestant, so each model's *gap closed* — (model - floor) /
(ceiling - floor), the floor being its own random-init control (`statistics.gap_closed`) — is on one scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from .probes import ProbeInputs, TaskHeads, probe_correct, select_by_validation
from .statistics import Estimate, accuracy_estimate


@dataclass
class CeilingSpec:
    """How the supervised ceiling trains: AdamW at `lr` for `steps` steps of `batch_size` clips, a CNN of
    `width` channels at its first layer; each task's step chosen on validation every `eval_every` steps."""

    steps: int = 3000
    lr: float = 3e-3
    weight_decay: float = 0.05
    width: int = 32
    batch_size: int = 64
    eval_every: int = 100
    seed: int = 0


class ClipClassifier(nn.Module):
    """A small CNN that sees every frame at once: (B, 3, T, H, W) clips -> (B, tasks, C) logits.

    The frames are stacked as channels (early fusion), so the first 3x3 convolution already compares each
    pixel across time, where sub-pixel motion is visible; four convolutions (GroupNorm, GELU), the last three
    halving the resolution, then an average over space and one linear head per task. Early fusion trains
    ~5x faster per step than 3D convolutions of the same width on a CPU."""

    def __init__(self, classes: list[int], width: int = 32, frames: int = 8):
        super().__init__()
        channels = [3 * frames, width, 2 * width, 4 * width, 4 * width]
        layers = []
        for k, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=1 if k == 0 else 2, padding=1), nn.GroupNorm(math.gcd(8, c_out), c_out),
                       nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.heads = TaskHeads(channels[-1], classes)
        nn.init.normal_(self.heads.weight, std=0.02)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        # video: (B, 3, T, H, W) in [-1, 1]
        features = self.body(video.flatten(1, 2)).mean(dim=(2, 3))  # (B, 3T, H, W) -> (B, 4 * width)
        return self.heads(features)  # (B, tasks, C)


@dataclass
class CeilingResult:
    """The supervised ceiling of one task: the validation-chosen step, its accuracies and test verdicts."""

    task: str
    step: int
    val_accuracy: float
    test_accuracy: float
    chance: float
    test_correct: torch.Tensor  # (N,) bool

    @cached_property
    def estimate(self) -> Estimate:
        return accuracy_estimate(self.test_correct)

    @property
    def learnable(self) -> bool:
        """Whether the ceiling is clearly above chance: its 95% interval's lower end lies above it."""
        return self.estimate.low > self.chance

    def as_dict(self) -> dict:
        return {"mean": self.test_accuracy, "ci": self.estimate.as_dict(), "val": self.val_accuracy,
                "chance": self.chance, "step": self.step, "learnable": self.learnable}


def _stack(batches: list[dict], tasks: list[str]) -> ProbeInputs:
    """Batches of clips -> videos (N, 3, T, H, W) and labels {task: (N,)}."""
    return ProbeInputs(torch.cat([b["video"] for b in batches]).float(),
                       {task: torch.cat([b["labels"][task] for b in batches]) for task in tasks})


def supervised_ceiling(train: list[dict], val: list[dict], test: list[dict], tasks: list[str],
                       spec: CeilingSpec | None = None, progress=None) -> dict[str, CeilingResult]:
    """Train a `ClipClassifier` on the `train` clips' labels of every task at once (the sum of the tasks'
    cross-entropies) and report each task's test verdicts at its best validation step. Batches are dicts
    with "video" (B, 3, T, H, W) and "labels" {task: (B,)}. `progress(step)` is called at each evaluation."""
    spec = spec or CeilingSpec()
    train, val, test = (_stack(s, tasks) for s in (train, val, test))
    x_train = train.x  # (N, 3, T, H, W)
    y_train = torch.stack([train.labels[task] for task in tasks], dim=1)  # (N, tasks)
    classes = [int(max(s.labels[task].max() for s in (train, val, test))) + 1 for task in tasks]
    generator = torch.Generator().manual_seed(spec.seed)
    with torch.random.fork_rng():
        torch.manual_seed(spec.seed)
        model = ClipClassifier(classes, spec.width, x_train.shape[2])
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    history: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step, val (N, tasks), test (N, tasks))
    with torch.enable_grad():
        for step in range(1, spec.steps + 1):
            index = torch.randint(0, len(x_train), (min(spec.batch_size, len(x_train)),), generator=generator)
            logits = model(x_train[index])  # (B, tasks, C)
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), y_train[index].flatten(), reduction="sum")
            optimizer.zero_grad()
            (loss / len(index)).backward()
            optimizer.step()
            if step % spec.eval_every == 0 or step == spec.steps:
                history.append((step, probe_correct(model, val, tasks, 256), probe_correct(model, test, tasks, 256)))
                if progress is not None:
                    progress(step)
    results = {}
    for t, task in enumerate(tasks):
        best = select_by_validation([float(v[:, t].float().mean()) for _, v, _ in history])
        step, val_correct, test_correct = history[best]
        chance = torch.bincount(test.labels[task], minlength=classes[t]).max().item() / len(test.x)
        results[task] = CeilingResult(task, step, float(val_correct[:, t].float().mean()),
                                      float(test_correct[:, t].float().mean()), chance, test_correct[:, t])
    return results


__all__ = ["CeilingSpec", "CeilingResult", "ClipClassifier", "supervised_ceiling"]
