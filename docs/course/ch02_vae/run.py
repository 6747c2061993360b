"""Chapter 2's script: a causal video VAE built on your functions (`adapters.course_vae`) trained with the
framework's `VAEReconstruction` on SyntheticWorld, then held-out clips and their reconstructions, a decoded
posterior sample (your `sample_posterior`), and what causality means: how much each latent frame changes when
the later pixel frames are replaced.

    python docs/course/ch02_vae/run.py            # the reference solutions; --student: your exercises.py
    python docs/course/ch02_vae/run.py --quick    # a smoke run of a few seconds

Writes vae.png next to this file (or into --out DIR).
"""
from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from patchworld import WorldModel  # noqa: E402
from patchworld.course import load_module, save_figure, script_options, train  # noqa: E402
from patchworld.data import SyntheticWorld  # noqa: E402
from patchworld_plugins.vae import VAEReconstruction, psnr  # noqa: E402

adapters = load_module(Path(__file__).with_name("adapters.py"))
ARCHITECTURE = {"compression": (2, 4, 4), "latent_channels": 8, "width": 16, "multipliers": (1, 2, 2), "blocks": (0, 1, 1)}
DATA = {"frames": 5, "size": (32, 32), "max_objects": 2, "gravity_prob": 0.3, "object_scale": 1.5}


def image(frame: torch.Tensor):
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for imshow."""
    return ((frame.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()


def main(argv: list[str] | None = None) -> Path:
    options = script_options(__file__, __doc__.splitlines()[0], argv)
    start, f = time.time(), options.functions
    torch.manual_seed(0)
    vae = adapters.course_vae(f, **ARCHITECTURE)
    world = WorldModel(vae, VAEReconstruction(l1_weight=1.0, kl_weight=1e-6), warmup_steps=20,
                       optimizer=lambda groups: torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.0, betas=(0.9, 0.99)))
    losses = train(world, SyntheticWorld(batch_size=8, **DATA), 3 if options.quick else 350, progress=True)
    vae.eval()
    clips = SyntheticWorld(val_size=16, **DATA).splits["val"]
    video = torch.stack([clips[i]["video"] for i in range(16)])  # (16, 3, 5, 32, 32)
    with torch.no_grad():
        reconstruction = vae.decode(vae.encode(video)).clamp(-1, 1)
        mean, logvar = vae.posterior(video)  # raw (B, c, t, h, w)
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
        sample = vae.decode_raw(f.sample_posterior(mean, logvar, noise)).clamp(-1, 1)
        kl = float(f.kl_divergence(mean, logvar))
        # causality: replace pixel frames k.. with another clip's; how far does each latent frame move?
        latents = vae.encode(video[:1])  # (1, c, 3, 8, 8)
        changes = []
        for k in range(1, video.shape[2]):
            other = torch.cat([video[:1, :, :k], video[1:2, :, k:]], dim=2)
            changes.append((vae.encode(other) - latents).abs().mean(dim=(0, 1, 3, 4)))  # (t,)
    score = float(psnr(reconstruction, video).mean())

    figure = plt.figure(figsize=(12, 5), layout="constrained")
    left, right = figure.subfigures(1, 2, width_ratios=(1.1, 1))
    rows = (("held-out clip", video), ("reconstruction", reconstruction), ("decoded\nsample_posterior", sample))
    images = left.subplots(len(rows), video.shape[2])
    for row, (name, clip) in enumerate(rows):
        for i, axis in enumerate(images[row]):
            axis.imshow(image(clip[0, :, i]))
            axis.set_xticks([]), axis.set_yticks([])
            axis.set_title(f"frame {i}" if row == 0 else "", fontsize=8)
            axis.set_ylabel(name if i == 0 else "", fontsize=8)
    curve, causal = right.subplots(2, 1, height_ratios=(1, 1.5))
    curve.plot(losses, lw=0.8)
    curve.set_yscale("log")
    curve.set_title(f"training loss (L1 + KL); held-out PSNR {score:.1f} dB, KL per value {kl:.2f}", fontsize=8)
    curve.tick_params(labelsize=6)
    axis = causal
    for k, change in enumerate(changes, start=1):
        axis.plot(change.numpy(), marker="o", label=f"pixel frames {k}.. replaced")
    axis.set_xticks(range(latents.shape[2]), [f"latent {j}\n(pixels {max(0, 2 * j - 1)}..{2 * j})" for j in
                                              range(latents.shape[2])], fontsize=7)
    axis.set_ylabel("mean |change| of the latent", fontsize=7)
    axis.set_title("causal: a latent frame only moves when its own or earlier frames change", fontsize=8)
    axis.legend(fontsize=6)
    axis.tick_params(labelsize=6)
    path = save_figure(figure, options.out / "vae.png")
    print(f"wrote {path} in {time.time() - start:.0f} s; held-out PSNR {score:.2f} dB, KL {kl:.3f}")
    return path


if __name__ == "__main__":
    main()
