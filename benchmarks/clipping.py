"""Gradient clipping with AdamW: norm clipping (`torch.nn.utils.clip_grad_norm_`, as Lightning's
`gradient_clip_val` does) followed by the fused AdamW step patchworld's recipes use, against the same clipping
followed by the foreach AdamW step (what a user would switch to, were clipping and fused AdamW not allowed
together), and the fused step without clipping (what clipping adds).

    python benchmarks/clipping.py [--rounds 20] [--device cpu]

The parameters are those of a shipped recipe's model (vae-tiny's VAE, sora-tiny's DiT), with random
gradients; the rounds are interleaved (A,B, B,A, ...) and the ratio is the median of the per-round ratios.
No assertions.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import torch

from measure import interleaved, paired_ratios
from patchworld import WorldModel
from patchworld.model import parameter_groups
from patchworld_plugins import DiT, Flow, Pixels, VAE, VAEReconstruction

MODELS = {
    "vae-tiny VAE": lambda: WorldModel(VAE(compression=(2, 4, 4), latent_channels=8, width=16, multipliers=[1, 4, 8],
                                           blocks=[0, 1, 1]), VAEReconstruction()),
    "sora-tiny DiT": lambda: WorldModel(Pixels(), Flow(progress=False), DiT(dim=128, depth=4, heads=4,
                                                                            patch_size=(2, 4, 4))),
}


def optimizer_step(model: torch.nn.Module, fused: bool, clip: float | None):
    """One step of AdamW (fused or foreach) on `model`'s gradients, after norm clipping to `clip` if given."""
    options = {"fused": True} if fused else {"foreach": True}
    optimizer = torch.optim.AdamW(parameter_groups(model), lr=1e-3, weight_decay=0.01, **options)
    parameters = [p for p in model.parameters() if p.requires_grad]

    def step() -> None:
        if clip is not None:
            torch.nn.utils.clip_grad_norm_(parameters, clip)
        optimizer.step()
    return step


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"AdamW step with norm clipping on {args.device}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {args.rounds} interleaved rounds")
    print(f"\n{'model':<14} {'params':>7} {'step':<24} {'ms':>7} {'/ fused + clip':>22}")
    for name, build in MODELS.items():
        torch.manual_seed(0)
        model = build().to(args.device)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        count = sum(p.numel() for p in model.parameters())
        baseline = optimizer_step(model, fused=True, clip=1.0)
        others = {"foreach + clip": optimizer_step(model, fused=False, clip=1.0),
                  "fused, no clip": optimizer_step(model, fused=True, clip=None)}
        times = {label: interleaved(baseline, step, args.rounds, args.device) for label, step in others.items()}
        baseline_ms = statistics.median(t for ours, _ in times.values() for t in ours) * 1e3
        print(f"{name:<14} {count / 1e6:>6.2f}M {'fused + clip':<24} {baseline_ms:>7.2f} {'1':>22}")
        for label, (ours, theirs) in times.items():
            middle, low, high = paired_ratios(theirs, ours)
            print(f"{'':<14} {'':>7} {label:<24} {statistics.median(theirs) * 1e3:>7.2f} "
                  f"{f'{middle:.2f} ({low:.2f}-{high:.2f})':>22}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
