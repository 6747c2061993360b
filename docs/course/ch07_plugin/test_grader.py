"""Grader for chapter 7: your backbone through the kit's own conformance check
(`patchworld.testing.check_backbone`), and your module as a plugin merged with the first-party one by
`patchworld.plugins.build_registry` (what `load_plugins` does with installed plugins)."""
from __future__ import annotations

import importlib

import pytest
import torch

from patchworld import ContractError, PatchEmbed3d, grid_positions
from patchworld.plugins import FIRST_PARTY, build_registry
from patchworld.testing import check_backbone


def bound(exercises, dim: int = 32):
    """Your CourseBackbone bound to 3-channel latents (as WorldModel's bind would do with Pixels)."""
    torch.manual_seed(0)
    backbone = exercises.CourseBackbone(dim=dim, depth=2)
    backbone.in_channels = 3
    backbone.patch_embed = PatchEmbed3d(3, dim, backbone.patch_size)
    return backbone.eval()


def test_tiny_forward_keeps_one_feature_per_token(exercises):
    backbone = bound(exercises)
    tokens = torch.randn(2, 12, 32, generator=torch.Generator().manual_seed(0))
    positions = grid_positions(1, 3, 4).expand(2, -1, -1)  # (B, N, 3)
    with torch.no_grad():
        out = backbone(tokens, positions)
        one = backbone(tokens, positions, depth=1)
    assert torch.is_tensor(out) and out.shape == (2, 12, 32), (
        f"forward must return features (B, N, D) = (2, 12, 32), one per token; got "
        f"{tuple(out.shape) if torch.is_tensor(out) else type(out).__name__} (do not pool over tokens)")
    assert not torch.allclose(out, one), "depth=1 gave the same features as all blocks: run backbone.blocks[:depth]"
    with torch.no_grad():
        moved = backbone(tokens, positions.flip(1))
    assert not torch.allclose(out, moved), (
        "moving the tokens to other positions changed nothing: add patchworld.sincos_3d(positions, dim) to the tokens")


def test_tiny_forward_passes_the_kits_check_backbone(exercises):
    try:
        check_backbone(lambda: exercises.CourseBackbone(dim=32, depth=2))
    except ContractError as error:
        pytest.fail(f"patchworld.testing.check_backbone refused your backbone: {error}", pytrace=False)


def test_patchworld_register_components_registers_yours(exercises):
    registry = build_registry({"course": exercises})
    problem = registry.failures.get("course")
    assert problem is None, f"your module is a broken plugin: {problem}"
    assert "CourseBackbone" in registry.names("backbone"), (
        "your plugin registers no backbone named CourseBackbone: patchworld_register_components must return "
        "[CourseBackbone]")
    assert registry.get("backbone", "CourseBackbone") is exercises.CourseBackbone, (
        "the registered CourseBackbone is not the class defined in your module")


def test_patchworld_register_components_beside_the_first_party_plugin(exercises):
    registry = build_registry({FIRST_PARTY: importlib.import_module(FIRST_PARTY), "course": exercises})
    problem = registry.failures.get("course")
    assert problem is None, f"beside {FIRST_PARTY}, your module is a broken plugin: {problem}"
    assert {"ViT", "DiT", "CourseBackbone"} <= set(registry.names("backbone")), (
        "with your plugin loaded, the backbones should be the first-party ones plus CourseBackbone; got "
        f"{registry.names('backbone')}")
