"""Prompt expansion and recaptioning (plugins/captions.py): expanded prompts read like SyntheticWorld's training
captions, `Prompts` applies an expander, `patchworld recaption` writes only the missing sidecar captions with
the right content, and a plugin's expander is picked up by name."""
from __future__ import annotations

import importlib
import re

import pytest
import torch

import patchworld
import patchworld.parsing
from patchworld.recipes import load_world
from patchworld.data.synthetic import DIRECTIONS, SHAPES, SIZES, SPEEDS, COLOUR_NAMES, SyntheticClips
from patchworld.data.video_io import write_video
from patchworld.plugins import build_registry
from patchworld_plugins.captions import ProbeCaptioner, StyleExpander, caption_of
from patchworld_plugins.prompts import Prompts

SHORT_DIRECTION = {"right": "going right", "left": "heading left", "up": "rising", "down": "falling down"}


def clip_items(count: int, frames: int = 8, size=(32, 32), max_objects: int = 1):
    clips = SyntheticClips(count, "test", frames, size, max_objects=max_objects, gravity_prob=0.0, object_scale=2.5)
    return [clips[i] for i in range(count)]


def label_words(item) -> dict[str, str]:
    names = {"size": SIZES, "colour": COLOUR_NAMES, "shape": SHAPES, "direction": DIRECTIONS, "speed": SPEEDS}
    return {key: values[item["labels"][key]] for key, values in names.items()}


def test_a_known_short_prompt_maps_to_the_expected_caption():
    expander = StyleExpander()
    assert expander.expand(["red circle going left"]) == ["a large red circle moves to the left slowly"]
    assert expander.expand(["big blue ball racing upwards, bouncing"]) == [
        "a large blue circle moves upwards quickly, bouncing off the wall"]
    assert expander.expand(["a dog"]) == ["a dog"]  # nothing it knows: unchanged
    small = StyleExpander(size="small", speed="fast", direction="down")  # the defaults take effect
    assert small.expand(["green square"]) == ["a small green square moves downwards quickly"]
    assert StyleExpander(colour="cyan", shape="diamond").expand(["triangle"]) == [
        "a large cyan triangle moves to the right slowly"]
    assert StyleExpander(colours=["teal"]).expand(["teal box"]) == ["a large teal square moves to the right slowly"]
    assert StyleExpander().expand(["teal box"]) == ["a large red square moves to the right slowly"]


def test_expansion_writes_the_training_caption_style():
    """Short prompts made from clips' labels (synonyms, any order) expand to exactly the clips' canonical
    captions, extras (other objects, bounces) included."""
    expander = StyleExpander()
    items = clip_items(24, max_objects=3)
    assert any("other object" in item["captions"][0] for item in items)
    for item in items:
        words = label_words(item)
        caption = item["captions"][0]
        if "colliding" in caption:
            continue
        speed = {"slow": "slowly", "fast": "quick"}[words["speed"]]
        size = {"small": "tiny", "large": "big"}[words["size"]]
        others = re.search(r"with (\d) other", caption)
        prompt = (f"{speed} {size} {words['colour']} {words['shape']} {SHORT_DIRECTION[words['direction']]}"
                  + (f" with {others.group(1)} other objects" if others else "")
                  + (" bouncing" if "bouncing" in caption else ""))
        assert expander.expand([prompt]) == [caption], prompt


def test_prompts_applies_its_expander():
    short = ["red circle going left", "small cyan diamond falling fast"]
    plain = next(iter(Prompts(prompts=short, frames=2, size=(8, 8)).predict_dataloader()))
    assert plain["caption"] == short
    expanded = next(iter(Prompts(prompts=short, frames=2, size=(8, 8), expander=StyleExpander()).predict_dataloader()))
    assert expanded["caption"] == ["a large red circle moves to the left slowly",
                                   "a small cyan diamond moves downwards quickly"]


class Shouting(patchworld.interfaces.PromptExpander):
    """Upper-cases every prompt (a plugin's expander)."""

    def expand(self, prompts: list[str]) -> list[str]:
        return [prompt.upper() for prompt in prompts]


class Broken(patchworld.interfaces.PromptExpander):
    """Returns nothing."""

    def expand(self, prompts: list[str]) -> list[str]:
        return []


def test_a_plugin_registered_expander_is_picked_up_by_name(monkeypatch):
    plugin = type("Plugin", (), {"patchworld_register_components": staticmethod(
        patchworld.hookimpl(lambda: [Shouting]))})
    registry = build_registry({"patchworld_plugins": importlib.import_module("patchworld_plugins"), "loud": plugin})
    assert registry.get("prompt_expander", "Shouting") is Shouting
    monkeypatch.setattr(patchworld.parsing, "load_plugins", lambda: registry)  # as if "loud" were installed
    tiny = ["--model.backbone.init_args.dim", "32", "--model.backbone.init_args.depth", "1",
            "--model.backbone.init_args.heads", "2", "--model.conditioner", "TinyTextEncoder", "--model.conditioner.init_args.dim", "32",
            "--model.conditioner.init_args.depth", "1"]
    _, data = load_world("sora-tiny", None, [*tiny, "--data", "Prompts", "--data.prompts", '["red circle"]',
                                            "--data.frames", "2", "--data.size", "[8, 8]", "--data.expander", "Shouting"])
    assert isinstance(data.expander, Shouting)
    assert next(iter(data.predict_dataloader()))["caption"] == ["RED CIRCLE"]
    with pytest.raises(patchworld.DataError, match=r"prompt expander Broken must return one non-empty caption per "
                                                   r"prompt: got \[\] for \['red circle'\]"):
        Prompts(prompts=["red circle"], expander=Broken()).predict_dataloader()


@pytest.fixture(scope="module")
def captioner():
    return ProbeCaptioner(clips=512)


def test_the_probe_captioner_reads_held_out_clips(captioner):
    accuracy = captioner.accuracy(128)
    assert accuracy["colour"] == accuracy["shape"] == accuracy["size"] == 1.0
    assert accuracy["speed"] >= 0.95 and accuracy["direction"] >= 0.85
    small = ProbeCaptioner(clips=64, steps=20)  # clips and steps take effect: other statistics, other weights
    assert not torch.equal(small.mean, captioner.mean)
    assert not torch.equal(small.heads["shape"].weight, ProbeCaptioner(clips=64, steps=10).heads["shape"].weight)


def test_recaption_writes_only_missing_captions_with_the_right_content(run_cli, tmp_path, captioner, capsys):
    folder = tmp_path / "clips"
    items = clip_items(6)
    for i, item in enumerate(items):
        write_video(folder / ("kept" if i < 2 else "new") / f"clip{i}.mp4", item["video"], fps=8)
    for i in range(2):
        (folder / "kept" / f"clip{i}.txt").write_text("my own caption\n")
    assert run_cli("recaption", folder, "--captioner.clips", "512") == 0
    assert "4 of 6 videos" in capsys.readouterr().out
    for i in range(2):
        assert (folder / "kept" / f"clip{i}.txt").read_text() == "my own caption\n"  # never overwritten
    written = {i: (folder / "new" / f"clip{i}.txt").read_text().strip() for i in range(2, 6)}
    expected = {i: caption_of(**label_words(items[i])) for i in range(2, 6)}
    assert written == expected  # the canonical caption of each clip's labels
    assert written == {i: captioner.caption(items[i]["video"][None])[0] for i in range(2, 6)}
    assert not list(folder.rglob("*.tmp*")) and len(list(folder.rglob("*.txt"))) == 6

    assert run_cli("recaption", folder, "--overwrite", "--captioner.clips", "512") == 0
    assert (folder / "kept" / "clip0.txt").read_text().strip() == caption_of(**label_words(items[0]))
    capsys.readouterr()
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no videos here")
    assert run_cli("recaption", tmp_path / "empty") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "recaption: no video files in" in error and "empty" in error
