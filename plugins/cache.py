"""The latent and text cache: ``patchworld cache`` encodes a recipe's training clips once with its frozen
tokenizer (and their captions with its frozen conditioner), and `LatentCache` trains from the result, so a
step no longer pays for the VAE.

    patchworld cache --config sora-tiny-vae --out cache/sora-tiny-vae --clips 4096
    patchworld fit --config sora-tiny-vae --data LatentCache --data.path cache/sora-tiny-vae

A cache is a folder of shards plus ``manifest.json``. Shard k (``shard-0000k.safetensors``) holds whole
batches of the recipe's training loader, in its order (epoch 0), so every cached batch keeps its bucket (one
(T, H, W) per batch). For batch j of a shard: ``latents.j`` (B, c, t, h, w) float32, ``index.j`` (B,),
``labels.NAME.j`` (B,) and, when the conditioner is frozen (e.g. `MiniLM`), its caption embeddings
``caption_tokens.j`` (B, L, D) and ``caption_mask.j`` (B, L); the captions themselves are in the shard's
metadata (a trainable conditioner such as `TinyTextEncoder` encodes them at every step). The manifest holds
each shard's size and sha256, and fingerprints of the tokenizer (and frozen conditioner) that made it.

Every file is written atomically, the manifest after each shard, so an interrupted run continues from its
last finished shard; `LatentCache` checks every shard's size and checksum when it opens the cache.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import pytorch_lightning as pl
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from patchworld import DataError, PatchworldError
from patchworld.data.sampler import BucketBatchSampler, ResumableDataLoader
from patchworld.data.video_io import atomic_path

FORMAT = "patchworld-latent-cache/1"
MANIFEST = "manifest.json"


def fingerprint(part: torch.nn.Module | None) -> str | None:
    """sha256 of a part's class and state (tensor names, shapes and bytes): the same trained part gives the
    same fingerprint, any other weights another one. None for no part."""
    if part is None:
        return None
    digest = hashlib.sha256(type(part).__qualname__.encode())
    for name, value in sorted(part.state_dict().items()):
        if torch.is_tensor(value):
            digest.update(f"{name}{tuple(value.shape)}{value.dtype}".encode())
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_frozen(part: torch.nn.Module | None) -> bool:
    return part is not None and not any(p.requires_grad for p in part.parameters())


# ---- writing --------------------------------------------------------------------------------------
def build_cache(world, datamodule, out: str | Path, clips: int | None = None, shard_size: int = 256,
                split: str = "train", progress: bool = True) -> Path:
    """Encode the first `clips` clips (None: one epoch) of `datamodule`'s `split` loader (epoch 0) with `world`'s
    frozen tokenizer (and frozen conditioner) into shards of whole batches (`shard_size` clips, rounded up to
    whole batches) under `out`; continues a cache interrupted there. Returns the manifest's path."""
    if not is_frozen(world.tokenizer):
        raise PatchworldError(f"cache: the recipe's tokenizer {type(world.tokenizer).__name__} is trainable, so latents "
                              "cached now would not be the ones it gives later; load a trained one "
                              "(model.tokenizer.init_args.checkpoint) or give --ckpt_path")
    if shard_size < 1:
        raise PatchworldError(f"cache: --shard_size must be at least 1, got {shard_size}")
    make_loader = getattr(datamodule, f"{split}_dataloader", None)
    if split not in ("train", "val", "test") or not callable(make_loader):
        raise PatchworldError(f"cache: --split {split!r}: give train, val or test (a split the datamodule has)")
    datamodule.setup("test" if split == "test" else "fit")  # e.g. VideoFolder scans its folder here
    loader = make_loader()
    batch_size = loader.batch_sampler.batch_size if loader.batch_size is None else loader.batch_size
    total = len(loader) if clips is None else min(len(loader), math.ceil(clips / batch_size))
    clips = min(clips or total * batch_size, len(loader.dataset))
    embeds = is_frozen(world.conditioner)
    settings = {
        "format": FORMAT, "split": split, "batch_size": batch_size, "batches_per_shard": math.ceil(shard_size / batch_size),
        "tokenizer": {"class": type(world.tokenizer).__name__, "fingerprint": fingerprint(world.tokenizer),
                      "latent_channels": world.tokenizer.latent_channels, "compression": list(world.tokenizer.compression)},
        "conditioner": None if world.conditioner is None else {
            "class": type(world.conditioner).__name__, "embeddings": embeds,
            "fingerprint": fingerprint(world.conditioner) if embeds else None},  # a trainable one's weights change
    }
    out = Path(out)
    manifest = _resume(out, settings)
    done = sum(len(shard["batches"]) for shard in manifest["shards"])
    manifest["complete"] = manifest["complete"] and done >= total  # a longer cache asked of a finished one
    if done and hasattr(loader, "load_state_dict"):  # skip the finished batches without loading them
        loader.load_state_dict({"epoch": 0, "batches": done})
        batches = iter(loader)
    else:  # any other loader: skip them by loading them
        batches = itertools.islice(loader, done, None)
    per_shard = settings["batches_per_shard"]
    world.eval()
    pending, written = [], manifest["clips"]
    bar = tqdm(total=total, initial=done, desc="cache", unit="batch", disable=not progress)
    with torch.no_grad():
        for batch in batches:
            if done + len(pending) >= total:
                break
            batch = _first(batch, clips - written)
            pending.append(_encode(world, batch, embeds))
            written += len(batch["caption"])
            bar.update(1)
            if len(pending) == per_shard or done + len(pending) == total:
                manifest["shards"].append(_write_shard(out, len(manifest["shards"]), pending))
                done, pending = done + len(pending), []
                manifest["clips"] = written
                _write_manifest(out, manifest)
    bar.close()
    manifest["complete"] = True
    return _write_manifest(out, manifest)


def _first(batch: dict, count: int) -> dict:
    """The batch cut to its first `count` clips (the cache's last batch)."""
    if count >= len(batch["caption"]):
        return batch
    return {"video": batch["video"][:count], "caption": batch["caption"][:count], "index": batch["index"][:count],
            "labels": {name: value[:count] for name, value in batch.get("labels", {}).items()}}


def _encode(world, batch: dict, embeds: bool) -> dict:
    """One batch as it is stored: latents, index, labels, captions (and caption embeddings)."""
    video = batch["video"]  # (B, 3, T, H, W)
    B = video.shape[0]
    captions = list(batch.get("caption") or [""] * B)
    stored = {"latents": world.tokenizer.encode(video).float().contiguous(),  # (B, c, t, h, w)
              "index": torch.as_tensor(batch.get("index", torch.arange(B))).long(),
              "labels": {name: value.long() for name, value in (batch.get("labels") or {}).items()},
              "caption": captions, "video": list(video.shape[2:])}
    if embeds:
        tokens, mask = world.conditioner(captions)  # (B, L, D), (B, L)
        stored["caption_tokens"], stored["caption_mask"] = tokens.float().contiguous(), mask.contiguous()
    return stored


def _write_shard(out: Path, number: int, batches: list[dict]) -> dict:
    """Write one shard atomically; returns its manifest entry."""
    tensors, captions = {}, []
    for j, batch in enumerate(batches):
        tensors[f"latents.{j}"], tensors[f"index.{j}"] = batch["latents"], batch["index"]
        for name, value in batch["labels"].items():
            tensors[f"labels.{name}.{j}"] = value
        if "caption_tokens" in batch:
            tensors[f"caption_tokens.{j}"], tensors[f"caption_mask.{j}"] = batch["caption_tokens"], batch["caption_mask"]
        captions.append(batch["caption"])
    path = out / f"shard-{number:05d}.safetensors"
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"captions": json.dumps(captions)})
    return {"file": path.name, "bytes": path.stat().st_size, "sha256": file_sha256(path),
            "batches": [{"clips": len(b["caption"]), "video": b["video"], "latents": list(b["latents"].shape[1:])}
                        for b in batches]}


def _resume(out: Path, settings: dict) -> dict:
    """The manifest to continue: the one under `out` (its shards checked) if it was made with these
    settings, else a new one; a cache made otherwise is refused, naming the first difference."""
    path = out / MANIFEST
    if not path.exists():
        return {**settings, "clips": 0, "complete": False, "shards": []}
    manifest = read_manifest(out)
    for key, value in settings.items():
        if manifest.get(key) != value:
            raise PatchworldError(f"cache: {out} holds a cache made with another {key} ({manifest.get(key)} there, "
                                  f"{value} now); give another --out or remove it")
    for shard in manifest["shards"]:
        verify_shard(out, shard)
    return manifest


def _write_manifest(out: Path, manifest: dict) -> Path:
    with atomic_path(out / MANIFEST) as tmp:
        tmp.write_text(json.dumps(manifest, indent=1))
    return out / MANIFEST


# ---- reading ------------------------------------------------------------------------------------------
def read_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise DataError(f"{root} is not a latent cache: it has no {MANIFEST} (make one with patchworld cache)")
    try:
        manifest = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(f"{path} is not a readable cache manifest: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"{path} is not a {FORMAT} manifest")
    return manifest


def verify_shard(root: Path, shard: dict) -> None:
    """A one-line DataError naming the shard if its size or sha256 is not the manifest's."""
    path = Path(root) / shard["file"]
    if not path.is_file():
        raise DataError(f"cache shard {path} is missing")
    size = path.stat().st_size
    if size != shard["bytes"]:
        raise DataError(f"cache shard {path} is truncated or altered: {size} bytes, the manifest says {shard['bytes']}; "
                        "re-run patchworld cache")
    if file_sha256(path) != shard["sha256"]:
        raise DataError(f"cache shard {path} is corrupted or tampered with: its sha256 is not the manifest's; "
                        "re-run patchworld cache")


class CachedBatches(torch.utils.data.Dataset):
    """The batches of a latent cache; item i is the i-th batch of the cache, in the order it was written."""

    def __init__(self, root: Path, manifest: dict, embeddings: bool):
        self.root, self.embeddings = root, embeddings
        self.batches = [(shard["file"], j) for shard in manifest["shards"] for j in range(len(shard["batches"]))]
        self._captions: dict[str, list[list[str]]] = {}

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict:
        name, j = self.batches[i]
        with safe_open(str(self.root / name), framework="pt") as file:
            if name not in self._captions:
                self._captions[name] = json.loads(file.metadata()["captions"])
            keys = file.keys()
            labels = {key.split(".")[1]: file.get_tensor(key) for key in keys
                      if key.startswith("labels.") and key.endswith(f".{j}")}
            batch = {"latents": file.get_tensor(f"latents.{j}"), "index": file.get_tensor(f"index.{j}"),
                     "labels": labels, "caption": self._captions[name][j]}
            if self.embeddings and f"caption_tokens.{j}" in keys:
                batch["caption_tokens"] = file.get_tensor(f"caption_tokens.{j}")
                batch["caption_mask"] = file.get_tensor(f"caption_mask.{j}")
        return batch


def only_item(items: list[dict]) -> dict:
    """The collate function of one cached batch per item."""
    return items[0]


class LatentCache(pl.LightningDataModule):
    """Trains from a latent cache made by ``patchworld cache``: batches of cached latents (and captions, and the
    frozen conditioner's caption embeddings), so the objective skips the tokenizer (`WorldModel.latents`).

    Each item is one cached batch, with the bucket (T, H, W) and clips the recipe's loader gave it; the order of
    the batches is shuffled per epoch by `seed` (or kept as written with ``shuffle: false``: then training
    from the cache sees the batches training from the videos saw, in the same order). Every shard's size and
    sha256 are checked when the cache is opened, and a cache made by another tokenizer than the recipe's is
    refused (caption embeddings made by another conditioner are not used).

    Args:
        path: the cache folder (``--out`` of ``patchworld cache``).
        val_path: another cache (e.g. of the validation clips: ``patchworld cache --split val``) to validate on.
        shuffle: shuffle the order of the cached batches every epoch.
        seed: the order's seed.
    """

    def __init__(self, path: str, val_path: str | None = None, shuffle: bool = True, seed: int = 0):
        super().__init__()
        self.path, self.val_path, self.shuffle, self.seed = Path(path), val_path, shuffle, seed
        self.manifest = self.open(self.path)
        self.datasets: dict[str, CachedBatches] = {}

    @staticmethod
    def open(root: Path) -> dict:
        """The manifest of a finished cache, every shard checked."""
        manifest = read_manifest(root)
        if not manifest.get("complete"):
            raise DataError(f"latent cache {root} is unfinished: run the same patchworld cache command again to "
                            "complete it")
        for shard in manifest["shards"]:
            verify_shard(root, shard)
        return manifest

    def setup(self, stage: str | None = None) -> None:
        world = self.trainer.lightning_module if self.trainer is not None else None
        for split, root in (("train", self.path), ("val", self.val_path)):
            if root is None or split in self.datasets:
                continue
            manifest = self.manifest if split == "train" else self.open(Path(root))
            self.datasets[split] = CachedBatches(Path(root), manifest, self._embeddings_fit(world, manifest, root))

    @staticmethod
    def _embeddings_fit(world, manifest: dict, root) -> bool:
        """Whether the cache's caption embeddings are the recipe's conditioner's; raises if its latents are not
        the recipe's tokenizer's."""
        if world is None:
            return True
        made = manifest["tokenizer"]
        if made["fingerprint"] != fingerprint(world.tokenizer):
            raise DataError(f"latent cache {root} was encoded by another tokenizer ({made['class']} "
                            f"{made['fingerprint'][:12]}) than the recipe's ({type(world.tokenizer).__name__} "
                            f"{fingerprint(world.tokenizer)[:12]}); cache again with this recipe")
        conditioner = manifest.get("conditioner") or {}
        return conditioner.get("fingerprint") == fingerprint(world.conditioner)

    def dataloader(self, split: str) -> ResumableDataLoader:
        dataset = self.datasets[split]
        sampler = BucketBatchSampler(len(dataset), 1, shuffle=self.shuffle and split == "train", seed=self.seed)
        return ResumableDataLoader(dataset, batch_sampler=sampler, collate_fn=only_item)

    def train_dataloader(self) -> ResumableDataLoader:
        return self.dataloader("train")

    def val_dataloader(self) -> ResumableDataLoader | list:
        return self.dataloader("val") if "val" in self.datasets else []


def cache_command(argv: list[str]) -> int:
    """Encode a recipe's training clips once into a latent (and text) cache for `--data LatentCache`."""
    from patchworld.recipes import load_world
    from patchworld.parsing import CommandParser

    parser = CommandParser(prog="patchworld cache", description=cache_command.__doc__)
    parser.add_argument("--config", type=str, required=True, help="the recipe (a path or a shipped recipe's name)")
    parser.add_argument("--ckpt_path", type=str, default=None,
                        help="weights to load (a patchworld .ckpt, or 'last'); the recipe's own tokenizer otherwise")
    parser.add_argument("--out", type=str, required=True, help="the cache folder (continued if interrupted)")
    parser.add_argument("--clips", type=int, default=None, help="clips to cache (default: one epoch of the split)")
    parser.add_argument("--shard_size", type=int, default=256, help="clips per shard (rounded up to whole batches)")
    parser.add_argument("--split", type=str, default="train",
                        help="which split: train, val (for LatentCache.val_path) or test")
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    args = parser.parse_args(argv)
    world, datamodule = load_world(args.config, args.ckpt_path)
    manifest = build_cache(world, datamodule, args.out, args.clips, args.shard_size, args.split, args.progress)
    written = read_manifest(manifest.parent)
    print(f"cached {written['clips']} clips in {len(written['shards'])} shards under {manifest.parent}")
    return 0
