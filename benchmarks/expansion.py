"""Prompt adherence with short prompts, with and without `StyleExpander`, on a trained model. Prints a table
(docs/data.md, "Recaptions and prompt expansion").

    python benchmarks/expansion.py --config sora-tiny-sizes --ckpt_path runs/sora-tiny-sizes/.../last.ckpt \\
        --overrides '["--model.conditioner", "MiniLM"]' [--samples 24] [--judge judge.pt]

For each of --samples clips of SyntheticWorld's test split (at 32x32) the short prompt is
"{colour} {shape} going {direction}" (the issue's example style: no size, no speed, no article); the model
generates from it as written, from its expansion, and from the clip's own full caption (what `patchworld
adherence` measures), with the same seeds; `patchworld adherence`'s judge reads shape, colour and direction.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from patchworld.checkpoints import load_checkpoint
from patchworld.recipes import load_world
from patchworld.data.synthetic import COLOUR_NAMES, DIRECTIONS, SHAPES
from patchworld.data.video_io import atomic_path
from patchworld_plugins.adherence import ATTRIBUTES, AttributeJudge, clips, judge_accuracy, train_judge
from patchworld_plugins.captions import StyleExpander


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="sora-tiny-sizes")
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--overrides", default="[]", help="JSON list of the fit arguments the model was trained with")
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--judge", default=None, help="load the adherence judge from here (trained and saved if absent)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    world, data = load_world(args.config, args.ckpt_path, [*json.loads(args.overrides), "--data.init_args.size",
                                                           "[32, 32]"])
    world.eval()
    template = data.splits["train"]
    if args.judge and Path(args.judge).is_file():
        judge = AttributeJudge()
        judge.load_state_dict(load_checkpoint(args.judge, "--judge", lightning=False))
        judge.eval()
    else:
        judge = train_judge(template, 300)
        if args.judge:
            with atomic_path(args.judge) as tmp:
                torch.save(judge.state_dict(), tmp)
    test = clips("test", args.samples, template)
    labels = test["labels"]
    short = [f"{COLOUR_NAMES[c]} {SHAPES[s]} going {DIRECTIONS[d]}"
             for c, s, d in zip(labels["colour"].tolist(), labels["shape"].tolist(), labels["direction"].tolist())]
    prompts = {"short prompt, as written": short, "short prompt, expanded (StyleExpander)": StyleExpander().expand(short),
               "the clip's full caption": test["caption"]}
    print(f"e.g. {short[0]!r} -> {prompts['short prompt, expanded (StyleExpander)'][0]!r}")
    real = judge_accuracy(judge, test["video"], labels)
    print("| prompts | " + " | ".join(ATTRIBUTES) + " | wall s |")
    print("|---|" + "---|" * (len(ATTRIBUTES) + 1))
    for name, captions in prompts.items():
        start, generated = time.perf_counter(), []
        for first in range(0, args.samples, 8):
            last = min(first + 8, args.samples)
            with torch.no_grad():
                generated.append(world.objective.generate(world, captions[first:last], test["video"][first:last],
                                                          seeds=list(range(first, last)), progress=False))
        rates = judge_accuracy(judge, torch.cat(generated), labels)
        print(f"| {name} | " + " | ".join(f"{rates[a]:.1%}" for a in ATTRIBUTES)
              + f" | {time.perf_counter() - start:.0f} |")
    print("| judge on the real clips | " + " | ".join(f"{real[a]:.1%}" for a in ATTRIBUTES) + " | |")


if __name__ == "__main__":
    main()
