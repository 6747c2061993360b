"""``patchworld adherence``: do generated videos show what their prompts ask for?

A small 3D-CNN judge is trained on real SyntheticWorld clips to read the subject's shape, colour and motion
direction (its accuracy on real held-out clips is reported as the ceiling). The generative model then
generates one clip per caption of SyntheticWorld's *test* split (clips it never trained on), and the judge's
reading of each generated clip is compared with the labels behind the caption. A recipe with buckets is
measured per bucket (one judge reads them all; direction only where T > 1), together with how often the
subject stays inside the frame (`subject_in_frame`).

    patchworld adherence --config sora-tiny --ckpt_path runs/sora-tiny/.../last.ckpt --samples 48
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from patchworld import PatchworldError
from patchworld.checkpoints import load_checkpoint
from patchworld.parsing import CommandParser
from patchworld.data.synthetic import COLOUR_NAMES, COLOURS, TASKS, SyntheticClips, collate
from patchworld.data.video_io import atomic_path, check_writable
from patchworld.precision import autocast_bf16
from patchworld.recipes import load_world

ATTRIBUTES = ("shape", "colour", "direction")


class AttributeJudge(nn.Module):
    """3D CNN: clip (B, 3, T, H, W) -> logits per attribute (shape, colour, direction)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv3d(3, width, 3, padding=1), nn.GELU(), nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(width, 2 * width, 3, padding=1), nn.GELU(), nn.MaxPool3d((1, 2, 2)),
            nn.Conv3d(2 * width, 3 * width, 3, padding=1), nn.GELU(),
        )
        self.heads = nn.ModuleDict({name: nn.Linear(6 * width, len(TASKS[name])) for name in ATTRIBUTES})

    def forward(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.features(video)  # (B, 3w, T, H/4, W/4)
        pooled = torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1)  # (B, 6w)
        return {name: head(pooled) for name, head in self.heads.items()}


def clips(split: str, count: int, template: SyntheticClips, start: int = 0,
          shape: tuple[int, int, int] | None = None) -> dict:
    """`count` clips of `split` rendered like `template` (same objects, object scale, gravity) at `shape`
    (T, H, W), by default the template's."""
    dataset = SyntheticClips(start + count, split, template.frames, template.size, template.seed,
                             template.max_objects, template.gravity_prob, object_scale=template.object_scale)
    shape = shape or (template.frames, *template.size)
    return collate([dataset[(i, shape)] for i in range(start, start + count)])


def train_judge(template: SyntheticClips, steps: int, batch_size: int = 32, seed: int = 0,
                shapes: list[tuple[int, int, int]] | None = None) -> AttributeJudge:
    """A judge trained on real clips; with several `shapes` (buckets) each step renders the next one."""
    torch.manual_seed(seed)
    judge = AttributeJudge()
    optimizer = torch.optim.AdamW(judge.parameters(), lr=2e-3, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 2e-3, total_steps=steps, pct_start=0.1)
    for step in range(steps):
        shape = shapes[step % len(shapes)] if shapes else None
        batch = clips("train", batch_size, template, start=step * batch_size, shape=shape)
        logits = judge(batch["video"])
        loss = sum(F.cross_entropy(logits[name], batch["labels"][name]) for name in ATTRIBUTES)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    return judge.eval()


@torch.no_grad()
def judge_accuracy(judge: AttributeJudge, video: torch.Tensor, labels: dict) -> dict[str, float]:
    logits = judge(video.float())
    return {name: float((logits[name].argmax(1) == labels[name]).float().mean()) for name in ATTRIBUTES}


def subject_in_frame(video: torch.Tensor, real: torch.Tensor, colours: torch.Tensor) -> float:
    """The fraction of frames in which the subject, in its prompted colour, covers at least half the area it
    covers in the real clip of the same caption (its median over frames). video, real: (B, 3, T, H, W) in
    [-1, 1]; colours: (B,) indices into COLOUR_NAMES. Real clips score ~1: their subjects never leave the
    frame (they bounce off the walls)."""
    rgb = torch.tensor([COLOURS[name] for name in COLOUR_NAMES])[colours][:, :, None, None, None]  # (B, 3, 1, 1, 1)

    def area(clip: torch.Tensor) -> torch.Tensor:  # (B, T) pixels within 0.3 of the colour in [0, 1] RGB
        return ((clip.float() + 1) / 2 - rgb).norm(dim=1).lt(0.3).sum(dim=(2, 3)).float()

    expected = area(real).median(dim=1).values.clamp(min=1)  # (B,)
    return float((area(video) >= 0.5 * expected[:, None]).float().mean())


def adherence(argv: list[str]) -> int:
    """Prompt adherence of a generative recipe: a judge network reads shape/colour/direction of generated clips."""
    parser = CommandParser(prog="patchworld adherence", description=__doc__)
    parser.add_argument("--config", required=True, help="the generative recipe (path or shipped name)")
    parser.add_argument("--ckpt_path", type=str | None, default=None, help="trained checkpoint")
    parser.add_argument("--overrides", type=list[str], default=[],
                        help='the extra fit arguments the model was trained with, e.g. \'["--data.init_args.object_scale", "2"]\'')
    parser.add_argument("--samples", type=int, default=48, help="test-split captions to generate (per bucket)")
    parser.add_argument("--steps", type=int | None, default=None, help="sampling steps (default: the objective's)")
    parser.add_argument("--guidance", type=float | None, default=None, help="guidance scale (default: the objective's)")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--judge_steps", type=int, default=300, help="training steps of the judge")
    parser.add_argument("--judge", type=str | None, default=None, help="load/save the judge's weights here")
    parser.add_argument("--precision", type=str, default="bf16", help="bf16 or 32 (autocast for generation)")
    parser.add_argument("--out", type=str | None, default=None, help="write results.json here")
    args = parser.parse_args(argv)
    if args.out and Path(args.out).is_dir():
        raise PatchworldError(f"--out {args.out} is a directory; give the path of the results .json file to write")
    if args.out:  # before any work: an unwritable --out must not wait for the end of the run
        check_writable(args.out)
    if args.judge and not Path(args.judge).is_file():
        check_writable(args.judge)

    world, data = load_world(args.config, args.ckpt_path, args.overrides)
    world.eval()
    template = getattr(data, "splits", {}).get("train")
    if not isinstance(template, SyntheticClips):
        raise PatchworldError("adherence needs a recipe whose data is SyntheticWorld (its labels are the truth)")
    if not hasattr(world.objective, "generate"):
        raise PatchworldError(f"{type(world.objective).__name__} does not generate videos")

    buckets = list(getattr(data, "buckets", None) or [(template.frames, *template.size)])
    judge_path = Path(args.judge) if args.judge else None
    if judge_path is not None and judge_path.is_file():
        judge = AttributeJudge()
        judge.load_state_dict(load_checkpoint(judge_path, "--judge", lightning=False))
        judge.eval()
    else:
        judge = train_judge(template, args.judge_steps, shapes=buckets)
        if judge_path is not None:
            with atomic_path(judge_path) as tmp:
                torch.save(judge.state_dict(), tmp)

    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast_bf16(args.precision == "bf16"))
    per_bucket = {}
    for bucket in buckets:
        test = clips("test", args.samples, template, shape=bucket)
        generated = []
        for start in range(0, args.samples, args.batch_size):
            end = min(start + args.batch_size, args.samples)
            with autocast:
                generated.append(world.objective.generate(
                    world, test["caption"][start:end], test["video"][start:end], steps=args.steps,
                    guidance=args.guidance, seeds=list(range(start, end)), progress=False))
        video = torch.cat(generated)
        attributes = [name for name in ATTRIBUTES if name != "direction" or bucket[0] > 1]  # a still has no motion
        rates, ceiling = (judge_accuracy(judge, clip, test["labels"]) for clip in (video, test["video"]))
        per_bucket["x".join(map(str, bucket))] = {
            "generated": {name: rates[name] for name in attributes}, "real": {name: ceiling[name] for name in attributes},
            "in_frame": {"generated": subject_in_frame(video, test["video"], test["labels"]["colour"]),
                         "real": subject_in_frame(test["video"], test["video"], test["labels"]["colour"])}}
    chance = {name: 1 / len(TASKS[name]) for name in ATTRIBUTES}
    pooled = {kind: {name: sum(values) / len(values) for name in ATTRIBUTES  # buckets weigh equally
                     if (values := [b[kind][name] for b in per_bucket.values() if name in b[kind]])}
              for kind in ("generated", "real")}
    if len(buckets) == 1:
        print(f"{'attribute':<10} {'generated':>10} {'real clips':>11} {'chance':>7}")
        for name in pooled["generated"]:
            print(f"{name:<10} {pooled['generated'][name]:>10.1%} {pooled['real'][name]:>11.1%} {chance[name]:>7.1%}")
    else:
        print(f"{'bucket TxHxW':<13} " + " ".join(f"{name:>9}" for name in ATTRIBUTES) + f" {'in frame':>9}   (generated / real clips)")
        for name, result in per_bucket.items():
            cells = [f"{result['generated'][a]:.0%}/{result['real'][a]:.0%}" if a in result["generated"] else "-"
                     for a in ATTRIBUTES]
            frame = result["in_frame"]
            print(f"{name:<13} " + " ".join(f"{c:>9}" for c in cells) + f" {frame['generated']:.0%}/{frame['real']:.0%}".rjust(10))
        print(f"{'chance':<13} " + " ".join(f"{chance[a]:>9.0%}" for a in ATTRIBUTES))
    results = {"generated": pooled["generated"], "real": pooled["real"], "chance": chance, "samples": args.samples,
               "buckets": per_bucket, "steps": args.steps or world.objective.steps,
               "guidance": world.objective.guidance if args.guidance is None else args.guidance}
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(results, indent=2))
    return 0
