"""LoRA vs full fine-tuning, measured: trainable parameters, step time and memory on sora-tiny, and whether
a LoRA fine-tune on clips of a colour the base never saw learns it. Prints tables (docs/data.md, "LoRA
fine-tuning").

    python benchmarks/lora.py costs [--steps 10]
    python benchmarks/lora.py colour --base runs/sora-tiny-sizes/lightning_logs/version_1/checkpoints/last.ckpt \\
        [--colour orange|white] [--rank 8] [--train_steps 300] [--clips 256] [--samples 24] [--out runs/lora-COLOUR]

`costs` trains sora-tiny (recipe as shipped, random weights, batch 16 of 8x32x32 clips) for a few steps per
setting, each in its own process so its peak memory is its own. `colour` renders SyntheticWorld clips whose
subject is always --colour (a seventh colour, added to SyntheticWorld's palette only while rendering them) to
mp4 + sidecar captions, fine-tunes the MiniLM sora-tiny-sizes base on that folder with `patchworld fit
--model.adapter LoRA` (VideoFolder), and generates, before and after, from test-split captions with the colour
word replaced by the new one and from the unchanged captions (forgetting): the subject's colour is read from its
pixels (those with a channel above 0.5: SyntheticWorld's backgrounds never reach it) as the nearest of the
seven palette colours.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from patchworld.recipes import load_world
from patchworld.data import synthetic
from patchworld.data.video_io import atomic_path, write_video

#: colours SyntheticWorld never draws; --colour picks the one the fine-tune clips get (NEW_COLOUR, NEW_RGB)
NEW_COLOURS = {"orange": (1.0, 0.55, 0.1), "white": (0.95, 0.95, 0.95)}
NEW_COLOUR, NEW_RGB = "orange", NEW_COLOURS["orange"]
SETTINGS = {"full": [], "lora r=4": ["--model.adapter", "LoRA", "--model.adapter.rank", "4"],
            "lora r=8": ["--model.adapter", "LoRA", "--model.adapter.rank", "8"],
            "lora r=32": ["--model.adapter", "LoRA", "--model.adapter.rank", "32"]}


# ---- costs ------------------------------------------------------------------------------------------------
def measure_one(name: str, steps: int) -> dict:
    """Train sora-tiny for `steps` steps (after 2 warm-up steps) with one setting; in this process."""
    world, data = load_world("sora-tiny", None, ["--trainer.precision", "32-true", *SETTINGS[name]])
    world.train()
    trainable = [p for p in world.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3, fused=True)
    batches = iter(data.train_dataloader())
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, saved = [], {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:  # what autograd keeps for the backward pass, once per storage
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    for step in range(steps + 2):
        batch = world.objective.prepare_batch(next(batches))
        start = time.perf_counter()
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            loss = world.objective.training_step(world, batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    state = sum(p.numel() for p in trainable) * 4 * 3  # fp32 grads + Adam's two moments of the trainable weights
    return {"setting": name, "trainable": sum(p.numel() for p in trainable),
            "total": sum(p.numel() for p in world.parameters()), "step_s": sorted(times[2:])[len(times[2:]) // 2],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024,
            "optimizer_state_mb": state / 2**20, "saved_mb": sum(saved.values()) / 2**20}


def costs(args) -> None:
    rows = []
    for name in SETTINGS:  # one process each: ru_maxrss is a process's peak
        out = subprocess.run([sys.executable, __file__, "one", name, "--steps", str(args.steps)], check=True,
                             capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    print("| setting | trainable parameters | of all | s/step (median) | saved for backward MB | grads + AdamW state MB "
          "| peak RSS MB | RSS growth while training MB |")
    print("|---|---|---|---|---|---|---|---|")
    full = rows[0]
    for row in rows:
        print(f"| {row['setting']} | {row['trainable']:,} | {row['trainable'] / row['total']:.1%} | {row['step_s']:.3f} "
              f"({row['step_s'] / full['step_s']:.2f}x) | {row['saved_mb']:.0f} | {row['optimizer_state_mb']:.2f} | "
              f"{row['peak_rss_mb']:.0f} | {row['rss_growth_mb']:.0f} |")


# ---- does it learn a new colour? ---------------------------------------------------------------------------
@contextmanager
def only_new_colour():
    """SyntheticWorld renders every subject in NEW_COLOUR (and names it so) inside this block."""
    names = synthetic.COLOUR_NAMES
    synthetic.COLOURS[NEW_COLOUR] = NEW_RGB
    synthetic.COLOUR_NAMES = (NEW_COLOUR,)
    try:
        yield
    finally:
        synthetic.COLOUR_NAMES = names
        del synthetic.COLOURS[NEW_COLOUR]


def render_folder(folder: Path, count: int) -> None:
    """`count` 8-frame 32x32 sora-tiny-style clips (one object, 2.5x, no gravity) in NEW_COLOUR: mp4 + .txt."""
    with only_new_colour():
        clips = synthetic.SyntheticClips(count, "train", 8, (32, 32), seed=7, max_objects=1, gravity_prob=0.0,
                                         object_scale=2.5)
        for i in range(count):
            item = clips[i]
            write_video(folder / f"clip{i:04d}.mp4", item["video"], fps=8)
            with atomic_path(folder / f"clip{i:04d}.txt") as tmp:
                tmp.write_text(item["caption"] + "\n")


def subject_rgb(video: torch.Tensor) -> torch.Tensor:
    """The subject's mean colour, (B, 3, T, H, W) in [-1, 1] -> (B, 3) in [0, 1]: the mean of the pixels with a
    channel above 0.5."""
    x = (video.float().clamp(-1, 1) + 1) / 2
    subject = (x.amax(1, keepdim=True) > 0.5).float()  # (B, 1, T, H, W)
    return (x * subject).sum((2, 3, 4)) / subject.sum((2, 3, 4)).clamp_min(1)  # (B, 3)


def colour_reading(video: torch.Tensor) -> list[str]:
    """The subject's colour, (B, 3, T, H, W) in [-1, 1] -> B names: its `subject_rgb`'s nearest colour of the
    palette plus NEW_COLOUR."""
    palette = {**synthetic.COLOURS, NEW_COLOUR: NEW_RGB}
    names, rgb = list(palette), torch.tensor(list(palette.values()))  # (7, 3)
    return [names[i] for i in torch.cdist(subject_rgb(video), rgb).argmin(1).tolist()]


def generated(world, captions: list[str], batch: int = 8) -> torch.Tensor:
    """Clips (B, 3, 8, 32, 32) generated from `captions`, seeded by their index."""
    found = []
    for start in range(0, len(captions), batch):
        part = captions[start : start + batch]
        video = world.objective.generate(world, part, torch.zeros(len(part), 3, 8, 32, 32),
                                         seeds=list(range(start, start + len(part))), progress=False)
        found.append(video)
    return torch.cat(found)


def rates(found: list[str], wanted: list[str]) -> str:
    hit = sum(f == w for f, w in zip(found, wanted)) / len(wanted)
    counts = {name: found.count(name) for name in dict.fromkeys(found)}
    return f"{hit:.0%} ({', '.join(f'{n} {c}' for n, c in sorted(counts.items(), key=lambda kv: -kv[1]))})"


def colour(args) -> None:
    out = Path(args.out)
    folder = out / "clips"
    if not folder.is_dir():
        start = time.perf_counter()
        render_folder(folder, args.clips)
        print(f"rendered {args.clips} {NEW_COLOUR} clips to {folder} in {time.perf_counter() - start:.0f} s")
    lora = ["--model.conditioner", "MiniLM", "--model.adapter", "LoRA", "--model.adapter.rank", str(args.rank),
            "--model.adapter.base", args.base]
    adapter = out / "adapter.safetensors"
    if not adapter.is_file():
        fit = ["patchworld", "fit", "--config", "sora-tiny-sizes", *lora, "--trainer.max_steps", str(args.train_steps),
               "--trainer.max_time", "null", "--trainer.precision", "32-true", "--trainer.logger", "false",
               "--trainer.default_root_dir", str(out), "--trainer.val_check_interval", str(args.train_steps),
               "--data", "VideoFolder", "--data.root", str(folder), "--data.frames", "8", "--data.size", "[32, 32]",
               "--data.batch_size", "16"]
        start = time.perf_counter()
        subprocess.run(fit, check=True)
        print(f"LoRA fine-tune: {args.train_steps} steps in {time.perf_counter() - start:.0f} s ({' '.join(fit)})")
    test = synthetic.SyntheticClips(args.samples, "test", 8, (32, 32), max_objects=1, gravity_prob=0.0, object_scale=2.5)
    old = [test[i]["caption"] for i in range(args.samples)]
    old_colours = [synthetic.COLOUR_NAMES[test[i]["labels"]["colour"]] for i in range(args.samples)]
    new = [re.sub(rf"\b{c}\b", NEW_COLOUR, caption) for caption, c in zip(old, old_colours)]
    base, _ = load_world("sora-tiny-sizes", args.base, ["--model.conditioner", "MiniLM"])
    tuned, _ = load_world("sora-tiny-sizes", None, [*lora, "--model.adapter.weights", str(adapter)])
    print(f"| model | '{NEW_COLOUR}' prompts: subject {NEW_COLOUR} (colours read) | their mean subject RGB "
          f"(target {NEW_RGB}) | the six old colours: right colour (colours read) | wall s |")
    print("|---|---|---|---|---|")
    for name, world in (("base", base), (f"LoRA r={args.rank}, {args.train_steps} steps", tuned)):
        world.eval()
        start = time.perf_counter()
        with torch.no_grad():
            on_new, on_old = generated(world, new), generated(world, old)
        rgb = ", ".join(f"{v:.2f}" for v in subject_rgb(on_new).mean(0).tolist())
        print(f"| {name} | {rates(colour_reading(on_new), [NEW_COLOUR] * len(new))} | ({rgb}) | "
              f"{rates(colour_reading(on_old), old_colours)} | {time.perf_counter() - start:.0f} |")
    real = [synthetic.SyntheticClips(args.samples, "test", 8, (32, 32), max_objects=1, gravity_prob=0.0,
                                     object_scale=2.5)[i]["video"] for i in range(args.samples)]
    print(f"colour reader on real test clips: {rates(colour_reading(torch.stack(real)), old_colours)}")
    with only_new_colour():
        clips = synthetic.SyntheticClips(args.samples, "test", 8, (32, 32), seed=7, max_objects=1, gravity_prob=0.0,
                                         object_scale=2.5)
        real_new = torch.stack([clips[i]["video"] for i in range(args.samples)])
    print(f"colour reader on real {NEW_COLOUR} clips: {rates(colour_reading(real_new), [NEW_COLOUR] * args.samples)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cost = sub.add_parser("costs")
    cost.add_argument("--steps", type=int, default=10)
    one = sub.add_parser("one")
    one.add_argument("setting", choices=list(SETTINGS))
    one.add_argument("--steps", type=int, default=10)
    new = sub.add_parser("colour")
    new.add_argument("--base", required=True, help="the trained sora-tiny-sizes (MiniLM) checkpoint")
    new.add_argument("--rank", type=int, default=8)
    new.add_argument("--train_steps", type=int, default=300)
    new.add_argument("--clips", type=int, default=256)
    new.add_argument("--samples", type=int, default=24)
    new.add_argument("--colour", choices=list(NEW_COLOURS), default="orange", help="the new colour")
    new.add_argument("--out", default=None, help="default runs/lora-COLOUR")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    if args.command == "colour":
        global NEW_COLOUR, NEW_RGB
        NEW_COLOUR, NEW_RGB = args.colour, NEW_COLOURS[args.colour]
        args.out = args.out or f"runs/lora-{args.colour}"
    if args.command == "one":
        print(json.dumps(measure_one(args.setting, args.steps)))
    else:
        {"costs": costs, "colour": colour}[args.command](args)


if __name__ == "__main__":
    main()
