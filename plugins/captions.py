"""Captions in the style the model trained on: `StyleExpander` (short prompt -> caption), `ProbeCaptioner`
(video -> caption) and ``patchworld recaption FOLDER`` (sidecar captions for a folder of videos).

SyntheticWorld's canonical caption is ``a {size} {colour} {shape} moves {direction} {speed}[, extras]``
(`patchworld.data.synthetic.captions`); both components write exactly that sentence through the same
function, so an expanded prompt or a recaptioned clip reads like a training caption.

    patchworld predict ... --data Prompts --data.prompts '["red circle going left"]' --data.expander StyleExpander
    patchworld recaption clips/                       # writes clips/name.txt beside each clip that has none
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from jsonargparse import lazy_instance
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from patchworld import ComponentError, DataError, PatchworldError
from patchworld.errors import require_positive
from patchworld.parsing import CommandParser
from patchworld.data.synthetic import COLOUR_NAMES, DIRECTIONS, SHAPES, SIZES, SPEEDS, TASKS, Scene, SyntheticClips
from patchworld.data.synthetic import captions as synthetic_captions
from patchworld.data.synthetic import collate
from patchworld.data.video_folder import VIDEO_EXTENSIONS
from patchworld.data.video_io import atomic_path, probe_video, read_clip
from patchworld.evaluation.study import torch_threads
from patchworld.interfaces import Captioner, PromptExpander

#: what a caption says about its subject, in the order of the canonical caption
CAPTIONED = ("size", "colour", "shape", "direction", "speed")


def caption_of(size: str, colour: str, shape: str, direction: str, speed: str, others: int = 0,
               bounced: bool = False, collided: bool = False, gravity: bool = False) -> str:
    """The canonical SyntheticWorld caption of a subject (and scene), written by SyntheticWorld's own
    `captions`: e.g. ``a large red circle moves to the left slowly``."""
    scene = Scene(shapes=[shape] * (others + 1), colours=[colour] * (others + 1), sizes=[size] * (others + 1),
                  radii=np.zeros(others + 1), position=np.zeros((others + 1, 2)), velocity=np.zeros((others + 1, 2)),
                  speed=speed, gravity=gravity, reversed=False, background=np.zeros(3))
    return synthetic_captions(scene, direction, {"bounced": bounced, "collided": collided})[0]


# ---- prompt expansion ---------------------------------------------------------------------------------
_SYNONYMS = {
    "shape": {"circle": "circle", "ball": "circle", "disc": "circle", "disk": "circle", "dot": "circle",
              "square": "square", "box": "square", "block": "square", "triangle": "triangle",
              "diamond": "diamond", "rhombus": "diamond"},
    "size": {"small": "small", "tiny": "small", "little": "small", "large": "large", "big": "large",
             "huge": "large"},
    "direction": {"right": "right", "rightwards": "right", "rightward": "right", "left": "left",
                  "leftwards": "left", "leftward": "left", "up": "up", "upwards": "up", "upward": "up",
                  "rising": "up", "top": "up", "down": "down", "downwards": "down", "downward": "down",
                  "bottom": "down", "sinking": "down", "falling": "down", "dropping": "down"},
    "speed": {"slow": "slow", "slowly": "slow", "gently": "slow", "gentle": "slow", "leisurely": "slow",
              "fast": "fast", "quickly": "fast", "quick": "fast", "rapidly": "fast", "rapid": "fast",
              "speeding": "fast", "racing": "fast"},
}
#: colour words StyleExpander knows besides SyntheticWorld's six, by default
EXTRA_COLOURS = ("orange", "purple", "pink", "white", "black", "brown", "grey")
_COUNTS = {"a": 1, "an": 1, "one": 1, "another": 1, "two": 2, "three": 3, "1": 1, "2": 2, "3": 3}


class StyleExpander(PromptExpander):
    """Rewrites short prompts ("red circle going left") into SyntheticWorld's descriptive caption style.

    It reads the subject's colour, shape, size, direction and speed (synonyms too: "ball", "big", "going
    left", "quickly") and the scene's extras ("with 2 other objects", "bouncing", "colliding", "under
    gravity"), fills what the prompt leaves out from the defaults below, and writes the canonical training
    caption. A prompt that names neither a colour nor a shape is returned unchanged (nothing to expand).

    Args:
        size: the size a prompt without one gets (small, large).
        speed: the speed a prompt without one gets (slow, fast).
        colour: the colour a prompt that names a shape but no colour gets.
        shape: the shape a prompt that names a colour but no shape gets.
        direction: the direction a prompt without one gets (right, left, up, down).
        colours: colour words recognised besides SyntheticWorld's six, e.g. for a model fine-tuned on a new
            colour (default `EXTRA_COLOURS`: orange, purple, pink, white, black, brown, grey).
    """

    def __init__(self, size: str = "large", speed: str = "slow", colour: str = "red", shape: str = "circle",
                 direction: str = "right", colours: list[str] | None = None):
        for name, value, valid in (("size", size, SIZES), ("speed", speed, SPEEDS), ("shape", shape, SHAPES),
                                   ("direction", direction, DIRECTIONS)):
            if value not in valid:
                raise PatchworldError(f"StyleExpander: {name} {value!r} is not one of {', '.join(valid)}")
        self.colours = tuple(dict.fromkeys([*COLOUR_NAMES, *(EXTRA_COLOURS if colours is None else colours)]))
        if colour not in self.colours:
            raise PatchworldError(f"StyleExpander: colour {colour!r} is not one of {', '.join(self.colours)}")
        self.defaults = {"size": size, "speed": speed, "colour": colour, "shape": shape, "direction": direction}

    def expand(self, prompts: list[str]) -> list[str]:
        return [self.expand_one(prompt) for prompt in prompts]

    def expand_one(self, prompt: str) -> str:
        words = re.findall(r"[a-z0-9]+", prompt.lower())
        found: dict[str, str] = {}
        for word in words:
            if word in self.colours:
                found.setdefault("colour", word)
            for slot, table in _SYNONYMS.items():
                key = word if word in table else word.removesuffix("s") if word.removesuffix("s") in table else None
                if key is not None:
                    found.setdefault(slot, table[key])
        if "colour" not in found and "shape" not in found:
            return prompt
        others = re.search(r"\b(a|an|one|another|two|three|[123])\s+(?:other|more)\s+(?:objects?|shapes?)", prompt.lower())
        return caption_of(**(self.defaults | found), others=_COUNTS[others.group(1)] if others else 0,
                          bounced=any(w.startswith("bounc") for w in words),
                          collided=any(w.startswith(("collid", "collision", "crash")) for w in words),
                          gravity="gravity" in words)


# ---- captioning -----------------------------------------------------------------------------------------
def subject_measures(video: torch.Tensor) -> torch.Tensor:
    """Measures of the subject of clips (B, 3, T, H, W) in [-1, 1] -> (B, 12): its mean colour (3), area and
    square-root area (2; as fractions of the frame and of its shorter side), how much of its bounding box it
    fills and how much more of it lies in the lower half of the box than in the upper (2; shape), its centroid's
    first step (dx, dy), mean first three steps (dx, dy) and mean step length (5; shorter sides per frame). The subject is every pixel with a
    channel above 0.5 in [0, 1] (SyntheticWorld's backgrounds never reach it, every subject colour does)."""
    B, _, T, H, W = video.shape
    x = (video.float().clamp(-1, 1) + 1) / 2
    mask = (x.amax(1) > 0.5).float()  # (B, T, H, W)
    area = mask.sum((2, 3)).clamp_min(1)  # (B, T)
    colour = (x * mask[:, None]).sum((2, 3, 4)) / area.sum(1, keepdim=True)  # (B, 3)
    ys = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    xs = torch.arange(W, dtype=torch.float32)[None, :].expand(H, W)
    cy, cx = (mask * ys).sum((2, 3)) / area, (mask * xs).sum((2, 3)) / area  # (B, T) centroid
    rows, cols = mask.amax(3), mask.amax(2)  # (B, T, H), (B, T, W): which rows / columns it covers
    height, width = rows.sum(2).clamp_min(1), cols.sum(2).clamp_min(1)
    top = rows.argmax(2)  # (B, T) its first row
    lower = (mask * (ys > (top + height / 2)[..., None, None] - 0.5).float()).sum((2, 3)) / area  # (B, T)
    unit = min(H, W)
    steps = torch.stack([cx.diff(dim=1), cy.diff(dim=1)], -1) / unit if T > 1 else torch.zeros(B, 1, 2)
    return torch.cat([colour, (area / (H * W)).mean(1, keepdim=True), (area.sqrt() / unit).mean(1, keepdim=True),
                      (area / (height * width)).mean(1, keepdim=True), (2 * lower - 1).mean(1, keepdim=True),
                      steps[:, 0], steps[:, :3].mean(1), steps.norm(dim=-1).mean(1, keepdim=True)], dim=1)


class ProbeCaptioner(Captioner):
    """A frozen probe trained on SyntheticWorld labels writes each clip's caption in the training style.

    The probe is a small MLP (12 -> 64 -> one head per attribute) on `subject_measures` of the clip (the
    subject's colour, area, silhouette and centroid track), trained when it is built (a few seconds) on
    `clips` SyntheticWorld clips rendered like the sora recipes' (one object drawn `object_scale` larger, no
    gravity) to read the subject's size, colour, shape, direction and speed, then frozen. The caption is the
    canonical SyntheticWorld caption of those five (scene extras such as bounces are not captioned). It only
    knows SyntheticWorld's shapes and colours: on other videos its captions are guesses.

    Args:
        frames: frames of the clip it reads from each video (from the middle) and trains on.
        size: (H, W) it reads clips at (resized to cover, centre-cropped) and trains on.
        object_scale: SyntheticWorld's object_scale of its training clips ("small" and "large" are relative).
        clips: SyntheticWorld training clips of the probe.
        steps: training steps (full batch) of the probe.
        seed: seed of its initialisation and training clips.
    """

    def __init__(self, frames: int = 8, size: tuple[int, int] = (32, 32), object_scale: float = 2.5,
                 clips: int = 2048, steps: int = 300, seed: int = 0):
        if frames < 2:
            raise PatchworldError(f"ProbeCaptioner: frames must be at least 2 (motion needs two), got {frames}")
        if len(size) != 2:
            raise ComponentError(f"ProbeCaptioner.size must be (H, W), got {size!r}")
        require_positive("ProbeCaptioner", height=size[0], width=size[1], clips=clips, steps=steps,
                         object_scale=object_scale)
        if seed < 0:
            raise ComponentError(f"ProbeCaptioner.seed must be >= 0, got {seed}")
        self.frames, self.size, self.object_scale, self.seed = frames, tuple(size), object_scale, seed
        torch.manual_seed(seed)
        self.probe = nn.Sequential(nn.Linear(12, 64), nn.GELU())
        self.heads = nn.ModuleDict({name: nn.Linear(64, len(TASKS[name])) for name in CAPTIONED})
        train = self.clips("train", clips)
        features = subject_measures(train["video"])  # (clips, 12)
        self.mean, self.std = features.mean(0), features.std(0).clamp_min(1e-6)
        parameters = [*self.probe.parameters(), *self.heads.parameters()]
        optimizer = torch.optim.Adam(parameters, lr=1e-2)
        with torch_threads(1):  # tiny tensors: more threads only add synchronisation (many times slower when busy)
            for _ in range(steps):
                logits = self.logits(features)
                loss = sum(F.cross_entropy(logits[name], train["labels"][name]) for name in CAPTIONED)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        for parameter in parameters:
            parameter.requires_grad_(False)

    def clips(self, split: str, count: int) -> dict:
        """`count` SyntheticWorld clips of `split`, rendered as the probe trains on them."""
        dataset = SyntheticClips(count, split, self.frames, self.size, self.seed, max_objects=1, gravity_prob=0.0,
                                 object_scale=self.object_scale)
        return collate([dataset[i] for i in range(count)])

    def logits(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.probe((features - self.mean) / self.std)  # (B, 64)
        return {name: head(hidden) for name, head in self.heads.items()}

    @torch.no_grad()
    def read(self, video: torch.Tensor) -> dict[str, list[str]]:
        """The probe's reading of clips (B, 3, frames, H, W): attribute -> B class names."""
        logits = self.logits(subject_measures(video))
        return {name: [TASKS[name][i] for i in logits[name].argmax(1).tolist()] for name in CAPTIONED}

    def caption(self, video: torch.Tensor) -> list[str]:
        reading = self.read(video)
        return [caption_of(*(reading[name][i] for name in CAPTIONED)) for i in range(video.shape[0])]

    def accuracy(self, count: int = 256) -> dict[str, float]:
        """Its accuracy per attribute, and on the whole caption, on `count` held-out (test split) clips."""
        test = self.clips("test", count)
        reading = self.read(test["video"])
        hits = {name: torch.tensor([TASKS[name][label] == guess
                                    for label, guess in zip(test["labels"][name].tolist(), reading[name])])
                for name in CAPTIONED}
        return {**{name: float(hit.float().mean()) for name, hit in hits.items()},
                "caption": float(torch.stack(list(hits.values())).all(0).float().mean())}


# ---- patchworld recaption -----------------------------------------------------------------------------
def videos_in(folder: Path) -> list[Path]:
    """The video files under `folder` (what VideoFolder reads), or a one-line DataError if there are none."""
    if not folder.is_dir():
        raise DataError(f"recaption: {folder} is not a folder")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    if not found:
        raise DataError(f"recaption: no video files in {folder} (looked for "
                        f"{'/'.join(e.lstrip('.') for e in VIDEO_EXTENSIONS)})")
    return found


def recaption(argv: list[str]) -> int:
    """Write the missing sidecar captions (name.txt beside name.mp4) of a folder of videos with a captioner."""
    parser = CommandParser(prog="patchworld recaption", description=recaption.__doc__)
    parser.add_argument("folder", type=str, help="the folder of videos (searched recursively, as VideoFolder does)")
    parser.add_argument("--captioner", type=Captioner, default=lazy_instance(ProbeCaptioner),
                        help="the captioner (default ProbeCaptioner; `--captioner.help ProbeCaptioner` lists its options)")
    parser.add_argument("--overwrite", action="store_true", help="also replace captions that exist")
    parser.add_argument("--batch_size", type=int, default=16, help="clips captioned together")
    args = parser.parse_args(argv)
    videos = videos_in(Path(args.folder))
    todo = [path for path in videos if args.overwrite or not path.with_suffix(".txt").exists()]
    print(f"recaption: {len(todo)} of {len(videos)} videos in {args.folder} to caption"
          + ("" if args.overwrite else f" ({len(videos) - len(todo)} already have a caption)"))
    if not todo:
        return 0
    captioner = parser.instantiate_classes(args).captioner
    written = 0
    with tqdm(total=len(todo), desc="recaption", unit="video") as bar:
        for start in range(0, len(todo), args.batch_size):
            paths = todo[start : start + args.batch_size]
            clips = []
            for path in paths:
                info = probe_video(path)  # a DataError naming the file if it cannot be decoded
                middle = max(0.0, info.duration / 2 - captioner.frames / (2 * info.fps))
                clips.append(read_clip(path, captioner.frames, captioner.size, middle))  # (3, T, H, W)
            for path, text in zip(paths, captioner.caption(torch.stack(clips))):
                with atomic_path(path.with_suffix(".txt")) as tmp:
                    tmp.write_text(text + "\n")
                written += 1
            bar.update(len(paths))
    print(f"recaption: wrote {written} captions")
    return 0
