"""Chapter 5's script: train V-JEPA with and without its EMA target, and watch collapse happen.

    python docs/course/ch05_vjepa/run.py              # the reference solutions, full run
    python docs/course/ch05_vjepa/run.py --student    # your exercises.py
    python docs/course/ch05_vjepa/run.py --quick      # a smoke run of a few steps

Three runs of the shipped `vjepa-tiny` recipe (a ViT context encoder on 8x48x48 SyntheticWorld clips,
2x8x8 tubelets), which differ only in `anti_collapse`: `ema` (V-JEPA: EMA target encoder, stop-gradient),
`none` (the encoder is its own target, gradient through both branches) and `sigreg` (no EMA; LeJEPA's
regulariser keeps the features spread out). Each run's masks come from your `multiblock_mask` and its EMA
update from your `ema_update`, plugged into the real `VJEPA` objective; every 10 steps your `feature_std`
and `effective_rank` are measured on the target features of 32 fixed validation clips.
Writes `collapse.png` (loss, feature std, effective rank against the step) into this folder or `--out DIR`.
"""
from __future__ import annotations

import logging
import time
import warnings
from types import ModuleType

import pytorch_lightning as pl
import torch

from patchworld.course import save_figure, script_options, train

RUNS = {"ema": "EMA target (V-JEPA)", "none": "own target, no stop-gradient", "sigreg": "SIGReg, no EMA (LeJEPA)"}


def plug_in(objective, ex: ModuleType) -> None:
    """Make the real `VJEPA` objective draw its masks with your `multiblock_mask` and move its target encoder
    with your `ema_update` (instance attributes shadow the class's methods)."""
    from patchworld_plugins.masks import BlockMask

    def prepare_batch(batch: dict, generator=None) -> dict:
        video = batch["video"]  # (B, 3, T, H, W)
        grid = objective.token_grid(video)  # (t, h, w) tokens
        generator = torch.Generator().manual_seed(objective.steps) if generator is None else generator
        masks = [BlockMask(*ex.multiblock_mask(video.shape[0], grid, family.blocks, family.scale,
                                               family.aspect_ratio, generator)) for family in objective.families]
        return batch | {"masks": masks}

    def update_target(world, momentum: float) -> None:
        ex.ema_update(list(objective.target_encoder.parameters()), list(world.backbone.parameters()), momentum)

    objective.prepare_batch, objective.update_target = prepare_batch, update_target


class Watch(pl.Callback):
    """Keeps the L1 prediction loss of every training step and, every `interval` steps, your `feature_std`
    and `effective_rank` of the target features of fixed clips `probe` (B, 3, T, H, W)."""

    def __init__(self, ex: ModuleType, probe: torch.Tensor, interval: int):
        self.ex, self.probe, self.interval = ex, probe, interval
        self.curves: dict[str, list[float]] = {"loss": [], "step": [], "std": [], "rank": []}

    def measure(self, step: int, world) -> None:
        with torch.no_grad():
            features, _ = world.features(self.probe)  # (B, N, D): the target encoder's (the online one without EMA)
        self.curves["step"].append(step)
        self.curves["std"].append(float(self.ex.feature_std(features)))
        self.curves["rank"].append(float(self.ex.effective_rank(features.float().mean(dim=1))))  # pooled (B, D)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.curves["loss"].append(float(trainer.callback_metrics["train/prediction_loss"]))
        if trainer.global_step % self.interval == 0 or trainer.global_step == trainer.max_steps:
            self.measure(trainer.global_step, pl_module)


def run(mode: str, ex: ModuleType, steps: int, interval: int) -> dict[str, list[float]]:
    """Train vjepa-tiny with `anti_collapse=mode`; the L1 prediction loss of every step and your monitors
    every `interval` steps (from step 0)."""
    from patchworld.recipes import load_world

    pl.seed_everything(0, verbose=False)
    world, data = load_world("vjepa-tiny", overrides=["--model.objective.init_args.anti_collapse", mode,
                                                      "--data.init_args.val_size", "32"])
    objective = world.objective
    plug_in(objective, ex)
    data.setup("fit")
    watch = Watch(ex, next(iter(data.val_dataloader()))["video"], interval)  # 32 clips of 8x48x48, for every run
    watch.measure(0, world)
    objective.callbacks = lambda: [objective.collapse_monitor, watch]  # the objective's callbacks, and ours
    logging.getLogger("patchworld_plugins.vjepa").setLevel(logging.ERROR)  # alarms are counted below, not printed
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the CollapseMonitor's banners
        train(world, data, steps)
    curves, alarms = watch.curves, len(objective.collapse_monitor.alarms)
    print(f"{mode:>6}: prediction loss {curves['loss'][0]:.3f} -> {curves['loss'][-1]:.3f}, feature std "
          f"{curves['std'][0]:.3f} -> {curves['std'][-1]:.4f}, effective rank {curves['rank'][0]:.2f} -> "
          f"{curves['rank'][-1]:.2f}, {alarms} CollapseMonitor alarms")
    return curves


def main() -> None:
    args = script_options(__file__, __doc__.split("\n\n")[0])
    ex = args.functions
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = time.time()
    steps, interval = (2, 1) if args.quick else (180, 10)
    modes = list(RUNS)[:2] if args.quick else list(RUNS)  # --quick: EMA and its collapsing control only
    results = {mode: run(mode, ex, steps, interval) for mode in modes}
    figure, axes = plt.subplots(1, 3, figsize=(10, 3.2))
    for mode, curves in results.items():
        axes[0].plot(range(1, len(curves["loss"]) + 1), curves["loss"], label=RUNS[mode], lw=1)
        axes[1].plot(curves["step"], curves["std"], "o-", ms=2, label=RUNS[mode])
        axes[2].plot(curves["step"], curves["rank"], "o-", ms=2, label=RUNS[mode])
    for axis, title in zip(axes, ("L1 prediction loss", "feature std (target features)", "effective rank (pooled)")):
        axis.set_title(title, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
    axes[0].set_yscale("log"), axes[1].set_yscale("log")
    axes[1].axhline(0.1, color="grey", ls=":", lw=1)  # CollapseMonitor's default alarm thresholds
    axes[2].axhline(1.5, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=7)
    figure.suptitle(f"vjepa-tiny, {steps} steps ({'your functions' if args.student else 'solutions'}); "
                    "dotted: CollapseMonitor alarm thresholds", fontsize=9)
    figure.tight_layout()
    path = args.out / "collapse.png"
    save_figure(figure, path, dpi=64)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB) in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
