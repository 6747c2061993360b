"""Every setting a user gets wrong in a shipped component is a `PatchworldError` (one line, exit 2), never a
`ValueError`/`RuntimeError` from deep inside torch (which the CLI reports as an internal error, exit 1)."""
from __future__ import annotations

import inspect

import pytest

from patchworld import PatchworldError
from patchworld.plugins import load_plugins
from patchworld_plugins.adapters import LoRA

#: component -> one bad setting each (what a recipe or `--model.backbone.init_args.x` would pass)
BAD_SETTINGS = {
    "VAE": {"width": -1},
    "ViT": {"patch_size": [1, 8]},
    "DiT": {"heads": 0},
    "VideoMAE": {"predictor_depth": 0},
    "VJEPA": {"short_range": [8]},
    "Flow": {"base_tokens": 0},
    "DDPM": {"train_steps": 0},
    "VAEReconstruction": {"stats_momentum": 2.0},
    "VideoWriter": {"fps": 0},
    "EmbeddingWriter": {"strip_frames": -1},
    "TinyTextEncoder": {"dim": -1},
    "MiniLM": {"max_words": 0},
    "SyntheticWorld": {"size": [64]},
    "VideoFolder": {"root": ".", "frames": 0},
    "Prompts": {"prompts": ["a red circle"], "size": [0, 64]},
    "LatentCache": {"path": "no-such-cache"},
    "StyleExpander": {"size": "huge"},
    "ProbeCaptioner": {"clips": 0},
    "LoRA": {"rank": 0},
    "ActionConditioned": {"rollout_steps": -1},
    "ActionWorld": {"frames": 1},
}


def shipped_components() -> dict[str, type]:
    registry = load_plugins()
    found = {name: cls for kind in registry.components for name, (cls, plugin) in registry.components[kind].items()
             if plugin == "patchworld_plugins"}
    return found | {"LoRA": LoRA}


def settable(cls: type) -> bool:
    """Whether the constructor takes any named setting (Pixels takes none)."""
    return any(p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               for p in list(inspect.signature(cls.__init__).parameters.values())[1:])


def test_every_shipped_component_with_settings_is_walked():
    components = shipped_components()
    assert {name for name, cls in components.items() if settable(cls)} == set(BAD_SETTINGS)


@pytest.mark.parametrize("name", sorted(BAD_SETTINGS))
def test_a_bad_setting_is_a_patchworld_error_naming_the_component(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PatchworldError) as raised:
        shipped_components()[name](**BAD_SETTINGS[name])
    setting = next(iter(BAD_SETTINGS[name]))  # the component (or its setting) is named, not just the value
    assert name in str(raised.value) or setting in str(raised.value) or "cache" in str(raised.value)


def test_a_bad_backbone_setting_exits_2_in_one_line(run_cli, capsys):
    assert run_cli("fit", "--config", "videomae-tiny", "--model.backbone.init_args.depth", "-1") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "patchworld: error: ViT.depth must be >= 0, got -1"
