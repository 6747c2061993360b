"""The mistakes a plugin author makes, each caught by name. The registry of loaded, healthy plugins is the only
thing that turns a recipe's class name into a class, and the kit refuses what would silently mislead."""
from __future__ import annotations

import gc
import importlib.metadata
import sys
import types
import warnings

import pytest
import torch
from pytorch_lightning import LightningDataModule
from torch.utils.data import DataLoader

import patchworld
from patchworld import ContractError
from patchworld.plugins import load_plugins
from patchworld.recipes import load_world
from patchworld.testing import check_backbone, check_datamodule
from patchworld_plugins import ViT


@pytest.fixture
def installed(monkeypatch):
    """`install(name=module, ...)`: these in-memory plugin modules are installed under those entry-point names
    beside the first-party plugin; returns the registry `load_plugins` then builds (and every command uses)."""
    real = [ep for ep in importlib.metadata.entry_points(group="patchworld") if ep.name == "patchworld_plugins"]
    made: list[types.ModuleType] = []

    def install(*plugins: tuple[str, types.ModuleType]):
        points = []
        for name, module in plugins:
            monkeypatch.setitem(sys.modules, module.__name__, module)
            points.append(importlib.metadata.EntryPoint(name, module.__name__, "patchworld"))
            made.append(module)
        monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [*real, *points])
        load_plugins.cache_clear()
        return load_plugins()

    yield install
    load_plugins.cache_clear()
    made.clear()
    gc.collect()  # the plugins' classes leave the interfaces' __subclasses__ with their modules


def plugin_module(name: str, classes: dict[str, type], hook: str = "patchworld_register_components",
                  decorated: bool = True) -> types.ModuleType:
    """A plugin package's module `name` defining `classes` at its top level (so each is importable as
    ``name.Class``, as a real package's are) and registering them through `hook`."""
    module = types.ModuleType(name)
    made = {cls_name: type(cls_name, (base,), {"__module__": name, "__qualname__": cls_name, "__doc__": "A part."})
            for cls_name, base in classes.items()}
    register = lambda: list(made.values())  # noqa: E731
    vars(module).update(made, **{hook: patchworld.hookimpl(register) if decorated else register})
    return module


def test_a_second_vit_leaves_every_shipped_vit_recipe_working_and_names_both_plugins(installed):
    with pytest.warns(UserWarning, match=r"plugin 'vitclash' skipped: backbone 'ViT' \(clashing_vit\) is already "
                                         r"registered by plugin 'patchworld_plugins'"):
        installed(("vitclash", plugin_module("clashing_vit", {"ViT": patchworld.Backbone})))
    world, _ = load_world("videomae-tiny")
    assert type(world.backbone) is ViT


def test_a_skipped_plugins_component_cannot_be_named(installed, run_cli, capsys):
    with pytest.warns(UserWarning, match="plugin 'typo' skipped: .*unknown hook 'patchworld_register_component'"):
        installed(("typo", plugin_module("typo_plugin", {"TypoBackbone": ViT}, hook="patchworld_register_component")))
    assert run_cli("fit", "--config", "videomae-tiny", "--model.backbone", "TypoBackbone") == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("patchworld: error: unknown backbone 'TypoBackbone' at model.backbone; available "
                            "backbones: DiT, ViT") and "skipped plugins: 'typo'" in error


def test_a_component_whose_hook_lacks_hookimpl_cannot_be_named(installed, run_cli, capsys):
    with pytest.warns(UserWarning, match="function patchworld_register_components is not decorated"):
        installed(("silent", plugin_module("silent_plugin", {"SilentWriter": patchworld.Decoder}, decorated=False)))
    assert run_cli("fit", "--config", "videomae-tiny", "--model.decoder", "SilentWriter") == 2
    assert "unknown decoder 'SilentWriter' at model.decoder" in capsys.readouterr().err


def test_two_plugins_with_one_entry_point_name_are_both_refused_by_name(installed, run_cli, capsys):
    first = plugin_module("convmix_installed", {"ConvMix": patchworld.Backbone})
    second = plugin_module("convmix_scaffolded", {"ConvMixScaffolded": patchworld.Backbone})
    with pytest.warns(UserWarning, match="plugin 'convmix' skipped: two installed plugins have the entry-point name "
                                         "'convmix' \\(convmix_installed, convmix_scaffolded\\)"):
        registry = installed(("convmix", first), ("convmix", second))
    assert not {"ConvMix", "ConvMixScaffolded"} & set(registry.names("backbone"))
    assert run_cli("plugins") == 0
    assert "broken plugin 'convmix' (none of it is used): two installed plugins" in capsys.readouterr().out


class DepthSwallower(ViT):
    """A ViT whose forward takes ``depth`` into ``**conditions`` and always runs every block."""

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, **conditions) -> torch.Tensor:
        return super().forward(tokens, positions)


def test_the_kit_catches_a_backbone_that_swallows_depth():
    with pytest.raises(ContractError, match=r"depth=1 and depth=2 give the same features, so depth is ignored"):
        check_backbone(lambda: DepthSwallower(dim=48, depth=2, heads=2, patch_size=(1, 4, 4)))


class Untyped(ViT):
    """A ViT whose own settings carry no types."""

    def __init__(self, dim=48, depth=2):
        super().__init__(dim=dim, depth=depth, heads=2, patch_size=(1, 4, 4))


def test_the_kit_refuses_untyped_constructor_arguments():
    with pytest.raises(ContractError, match=r"every constructor parameter is type-annotated.*\['dim', 'depth'\] are not"):
        check_backbone(Untyped)


class Clips(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 32

    def __getitem__(self, i: int) -> dict:
        return {"video": torch.full((3, 2, 8, 8), i / 32 - 0.5), "index": torch.tensor(i)}


class UnseededShuffle(LightningDataModule):
    """Its validation clips come in order; its training clips are shuffled with an unseeded generator."""

    def __init__(self, batch_size: int = 4):
        super().__init__()
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(Clips(), batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(Clips(), batch_size=self.batch_size)


def test_the_kit_names_the_split_that_is_not_repeatable_and_the_unseeded_shuffle():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's advice about DataLoader workers
        with pytest.raises(ContractError, match=r"a fresh copy yields the same first train batch.*shuffles with an "
                                                r"unseeded generator: pass DataLoader\(\.\.\., generator="):
            check_datamodule(UnseededShuffle)
