"""Sora's repertoire on a trained model, measured: seamless loops, SDEdit edits, long videos window by window,
preview -> refine and sampling steps vs prompt adherence. Prints one table per task (docs/generation.md).

    python benchmarks/repertoire.py --config sora-tiny-sizes --ckpt_path runs/sora-tiny-sizes/.../last.ckpt \\
        --overrides '["--model.conditioner", "MiniLM"]' [--samples 24] [--tables seam,edit,long,refine,steps]

Every generation goes through `predict_step`, the path `patchworld predict` takes, on captions (and, for
edits, clips) of SyntheticWorld's test split at --size; the adherence judge (plugins/adherence.py) is trained
once on real clips and reads shape and colour. No assertions: it prints what comes out.
"""
from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F

from patchworld.checkpoints import load_checkpoint
from patchworld.recipes import load_world
from patchworld.data.synthetic import COLOUR_NAMES
from patchworld.data.video_io import atomic_path, read_clip, write_video
from patchworld_plugins.adherence import ATTRIBUTES, AttributeJudge, adherence, clips, train_judge
from patchworld_plugins.generation import TASKS, given_mask, task_frames, window_starts
from patchworld_plugins.prompts import REFINE_STRENGTH

CENTROID_PX = 3.0  # an edit keeps the motion when the subject's centroid stays within this of the source's


# ---- measures -------------------------------------------------------------------------------------------
def frame_differences(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """video (B, 3, T, H, W) in [-1, 1] -> consecutive-frame differences (B, T-1) and the end->start seam
    (B,), as mean absolute differences in [0, 1] pixel units."""
    x = (video.float() + 1) / 2
    steps = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(dim=(1, 3, 4))  # (B, T-1)
    return steps, (x[:, :, -1] - x[:, :, 0]).abs().mean(dim=(1, 2, 3))


def seam_measures(video: torch.Tensor) -> dict[str, float]:
    """In pixels: seam = |frame[T-1] - frame[0]| / the mean consecutive difference (about 1: no visible
    jump); worst = the largest consecutive difference / the mean one (a seam moved inside the clip shows
    here); step = the mean consecutive difference itself. The same for the subject's centroid track (motion
    alone, blind to flicker): how far it jumps from the last frame to the first, against its mean step."""
    steps, seam = frame_differences(video)
    mean = steps.mean(1).clamp_min(1e-6)  # (B,)
    track = centroids(video)  # (B, T, 2)
    moves = (track[:, 1:] - track[:, :-1]).norm(dim=-1)  # (B, T-1) pixels
    mean_move = moves.nanmean(1).clamp_min(1e-6)
    track_seam = (track[:, -1] - track[:, 0]).norm(dim=-1) / mean_move  # (B,)
    return {"seam": float((seam / mean).mean()), "seam_median": float((seam / mean).median()),
            "worst": float((steps.amax(1) / mean).mean()), "step": float(mean.mean()),
            "track_seam": float(track_seam.nanmean()), "track_seam_median": float(track_seam.nanmedian()),
            "track_worst": float((moves.nan_to_num(0).amax(1) / mean_move).nanmean()),
            "track_step": float(moves.nanmean())}


def foreground(video: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) -> (B, T, H, W) bool: the subject's pixels. SyntheticWorld's backgrounds have every
    channel below 0.25 (of [0, 1]) and every subject colour a channel above 0.85, so a channel above 0.5."""
    return ((video.float() + 1) / 2).amax(1) > 0.5


def centroids(video: torch.Tensor) -> torch.Tensor:
    """The subject's centroid per frame, (B, T, 2) = (x, y) in pixels (NaN where no pixel is foreground)."""
    mask = foreground(video).float()  # (B, T, H, W)
    H, W = mask.shape[-2:]
    ys, xs = torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32)
    area = mask.sum(dim=(2, 3))  # (B, T)
    x = (mask * xs).sum(dim=(2, 3)) / area
    y = (mask * ys[:, None]).sum(dim=(2, 3)) / area
    return torch.stack([x, y], -1)


def track_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over frames of the distance (pixels) between the subjects' centroids of two videos, (B,)."""
    return (centroids(a) - centroids(b)).norm(dim=-1).nanmean(1)


def spatial_detail(video: torch.Tensor) -> float:
    """Mean absolute difference between neighbouring pixels (across and down), in [0, 1] units: blur
    lowers it, sharp edges (and noise) raise it."""
    x = (video.float() + 1) / 2
    return float(((x[..., 1:] - x[..., :-1]).abs().mean() + (x[..., 1:, :] - x[..., :-1, :]).abs().mean()) / 2)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of videos in [-1, 1] (peak-to-peak 2), over the whole batch."""
    return float(10 * torch.log10(4 / (a.float() - b.float()).pow(2).mean()))


@torch.no_grad()
def read_attributes(judge: AttributeJudge, video: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: logits.argmax(1) for name, logits in judge(video.float()).items()}


def rate(hits: torch.Tensor) -> str:
    return f"{hits.float().mean():.0%}"


# ---- generation through predict_step --------------------------------------------------------------------
class Generator:
    """Batches of `predict_step` (the path of `patchworld predict`) with a stopwatch."""

    def __init__(self, world, batch_size: int):
        self.world, self.batch_size = world, batch_size

    @torch.no_grad()
    def __call__(self, captions: list[str], video: torch.Tensor, task: str = "t2v", context_frames: int = 2,
                 **settings) -> tuple[torch.Tensor, float]:
        """Generate for video (B, 3, T, H, W) (the given frames or the source); returns (B, 3, T, H, W) and
        the wall seconds."""
        T = video.shape[2]
        given = given_mask(task_frames(task, T, context_frames), T, 1)[0]
        out, start = [], time.perf_counter()
        for first in range(0, len(captions), self.batch_size):
            last = min(first + self.batch_size, len(captions))
            batch = {"caption": captions[first:last], "video": video[first:last], "index": torch.arange(first, last),
                     "given": given.expand(last - first, -1), "task": task, **settings}
            out.append(self.world.objective.predict_step(self.world, batch)["video"])
        return torch.cat(out), time.perf_counter() - start


# ---- the tables -------------------------------------------------------------------------------------------
def seam_table(generate: Generator, test: dict, judge, contexts: list[int]) -> dict:
    captions, video = test["caption"], torch.zeros_like(test["video"])
    rows = {"real clips": (test["video"], None), "t2v": generate(captions, video)}
    for k in contexts:
        rows[f"loop, context_frames {k}"] = generate(captions, video, task="loop", context_frames=k)
    print(f"\n## Seamless loops ({len(captions)} test captions, {video.shape[2]} frames, "
          f"{video.shape[-2]}x{video.shape[-1]})")
    print("| clips | pixels: seam / mean step (mean, median) | worst / mean step | mean step x1000 | centroid: seam / "
          "mean step (mean, median) | worst / mean step | mean step px | colour | shape | wall s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = {}
    for name, (clip, seconds) in rows.items():
        m = seam_measures(clip)
        read = read_attributes(judge, clip)
        hits = {a: read[a] == test["labels"][a] for a in ("colour", "shape")}
        print(f"| {name} | {m['seam']:.2f}, {m['seam_median']:.2f} | {m['worst']:.2f} | {1000 * m['step']:.1f} | "
              f"{m['track_seam']:.2f}, {m['track_seam_median']:.2f} | {m['track_worst']:.2f} | {m['track_step']:.2f} | "
              f"{rate(hits['colour'])} | "
              f"{rate(hits['shape'])} | {'' if seconds is None else f'{seconds:.1f}'} |")
        results[name] = m | {a: float(h.float().mean()) for a, h in hits.items()} | {"seconds": seconds}
    return results


def recoloured(caption: str, colour: int, shift: int) -> tuple[str, int]:
    """The caption with its colour word replaced by the one `shift` along COLOUR_NAMES; the new index."""
    new = (colour + shift) % len(COLOUR_NAMES)
    return re.sub(rf"\b{COLOUR_NAMES[colour]}\b", COLOUR_NAMES[new], caption), new


def edit_row(generate: Generator, test: dict, judge, strength: float, shift: int) -> dict:
    """Edit every test clip under its caption recoloured by `shift`; what the judge and the track say."""
    pairs = [recoloured(c, int(k), shift) for c, k in zip(test["caption"], test["labels"]["colour"])]
    captions, new_colour = [c for c, _ in pairs], torch.tensor([k for _, k in pairs])
    source = test["video"]
    edited, seconds = generate(captions, source, task="edit", strength=strength)
    read = read_attributes(judge, edited)
    distance = track_distance(edited, source)  # (B,) NaN where the subject vanished from every frame
    area = foreground(edited).float().mean(dim=(1, 2, 3)) / foreground(source).float().mean(dim=(1, 2, 3))
    hits = {"new_colour": read["colour"] == new_colour, "old_colour": read["colour"] == test["labels"]["colour"],
            "shape_kept": read["shape"] == test["labels"]["shape"], "track_kept": distance <= CENTROID_PX,
            "area_kept": (area - 1).abs() <= 0.5}
    return {k: float(v.float().mean()) for k, v in hits.items()} | {
        "centroid_px": float(distance.nanmean()), "area": float(area.median()),
        "l1": float(((edited - source).abs() / 2).mean()), "seconds": seconds}


EDIT_COLUMNS = ("| new colour | old colour | shape kept | centroid distance px | track kept | subject area (median) | "
                "area kept | L1 to source | wall s |")


def edit_cells(row: dict) -> str:
    return (f"| {row['new_colour']:.0%} | {row['old_colour']:.0%} | {row['shape_kept']:.0%} | "
            f"{row['centroid_px']:.1f} | {row['track_kept']:.0%} | {row['area']:.2f} | {row['area_kept']:.0%} | "
            f"{row['l1']:.3f} | {row['seconds']:.1f} |")


def edit_table(generate: Generator, test: dict, judge, strengths: list[float], default: float) -> dict:
    print(f"\n## Edit (SDEdit): recolour the subject ({len(test['caption'])} test clips, the caption's colour word "
          f"replaced by the colour 3 along {', '.join(COLOUR_NAMES)}; track kept = the subject's centroid within "
          f"{CENTROID_PX:g} px of the source's on average; area kept = its area within 50% of the source's)")
    print("| strength " + EDIT_COLUMNS + "\n" + "|---" * 10 + "|")
    results = {"sweep": {str(s): edit_row(generate, test, judge, s, 3) for s in strengths}}
    for strength, row in results["sweep"].items():
        print(f"| {strength} " + edit_cells(row))
    print(f"\nAt strength {default:g}, every other new colour (shift k along the list):")
    print("| shift " + EDIT_COLUMNS + "\n" + "|---" * 10 + "|")
    results["shifts"] = {}
    for shift in range(1, len(COLOUR_NAMES)):
        results["shifts"][str(shift)] = row = edit_row(generate, test, judge, default, shift)
        print(f"| {shift} " + edit_cells(row))
    return results


def long_table(generate: Generator, test: dict, judge, frames: int, window: int, overlaps: list[int]) -> dict:
    captions = test["caption"]
    video = torch.zeros(len(captions), 3, frames, *test["video"].shape[-2:])
    chunks = [slice(s, s + window) for s in range(0, frames, window)]
    print(f"\n## Long videos: {frames} frames in windows of {window} ({len(captions)} test captions; judged in "
          f"{len(chunks)} consecutive {window}-frame chunks: colour and shape against the caption, the same colour "
          f"and shape as in frames 0-{window - 1}, the subject's area against frames 0-{window - 1})")
    print("| overlap | windows | " + " | ".join(f"frames {c.start}-{c.stop - 1}: colour, shape / same colour, shape "
                                               f"/ area" for c in chunks) + " | wall s |")
    print("|---|---|" + "---|" * len(chunks) + "---|")
    results = {}
    for overlap in overlaps:
        long, seconds = generate(captions, video, window=window, overlap=overlap)
        windows = len(window_starts(frames, window, overlap))
        area0 = foreground(long[:, :, chunks[0]]).float().mean()
        first = read_attributes(judge, long[:, :, chunks[0]])
        cells, per_chunk = [], []
        for chunk in chunks:
            read = read_attributes(judge, long[:, :, chunk])
            hits = {a: read[a] == test["labels"][a] for a in ("colour", "shape")}
            same = {a: read[a] == first[a] for a in ("colour", "shape")}
            area = float(foreground(long[:, :, chunk]).float().mean() / area0.clamp_min(1e-6))
            cells.append(f"{rate(hits['colour'])}, {rate(hits['shape'])} / {rate(same['colour'])}, "
                         f"{rate(same['shape'])} / {area:.2f}")
            per_chunk.append({**{a: float(h.float().mean()) for a, h in hits.items()},
                              **{f"same_{a}": float(h.float().mean()) for a, h in same.items()},
                              "area_vs_first": area})
        print(f"| {overlap} | {windows} | " + " | ".join(cells) + f" | {seconds:.1f} |")
        results[str(overlap)] = {"windows": windows, "chunks": per_chunk, "seconds": seconds}
    return results


def refine_table(generate: Generator, test: dict, judge, preview_size: tuple[int, int], strengths: list[float],
                 steps: int) -> dict:
    captions, size = test["caption"], tuple(test["video"].shape[-2:])
    small = torch.zeros(len(captions), 3, test["video"].shape[2], *preview_size)
    preview, preview_s = generate(captions, small)
    with tempfile.TemporaryDirectory() as folder:  # through mp4 files, as `--data.refine_from` reads them
        paths = [write_video(Path(folder) / f"{i}.mp4", clip) for i, clip in enumerate(preview)]
        upsampled = torch.stack([read_clip(path, None, size) for path in paths])  # (B, 3, T, H, W)
    full, full_s = generate(captions, torch.zeros_like(test["video"]))
    print(f"\n## Preview {preview_size[0]}x{preview_size[1]} -> refine {size[0]}x{size[1]} ({len(captions)} test "
          f"captions, {steps} steps from noise; the refine is an edit of the upsampled preview with its own prompt)")
    real_detail = spatial_detail(test["video"])
    print("| video | PSNR vs preview (downsampled) dB | centroid vs preview px | detail vs real clips | colour | shape "
          "| wall s |")
    print("|---|---|---|---|---|---|---|")

    def row(name: str, video: torch.Tensor, seconds: float | None) -> dict:
        down = F.avg_pool3d(video.float(), (1, size[0] // preview_size[0], size[1] // preview_size[1]))
        read = read_attributes(judge, video)
        hits = {a: read[a] == test["labels"][a] for a in ("colour", "shape")}
        distance = track_distance(down, preview)
        detail = spatial_detail(video) / real_detail
        print(f"| {name} | {psnr(down, preview):.1f} | {distance.nanmean():.2f} | {detail:.2f} | "
              f"{rate(hits['colour'])} | {rate(hits['shape'])} | {'' if seconds is None else f'{seconds:.1f}'} |")
        return {"psnr": psnr(down, preview), "centroid_px": float(distance.nanmean()), "seconds": seconds,
                "detail_vs_real": detail,
                **{a: float(h.float().mean()) for a, h in hits.items()}}

    results = {"preview_seconds": preview_s, "upsampled": row("preview, upsampled (no refine)", upsampled, None)}
    for strength in strengths:
        refined, seconds = generate(captions, upsampled, task="edit", strength=strength)
        default = " (default)" if strength == REFINE_STRENGTH else ""
        results[str(strength)] = row(f"refined, strength {strength:g}{default}: preview {preview_s:.1f} s + refine "
                                     f"{seconds:.1f} s", refined, preview_s + seconds)
    results["full"] = row(f"full {size[0]}x{size[1]} from noise", full, full_s)
    return results


def steps_table(config: str, ckpt: str, overrides: list[str], samples: int, judge_path: Path,
                settings: list[tuple[str, int]]) -> dict:
    print(f"\n## Sampling steps vs prompt adherence (`patchworld adherence`, {samples} test captions)")
    print("| sampler | steps | network calls per sample | shape | colour | direction | wall s |")
    print("|---|---|---|---|---|---|---|")
    results = {}
    for sampler, steps in settings:
        out = judge_path.with_name(f"adherence-{sampler}-{steps}.json")
        start = time.perf_counter()
        argv = ["--config", config, "--ckpt_path", ckpt, "--samples", str(samples), "--steps", str(steps),
                "--judge", str(judge_path), "--precision", "32", "--out", str(out),
                "--overrides", json.dumps([*overrides, "--model.objective.init_args.sampler", sampler])]
        adherence(argv)
        seconds = time.perf_counter() - start
        found = json.loads(out.read_text())["generated"]
        calls = steps if sampler == "euler" else 2 * steps - 1
        print(f"| {sampler} | {steps} | {calls} | " + " | ".join(f"{found[a]:.1%}" for a in ATTRIBUTES)
              + f" | {seconds:.1f} |")
        results[f"{sampler}-{steps}"] = found | {"calls": calls, "seconds": seconds}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the generative recipe the model was trained with")
    parser.add_argument("--ckpt_path", required=True, help="its trained checkpoint")
    parser.add_argument("--overrides", default="[]", help="JSON list of the extra fit arguments it was trained with")
    parser.add_argument("--samples", type=int, default=24, help="test-split captions / clips per table")
    parser.add_argument("--size", type=int, nargs=2, default=[32, 32], help="H W of the generated clips")
    parser.add_argument("--preview_size", type=int, nargs=2, default=[16, 16], help="H W of the previews")
    parser.add_argument("--window", type=int, default=None,
                        help="window of the long videos (default: the clip length the checkpoint recorded)")
    parser.add_argument("--long_frames", type=int, default=32, help="frames of the long videos")
    parser.add_argument("--overlaps", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--loop_contexts", type=int, nargs="+", default=[1, 2, 3], help="context_frames of the loops")
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.2, 0.4, 0.6, 0.8, 1.0])
    parser.add_argument("--refine_strengths", type=float, nargs="+", default=[0.3, 0.5, 0.7])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--judge_steps", type=int, default=300)
    parser.add_argument("--judge", default=None, help="load the judge's weights from here, or train and save them")
    parser.add_argument("--tables", default="seam,edit,long,refine,steps", help="which tables, comma-separated")
    parser.add_argument("--out", default=None, help="also write the numbers here (JSON)")
    args = parser.parse_args()
    tables = args.tables.split(",")

    overrides = [*json.loads(args.overrides), "--data.init_args.size", json.dumps(args.size)]
    world, data = load_world(args.config, args.ckpt_path, overrides)
    world.on_load_checkpoint(load_checkpoint(args.ckpt_path))  # what predict does: the recorded clip length
    world.eval()
    world.objective.progress = False
    template = data.splits["train"]
    window = args.window or world.clip_frames
    source = "--window" if args.window else "recorded in the checkpoint"
    if window is None:
        window, source = template.frames, "the recipe's clip length (the checkpoint records none)"
    start = time.perf_counter()
    if args.judge and Path(args.judge).is_file():
        judge = AttributeJudge()
        judge.load_state_dict(load_checkpoint(args.judge, "--judge", lightning=False))
        judge.eval()
    else:
        judge = train_judge(template, args.judge_steps)
        if args.judge:
            with atomic_path(args.judge) as tmp:
                torch.save(judge.state_dict(), tmp)
    test = clips("test", args.samples, template)
    ceiling = read_attributes(judge, test["video"])
    objective = world.objective
    print(f"judge: {args.judge or f'{args.judge_steps} steps'} ({time.perf_counter() - start:.0f} s); on "
          f"{args.samples} real test clips "
          + ", ".join(f"{a} {rate(ceiling[a] == test['labels'][a])}" for a in ATTRIBUTES)
          + f"; sampling: {objective.steps} {getattr(objective, 'sampler', '')} steps, guidance {objective.guidance}; "
          f"window {window} ({source})")
    generate = Generator(world, args.batch_size)
    results: dict = {"samples": args.samples, "window": window}
    if "seam" in tables:
        results["seam"] = seam_table(generate, test, judge, args.loop_contexts)
    if "edit" in tables:
        results["edit"] = edit_table(generate, test, judge, args.strengths, TASKS["edit"].strength)
    if "long" in tables:
        results["long"] = long_table(generate, test, judge, args.long_frames, window, args.overlaps)
    if "refine" in tables:
        results["refine"] = refine_table(generate, test, judge, tuple(args.preview_size), args.refine_strengths,
                                         world.objective.steps)
    if "steps" in tables:
        with tempfile.TemporaryDirectory() as folder:
            judge_path = Path(folder) / "judge.pt"
            torch.save(judge.state_dict(), judge_path)
            results["steps"] = steps_table(args.config, args.ckpt_path, overrides, args.samples, judge_path,
                                           [(s, n) for s in ("euler", "heun") for n in (10, 25, 50)])
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
