"""Does a V-JEPA recipe learn motion? Trained vs random-init encoder of the same architecture, frozen.

For one named variant (a recipe + CLI overrides; `VARIANTS` below is the record of the search in
docs/vjepa.md, "Learning motion"):

1. train the recipe through the project's CLI machinery (`patchworld.evaluation.study.Study.contestants.prepare_model`, i.e.
   `PatchworldCLI(args=..., run=False)` + `trainer.fit`) on the comparison study's data (SyntheticWorld,
   8 frames, 32x32, batch 16, up to 3 objects, gravity_prob 0.3, reverse_prob 0.5, seed 0) for
   budget / (FLOPs of one training step) steps, in fp32;
2. build the same recipe again without training (its seeded random initialisation);
3. for both, extract frozen features (`objective.features(world, video, depth=d)`) of the probe splits
   (SyntheticWorld seed 1: 384 / 128 / 256 train / val / test clips) after every encoder depth d = 0..depth;
4. run the study's attentive-probe protocol (`probe_sweep`: lrs [3e-3, 3e-2] x weight decays [1e-3, 1e-1],
   150 steps, 4 heads, seed 0, all labels) on direction, speed and reversed at every depth; pick each
   model's depth by the mean *validation* accuracy over the three tasks (the same rule for both) and
   report test accuracy at that depth and at the last one, and trained - random.

The random-init results are cached under the output folder, keyed by a hash of the random-init weights
(so variants that differ only in the objective share them). One thread by default.

    python benchmarks/vjepa_motion.py --variant motion            # the shipped recipes/vjepa-motion.yaml
    python benchmarks/vjepa_motion.py --variant tiny              # recipes/vjepa-tiny.yaml (the study's V-JEPA)
    python benchmarks/vjepa_motion.py --list                      # every variant and its overrides
    python benchmarks/vjepa_motion.py --reversed-bound 40000      # how identifiable `reversed` is (~2 min)
    python benchmarks/vjepa_motion.py --recipe vjepa-tiny --override --model.objective.init_args.future_frames 2
"""
from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from patchworld.evaluation.study import DataSpec, ModelSpec, ProbeSpec, Study
from patchworld.evaluation.features import extract_features
from patchworld.evaluation.probes import probe_inputs, probe_sweep

TASKS = ["direction", "speed", "reversed"]
P244 = ["--model.backbone.init_args.patch_size", "[2, 4, 4]"]
P144 = ["--model.backbone.init_args.patch_size", "[1, 4, 4]"]
OBJ = "--model.objective.init_args."

#: name -> (recipe, overrides): every row of the search table in docs/vjepa.md
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "tiny": ("vjepa-tiny", []),
    "future-only": ("vjepa-tiny", [OBJ + "future_frames", "2", OBJ + "block_masks", "false"]),
    "future": ("vjepa-tiny", [OBJ + "future_frames", "2"]),
    "sigreg-future-only": ("vjepa-tiny", [OBJ + "future_frames", "2", OBJ + "block_masks", "false",
                                          OBJ + "anti_collapse", "sigreg"]),
    "p244": ("vjepa-tiny", P244),
    "p244-future": ("vjepa-tiny", P244 + [OBJ + "future_frames", "2"]),
    "p244-future-only": ("vjepa-tiny", P244 + [OBJ + "future_frames", "2", OBJ + "block_masks", "false"]),
    "p144-future": ("vjepa-tiny", P144 + [OBJ + "future_frames", "4"]),
    "motion": ("vjepa-motion", []),
    "future-only-ema99": ("vjepa-tiny", [OBJ + "future_frames", "2", OBJ + "block_masks", "false",
                                         OBJ + "ema", "[0.99, 0.999]"]),
    "ema99": ("vjepa-tiny", [OBJ + "ema", "[0.99, 0.999]"]),
    "future3-only-ema99": ("vjepa-tiny", [OBJ + "future_frames", "3", OBJ + "block_masks", "false",
                                          OBJ + "ema", "[0.99, 0.999]"]),
    "dense": ("vjepa-tiny", [OBJ + "context_loss", "0.5"]),
    "future-only-dense": ("vjepa-tiny", [OBJ + "future_frames", "2", OBJ + "block_masks", "false",
                                         OBJ + "context_loss", "0.5"]),
}


class AtDepth(nn.Module):
    """A frozen world model whose `features` stop after `depth` encoder blocks (for extract_features)."""

    def __init__(self, world, depth: int):
        super().__init__()
        self.world, self.depth = world, depth

    def features(self, video):
        return self.world.objective.features(self.world, video, depth=self.depth)


class _Bar:
    def set_postfix_str(self, text):
        print(f"  .. {text}", flush=True)


def study(output: Path, budget: float, data: dict, probe: dict) -> Study:
    """compare-tiny's data and probe protocol (one seed, all labels), with `data` / `probe` overriding fields."""
    data = DataSpec(**{**dict(frames=8, size=(32, 32), batch_size=16, max_objects=3, gravity_prob=0.3, reverse_prob=0.5,
                              seed=0, probe_seed=1, probe_train=384, probe_val=128, probe_test=256), **data})
    probe = ProbeSpec(**{**dict(lrs=[3e-3, 3e-2], weight_decays=[1e-3, 1e-1], steps=150, heads=4, seeds=1,
                                fractions=[1.0]), **probe})
    return Study([], [], data, probe, budget, output, tasks={"motion": TASKS}, bf16=False, progress=False)


def weights_hash(model) -> str:
    h = hashlib.sha1()
    for name, value in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(value.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def probe_every_depth(s: Study, model, frames: int, depths: list[int] | None) -> list[dict]:
    """[{depth, val: {task}, test: {task}}] for d in `depths` (None: 0..encoder depth)."""
    rows = []
    for depth in range(len(model.backbone.blocks) + 1) if depths is None else depths:
        feats = {}
        for split in ("train", "val", "test"):
            batches = ({**b, "video": b["video"][:, :, :frames]} for b in s.probe_clips(split))
            feats[split] = extract_features(AtDepth(model, depth), batches, keep_tokens=True)
        train, val, test = probe_inputs("attentive", feats["train"], feats["val"], feats["test"])
        p = s.probe
        result = probe_sweep("attentive", train, val, test, TASKS, p.lrs, p.weight_decays, p.steps, 0, 1.0, p.heads)
        rows.append({"depth": depth, "val": {t: result[t].val_accuracy for t in TASKS},
                     "test": {t: result[t].test_accuracy for t in TASKS},
                     "chance": {t: result[t].chance for t in TASKS}})
        print(f"  depth {depth}: " + "  ".join(f"{t} val {rows[-1]['val'][t]:.3f} test {rows[-1]['test'][t]:.3f}"
                                               for t in TASKS), flush=True)
    return rows


def chosen(rows: list[dict]) -> dict:
    """The row with the best mean validation accuracy over the tasks (the shallowest of equals)."""
    return max(rows, key=lambda r: (statistics.fmean(r["val"].values()), -r["depth"]))


def run(name: str, recipe: str, overrides: list[str], output: Path, budget: float, steps: int | None,
        data: dict, probe: dict, depths: list[int] | None) -> dict:
    overrides = list(overrides) + ["--trainer.precision", "32-true"]
    s = study(output / name, budget, data, probe)
    if steps is not None:  # a fixed step count instead of the FLOP budget
        s.contestants.budget_flops = None
        overrides += ["--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1"]
    bar = _Bar()
    random_model, frames, _ = s.contestants.prepare_model(ModelSpec(name, recipe=recipe, overrides=overrides, train=False), bar)
    settings = hashlib.sha1(json.dumps([data, probe], sort_keys=True).encode()).hexdigest()[:8]
    key = f"{weights_hash(random_model)}-{settings}"  # the same network probed the same way on the same clips
    cache = output / f"random-init-{key}.json"
    known = {row["depth"]: row for row in (json.loads(cache.read_text()) if cache.exists() else [])}
    wanted = list(range(len(random_model.backbone.blocks) + 1)) if depths is None else depths
    missing = [d for d in wanted if d not in known]
    print(f"random init: {'cached ' + str(cache) if not missing else 'depths ' + str(missing)}")
    if missing:
        known |= {row["depth"]: row for row in probe_every_depth(s, random_model, frames, missing)}
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(sorted(known.values(), key=lambda row: row["depth"])))
    random_rows = [known[d] for d in wanted]
    del random_model
    start = time.perf_counter()
    model, frames, cost = s.contestants.prepare_model(ModelSpec(name, recipe=recipe, overrides=overrides), bar)
    cost["wall_time_s"] = time.perf_counter() - start if cost.get("wall_time_s") is None else cost["wall_time_s"]
    print(f"trained {cost['steps']} steps in {cost['wall_time_s']:.0f} s ({cost['flops_per_step']:.3g} FLOPs/step, "
          f"{cost['train_flops']:.3g} in all)")
    print("trained:")
    started = time.perf_counter()
    trained_rows = probe_every_depth(s, model, frames, depths)
    probe_time = time.perf_counter() - started
    result = {"variant": name, "recipe": recipe, "overrides": overrides, "data": data, "probe": probe,
              "cost": cost, "probe_time_s": probe_time,
              "random_init": random_rows, "trained": trained_rows, "random_init_key": key}
    (output / name).mkdir(parents=True, exist_ok=True)
    (output / name / "result.json").write_text(json.dumps(result, indent=1, default=str))
    return result


def table(result: dict) -> str:
    t, r = result["trained"], result["random_init"]
    ct, cr = chosen(t), chosen(r)
    lines = [f"variant {result['variant']}: recipe {result['recipe']} {' '.join(result['overrides'])}",
             f"data {json.dumps(result.get('data', {}))}, probe {json.dumps(result.get('probe', {}))}",
             f"steps {result['cost']['steps']}, train {result['cost']['wall_time_s']:.0f} s, "
             f"train FLOPs {result['cost']['train_flops']:.3g}, probes {result['probe_time_s']:.0f} s", "",
             "| model | depth | " + " | ".join(TASKS) + " |", "|---|---|" + "---|" * len(TASKS)]
    for label, row in (("trained (chosen on val)", ct), ("random init (chosen on val)", cr),
                       ("trained (last depth)", t[-1]), ("random init (last depth)", r[-1])):
        lines.append(f"| {label} | {row['depth']} | " + " | ".join(f"{row['test'][k]:.3f}" for k in TASKS) + " |")
    lines.append("| trained - random (chosen) | | " + " | ".join(f"{ct['test'][k] - cr['test'][k]:+.3f}" for k in TASKS) + " |")
    lines.append("| trained - random (last) | | " + " | ".join(f"{t[-1]['test'][k] - r[-1]['test'][k]:+.3f}" for k in TASKS) + " |")
    lines.append("| chance (most common test class) | | " + " | ".join(f"{ct['chance'][k]:.3f}" for k in TASKS) + " |")
    return "\n".join(lines)


def reversed_bound(clips: int = 40000, epochs: int = 30) -> None:
    """How identifiable is `reversed` at all? An MLP on GROUND-TRUTH trajectories (every object's position
    in all 8 frames, radii, velocities, accelerations: everything the pixels show) of `clips` training
    and clips / 4 test scenes of the study's distribution; prints test accuracy every 5 epochs."""
    import numpy as np

    from patchworld.data.synthetic import make_scene, simulate

    def sample(n, seed):
        x, y = [], []
        for i in range(n):
            scene = make_scene(np.random.default_rng([seed, i]), 1.0, 3, 0.3, 0.5)
            positions, _, _ = simulate(scene, 8, 1.0)
            if scene.reversed:
                positions = positions[::-1]
            f = np.zeros((8, 3, 3))
            f[:, : len(scene.radii), :2], f[:, : len(scene.radii), 2] = positions, scene.radii
            x.append(f.reshape(-1))
            y.append(int(scene.reversed))
        x = torch.tensor(np.array(x), dtype=torch.float32)
        p = x.view(-1, 8, 3, 3)[..., :2]
        v = p[:, 1:] - p[:, :-1]
        return torch.cat([x, v.flatten(1) * 10, (v[:, 1:] - v[:, :-1]).flatten(1) * 100], 1), torch.tensor(y)

    (x_train, y_train), (x_test, y_test) = sample(clips, 0), sample(clips // 4, 1)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(x_train.shape[1], 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 2))
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    for epoch in range(epochs):
        for index in torch.randperm(len(x_train)).split(256):
            loss = nn.functional.cross_entropy(net(x_train[index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if epoch % 5 == 4:
            with torch.no_grad():
                train = (net(x_train).argmax(1) == y_train).float().mean()
                test = (net(x_test).argmax(1) == y_test).float().mean()
            print(f"epoch {epoch + 1}: train {train:.3f} test {test:.3f}", flush=True)
    print(f"chance (most common test class) {max(y_test.float().mean(), 1 - y_test.float().mean()):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="a named variant (see --list)")
    parser.add_argument("--recipe", help="a recipe instead of a named variant")
    parser.add_argument("--override", nargs=argparse.REMAINDER, default=[], help="CLI overrides for --recipe (last)")
    parser.add_argument("--name", default="custom", help="output name for --recipe")
    parser.add_argument("--budget", type=float, default=1e13, help="training FLOPs (the study's budget_flops)")
    parser.add_argument("--steps", type=int, help="train this many steps instead of the FLOP budget")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--data", type=json.loads, default={}, help='DataSpec fields over compare-tiny\'s, as JSON '
                        '(the learnable settings: \'{"object_scale": 2, "friction": 0.2, "probe_train": 2048}\')')
    parser.add_argument("--probe", type=json.loads, default={}, help='ProbeSpec fields, as JSON (e.g. \'{"steps": 600}\')')
    parser.add_argument("--depths", type=int, nargs="+", help="encoder depths to probe (default: every one)")
    parser.add_argument("--output", default="runs/vjepa-motion-bench", help="checkpoints, results and cache")
    parser.add_argument("--list", action="store_true", help="print the variants and exit")
    parser.add_argument("--reversed-bound", type=int, metavar="CLIPS", help="only estimate how identifiable "
                        "`reversed` is: an MLP on ground-truth trajectories of CLIPS scenes (docs: 40000)")
    args = parser.parse_args()
    if args.reversed_bound:
        torch.set_num_threads(args.threads)
        return reversed_bound(args.reversed_bound)
    if args.list:
        for name, (recipe, overrides) in VARIANTS.items():
            print(f"{name:<18} {recipe} {' '.join(overrides)}")
        return
    torch.set_num_threads(args.threads)
    if args.variant:
        name, (recipe, overrides) = args.variant, VARIANTS[args.variant]
    elif args.recipe:
        name, recipe, overrides = args.name, args.recipe, args.override
    else:
        parser.error("give --variant or --recipe")
    start = time.perf_counter()
    result = run(name, recipe, overrides, Path(args.output), args.budget, args.steps, args.data, args.probe,
                 args.depths)
    print()
    print(table(result))
    print(f"\nwall time {time.perf_counter() - start:.0f} s (train + features + probes, both models)")


if __name__ == "__main__":
    main()
