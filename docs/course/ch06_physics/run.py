"""Chapter 6's script: do models find impossible events more surprising? Matched sets, scored with your functions.

    python docs/course/ch06_physics/run.py              # the reference solutions, full run
    python docs/course/ch06_physics/run.py --student    # your exercises.py
    python docs/course/ch06_physics/run.py --quick      # a smoke run

Renders matched sets of every violation (`patchworld.data.matched`: two possible clips of one scene and
their two impossible splices), trains the shipped `vjepa-tiny` recipe on 16x32x32 SyntheticWorld clips,
and measures the predictive surprise of three models with the framework's `surprise_curves`: that V-JEPA,
the same network at its random initialisation, and raw pixels (copy the last frame). Each clip's score is
its curve's max; your `relative_accuracy` and `bootstrap_ci` (over sets) turn the scores into the numbers.
Writes `physics.png` (one set's surprise curves per violation, and relative accuracy with 95% intervals)
into this folder or `--out DIR`.
"""
from __future__ import annotations

import time

import numpy as np
import pytorch_lightning as pl

from patchworld.course import save_figure, script_options, train

FRAMES, SIZE, CONTEXT = 16, (32, 32), 4


def vjepa(steps: int):
    """vjepa-tiny on 16-frame 32x32 clips, trained for `steps` steps (0: its seeded random initialisation)."""
    from patchworld.recipes import load_world

    pl.seed_everything(0, verbose=False)
    world, data = load_world("vjepa-tiny", overrides=["--data.init_args.frames", str(FRAMES),
                                                      "--data.init_args.size", str(list(SIZE))])
    if steps:
        train(world, data, steps)
    return world.eval()


def main() -> None:
    args = script_options(__file__, __doc__.split("\n\n")[0])
    ex = args.functions
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from patchworld.data.matched import MATCHED_VIOLATIONS, matched_sets
    from patchworld.evaluation.contestants import PixelFeatures
    from patchworld.evaluation.physics import clip_scores, surprise_curves

    start = time.time()
    per_violation, steps = (2, 4) if args.quick else (16, 250)
    sets = matched_sets(MATCHED_VIOLATIONS, sets_per_violation=per_violation, frames=FRAMES, size=SIZE)
    models = {"V-JEPA (trained)": vjepa(steps), "V-JEPA (random init)": vjepa(0), "pixels (copy last frame)":
              PixelFeatures((2, 8, 8))}
    impossible = np.stack([s.impossible.numpy() for s in sets])  # (S, 4)
    violation = np.array([s.violation for s in sets])
    curves, results = {}, {}
    for name, model in models.items():
        curves[name] = surprise_curves(model, sets, CONTEXT, bf16=False)  # S x (4, T)
        scores = np.stack([clip_scores(c, "max").numpy() for c in curves[name]])  # (S, 4)
        results[name] = {}
        for group in (*MATCHED_VIOLATIONS, "overall"):
            keep = np.flatnonzero(violation == group) if group != "overall" else np.arange(len(sets))
            per_set = [ex.relative_accuracy(scores[i : i + 1], impossible[i : i + 1]) for i in keep]  # (S_group,)
            results[name][group] = ex.bootstrap_ci(per_set)
        mean, low, high = results[name]["overall"]
        print(f"{name:<26} relative accuracy {mean:.3f} [{low:.3f}, {high:.3f}]  " + "  ".join(
            f"{v} {results[name][v][0]:.2f}" for v in MATCHED_VIOLATIONS))

    figure = plt.figure(figsize=(11, 5.2))
    grid = figure.add_gridspec(2, 6, height_ratios=(1, 1.2))
    trained = next(iter(models))
    for k, group in enumerate(MATCHED_VIOLATIONS):
        axis = figure.add_subplot(grid[0, k])
        index = int(np.flatnonzero(violation == group)[0])  # the first set of this violation
        for clip, curve in enumerate(curves[trained][index].numpy()):
            bad = bool(sets[index].impossible[clip])
            axis.plot(curve, color="tab:red" if bad else "tab:blue", ls="--" if bad else "-", lw=1.2,
                      label=("impossible" if bad else "possible") if clip in (0, 2) else None)
        if sets[index].event_frame is not None:
            axis.axvline(sets[index].event_frame, color="grey", ls=":", lw=1)
        axis.set_title(group, fontsize=9)
        axis.tick_params(labelsize=7)
        if k == 0:
            axis.set_ylabel("surprise (trained V-JEPA)", fontsize=8)
            axis.legend(fontsize=7)
    axis = figure.add_subplot(grid[1, :])
    groups = (*MATCHED_VIOLATIONS, "overall")
    width = 0.8 / len(models)
    for m, name in enumerate(models):
        values = np.array([results[name][g] for g in groups])  # (G, 3): mean, low, high
        x = np.arange(len(groups)) + (m - (len(models) - 1) / 2) * width
        axis.bar(x, values[:, 0], width, label=name)
        axis.errorbar(x, values[:, 0], yerr=[values[:, 0] - values[:, 1], values[:, 2] - values[:, 0]], fmt="none",
                      ecolor="black", lw=1, capsize=2)
    axis.axhline(0.5, color="grey", ls=":", lw=1)
    axis.set_xticks(range(len(groups)), groups, fontsize=8)
    axis.set_ylabel("relative accuracy (95% CI)", fontsize=8)
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=7, ncol=3, loc="lower left")
    figure.suptitle(f"predictive surprise on matched sets ({per_violation} per violation, {FRAMES}x{SIZE[0]}x{SIZE[1]}, "
                    f"context {CONTEXT}; V-JEPA trained {steps} steps; "
                    f"{'your functions' if args.student else 'solutions'}); dotted: event frame / chance", fontsize=9)
    figure.tight_layout()
    path = args.out / "physics.png"
    save_figure(figure, path, dpi=64)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB) in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
