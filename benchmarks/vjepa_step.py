"""V-JEPA training-step throughput: tiny and small configs, fp32 vs bf16 autocast, on this machine.

One step = host-side mask sampling + forward (target encoder on the full clip, context encoder and
predictor once per mask family) + backward + AdamW + EMA update. tokens/s counts the clip's tubelet
tokens (batch x t x h x w) per second. Ratios are measured in the same run; nothing is asserted.

    python benchmarks/vjepa_step.py [--steps 3] [--configs tiny small] [--threads 2] [--device cpu]
"""
from __future__ import annotations

import argparse
import time

import torch

from measure import sync
from patchworld import WorldModel
from patchworld.data.synthetic import SyntheticWorld
from patchworld_plugins.pixels import Pixels
from patchworld_plugins.vit import ViT
from patchworld_plugins.vjepa import VJEPA

CONFIGS = {
    # name: (encoder dim, depth, heads, predictor dim, predictor depth, frames, size, batch)
    "tiny": (128, 4, 4, 64, 2, 8, 48, 16),  # recipes/vjepa-tiny.yaml
    "small": (192, 6, 3, 96, 4, 16, 64, 8),
}


def build(name: str, device: str) -> tuple[WorldModel, dict, int]:
    dim, depth, heads, p_dim, p_depth, frames, size, batch = CONFIGS[name]
    torch.manual_seed(0)
    world = WorldModel(Pixels(), VJEPA(predictor_dim=p_dim, predictor_depth=p_depth, monitor_every=0),
                       backbone=ViT(dim=dim, depth=depth, heads=heads, patch_size=(2, 8, 8))).to(device)
    clips = next(iter(SyntheticWorld(frames=frames, size=(size, size), batch_size=batch).train_dataloader()))
    clips["video"] = clips["video"].to(device)
    tokens = batch * (frames // 2) * (size // 8) ** 2
    return world, clips, tokens


def time_steps(world: WorldModel, clips: dict, bf16: bool, steps: int) -> float:
    """Median seconds per training step after one warm-up step."""
    optimizer = torch.optim.AdamW([p for p in world.parameters() if p.requires_grad], lr=1e-4)
    times = []
    device = clips["video"].device
    for step in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        batch = world.objective.prepare_batch(clips)
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = world.objective.training_step(world, batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        world.objective.on_train_batch_end(world, 0.5)
        sync(device)
        if step:
            times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"V-JEPA training step, {args.steps} timed steps (median), device {args.device}, {args.threads} threads, "
          f"torch {torch.__version__}")
    print(f"{'config':<7} {'params':>8} {'tokens/clip':>11} {'precision':<9} {'s/step':>8} {'tokens/s':>9} {'vs fp32':>8}")
    for name in args.configs:
        world, clips, tokens = build(name, args.device)
        params = sum(p.numel() for p in world.parameters() if p.requires_grad)
        fp32 = None
        for bf16 in (False, True):
            seconds = time_steps(world, clips, bf16, args.steps)
            fp32 = fp32 or seconds
            print(f"{name:<7} {params / 1e6:>7.2f}M {tokens // clips['video'].shape[0]:>11} "
                  f"{'bf16' if bf16 else 'fp32':<9} {seconds:>8.3f} {tokens / seconds:>9.0f} {fp32 / seconds:>7.2f}x")


if __name__ == "__main__":
    main()
