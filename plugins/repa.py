"""REPA, representation alignment (Yu et al. 2024, "Representation Alignment for Generation: Training Diffusion
Transformers Is Easier Than You Think"): while a generator trains, the hidden states of one of its early DiT
blocks, through a small projector, are pulled towards a frozen encoder's features of the same clean clip
(negative cosine similarity per token, added to the denoising loss with a weight). The teacher here is one
of the project's own trained world models (V-JEPA's target encoder, VideoMAE's encoder, ...), or the same
architecture freshly initialised (the control): nothing is downloaded.

    --model.objective.init_args.repa.teacher runs/vjepa-tiny      # a run directory or a .ckpt
    --model.objective.init_args.repa.random_init true              # the control: its architecture, untrained

The teacher's architecture is read from the ``config.yaml`` its run wrote beside its checkpoints. Its
features are resampled (trilinear, over the token grid) to the DiT's token grid. The teacher is held outside
the module tree: it is in no state dict, no optimizer and no weight average, and stays bit-identical.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from unittest.mock import patch

import torch
from pytorch_lightning.utilities.seed import isolate_rng
from timm.layers import Mlp
from torch import nn
from torch.nn import functional as F

from patchworld import ComponentError, PatchworldError
from patchworld.recipes import load_run


@dataclass
class Alignment:
    """REPA's settings.

    Args:
        teacher: a patchworld run directory (its newest last.ckpt) or .ckpt of a model with features.
        random_init: use the teacher's architecture freshly initialised (seeded by its recipe), not its weights.
        depth: the DiT block whose output is aligned (1 = the first; REPA aligns an early block).
        weight: the alignment loss's weight next to the denoising loss (REPA: 0.5).
    """

    teacher: str
    random_init: bool = False
    depth: int = 2
    weight: float = 0.5


class RepresentationAlignment(nn.Module):
    """The projector from the DiT's width to the teacher's and the alignment loss; the frozen teacher is kept
    out of the module tree (``self.teacher``, a plain attribute)."""

    def __init__(self, alignment: Alignment, dim: int, depth: int):
        super().__init__()
        if not 1 <= alignment.depth <= depth:
            raise ComponentError(f"repa.depth {alignment.depth} is out of range for a DiT of depth {depth}: give 1 to {depth}")
        if alignment.weight < 0:
            raise ComponentError(f"repa.weight must be >= 0, got {alignment.weight}")
        self.depth, self.weight = alignment.depth, alignment.weight
        if not Path(alignment.teacher).exists():
            raise PatchworldError(f"repa.teacher {alignment.teacher!r}: no such run directory or checkpoint")
        # building the teacher seeds every generator (and Lightning's PL_GLOBAL_SEED) with its recipe's seed
        with isolate_rng(), patch.dict(os.environ):
            teacher, _ = load_run(alignment.teacher, weights=not alignment.random_init)
        teacher.eval().requires_grad_(False)
        if not hasattr(teacher.objective, "features"):
            raise ComponentError(f"repa.teacher {alignment.teacher!r}: its {type(teacher.objective).__name__} has no features")
        self.__dict__["teacher"] = teacher  # not a submodule: no state dict, optimizer or EMA sees it
        self.teacher_dim = teacher.backbone.dim
        self.projector = Mlp(dim, 2 * dim, self.teacher_dim, act_layer=nn.SiLU)

    @torch.no_grad()
    def targets(self, video: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """The teacher's features of clean clips video (B, 3, T, H, W) on the DiT's token grid (t, h, w):
        (B, t*h*w, Dt)."""
        self.teacher.to(video.device)
        tokens, positions = self.teacher.features(video)  # (B, L, Dt), (B, L, 3)
        B, _, Dt = tokens.shape
        own = [int(positions[..., axis].max()) + 1 for axis in range(3)]  # the teacher's grid
        index = (positions[..., 0] * own[1] + positions[..., 1]) * own[2] + positions[..., 2]  # (B, L)
        volume = tokens.new_zeros(B, own[0] * own[1] * own[2], Dt).scatter_(1, index[..., None].expand(-1, -1, Dt), tokens)
        volume = volume.transpose(1, 2).reshape(B, Dt, *own).float()  # (B, Dt, T', H', W')
        resampled = F.interpolate(volume, size=grid, mode="trilinear", align_corners=False)  # (B, Dt, t, h, w)
        return resampled.flatten(2).transpose(1, 2)  # (B, N, Dt)

    def loss(self, hidden: torch.Tensor, video: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """1 - cosine similarity between the projected hidden states (B, N, D) and the teacher's features of the
        same clips, averaged over tokens: 0 when aligned."""
        projected = self.projector(hidden).float()  # (B, N, Dt)
        return 1 - F.cosine_similarity(projected, self.targets(video, grid), dim=-1).mean()


@contextlib.contextmanager
def captured_output(module: nn.Module):
    """Collect `module`'s forward outputs while the context is open: ``with captured_output(block) as out:``
    then ``out[0]`` is the first call's output."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda _module, _args, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()
