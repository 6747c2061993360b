"""`LoRA`: fine-tune a trained backbone through peft's low-rank adapters, everything else frozen.

Each targeted ``nn.Linear`` (weight W, out x in) becomes W x + (alpha / rank) B A x with A (rank x in) and
B (out x rank) new and trainable; B starts at zero, so the adapted model starts exactly as the base. The
default targets are the DiT's attention and MLP layers of every block: self- and cross-attention ``q``,
``kv``, ``proj`` and the MLP's ``fc1``, ``fc2`` (not adaLN, the timestep and caption embeddings, the patch
embedding or the output head).

    patchworld fit --config sora-tiny --data VideoFolder --data.root clips/ \\
        --model.adapter LoRA --model.adapter.rank 8 --model.adapter.base runs/sora-tiny/.../last.ckpt
    patchworld predict --config sora-tiny --model.adapter LoRA --model.adapter.rank 8 \\
        --model.adapter.base runs/sora-tiny/.../last.ckpt --model.adapter.weights <run>/adapter.safetensors \\
        --data Prompts --data.prompts '["..."]'

The run's checkpoints hold the whole model (to resume it with ``--ckpt_path last``); its adapter weights
alone are written to ``<run>/adapter.safetensors`` with every checkpoint (atomically), so that file always
matches the newest checkpoint.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model, set_peft_model_state_dict
from pytorch_lightning import Callback
from pytorch_lightning.utilities import rank_zero_info
from safetensors.torch import save_file
from torch import nn

from patchworld import ComponentError, PatchworldError
from patchworld.checkpoints import find_last, read_part
from patchworld.recipes import load_weights
from patchworld.data.video_io import atomic_path
from patchworld.interfaces import Adapter

DEFAULT_TARGETS = ("q", "kv", "proj", "fc1", "fc2")
ADAPTER_FILE = "adapter.safetensors"


def linear_layers(module: nn.Module) -> list[str]:
    """The names of `module`'s ``nn.Linear`` layers, in module order."""
    return [name for name, layer in module.named_modules() if isinstance(layer, nn.Linear)]


def layer_patterns(names: list[str]) -> str:
    """Linear layer names with their block numbers folded (``blocks.*.mlp.fc1``), for error messages."""
    return ", ".join(dict.fromkeys(re.sub(r"\.\d+(?=\.)", ".*", name) for name in names))


class LoRA(Adapter):
    """Low-rank adapters (peft LoRA) on the backbone's linear layers; every other weight frozen.

    Args:
        rank: the rank r of each update (alpha / r) B A: it adds r x (in + out) weights per adapted layer.
        alpha: the update's scale is alpha / rank (default: rank, a scale of 1).
        targets: the backbone's linear layers to adapt, each a layer name or the end of one after a dot
            (``q`` adapts every ``...q``; ``cross_attn.q`` only cross-attention queries); default: attention
            q, kv, proj and MLP fc1, fc2.
        base: the trained checkpoint to fine-tune (a patchworld .ckpt, or a run directory: its newest
            last.ckpt), loaded before the adapters are added; None keeps the model as built (as when a LoRA
            run is resumed with --ckpt_path, whose checkpoints hold base and adapters).
        weights: adapter weights to load on top of the base: the adapter.safetensors of a LoRA run.
    """

    def __init__(self, rank: int = 8, alpha: float | None = None, targets: list[str] | None = None,
                 base: str | None = None, weights: str | None = None):
        if rank < 1:
            raise ComponentError(f"LoRA: rank must be at least 1, got {rank}")
        self.rank, self.alpha = rank, float(alpha if alpha is not None else rank)
        self.targets = list(targets or DEFAULT_TARGETS)
        self.base, self.weights = base, weights
        self.layers: list[str] = []  # the adapted layers' names inside the backbone, once bound

    def bind(self, world) -> None:
        if world.backbone is None:
            raise ComponentError("LoRA adapts the backbone's linear layers, but this model has no backbone")
        if self.base is not None:
            self.load_base(world, self.base)
        names = linear_layers(world.backbone)
        self.layers = [name for name in names if any(name == t or name.endswith(f".{t}") for t in self.targets)]
        if not self.layers:
            raise ComponentError(f"LoRA targets {self.targets} match no linear layer of backbone "
                                 f"{type(world.backbone).__name__}; its linear layers: {layer_patterns(names)}")
        config = LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=self.layers, lora_dropout=0.0)
        inject_adapter_in_model(config, world.backbone)
        for name, parameter in world.named_parameters():
            parameter.requires_grad_(".lora_" in name)
        if self.weights is not None:
            self.load(world, self.weights)

    @staticmethod
    def load_base(world, base: str) -> None:
        """Load the base checkpoint's weights (and the clip length it trained on) into `world`."""
        load_weights(world, find_last(base) if Path(base).is_dir() else Path(base), what="LoRA base checkpoint")

    def describe(self) -> dict:
        """What the saved file records, so it is loaded only into the adapter it was trained as."""
        return {"adapter": "LoRA", "rank": self.rank, "alpha": self.alpha, "layers": self.layers}

    def tensors(self, world) -> dict[str, torch.Tensor]:
        """The adapter's weights only: {backbone layer name + '.lora_A/B.weight': tensor}."""
        return {key: value.detach().cpu().contiguous() for key, value in get_peft_model_state_dict(world.backbone).items()}

    def save(self, world, path: str | Path) -> Path:
        """Write the adapter weights to a safetensors file at `path`, atomically."""
        with atomic_path(path) as tmp:
            save_file(self.tensors(world), str(tmp), metadata={"extra_state": json.dumps(self.describe())})
        return Path(path)

    def load(self, world, path: str | Path) -> None:
        """Load an adapter.safetensors on top of the base; a file that is not one for this adapter is a
        one-line error naming it."""
        path = Path(path)
        if path.suffix != ".safetensors":
            raise PatchworldError(f"LoRA weights {str(path)!r} are not a .safetensors file: give the "
                                  f"{ADAPTER_FILE} a LoRA run writes")
        tensors, saved = read_part(path)
        if not isinstance(saved, dict) or saved.get("adapter") != "LoRA":
            raise PatchworldError(f"LoRA weights {str(path)!r} are not LoRA adapter weights (no LoRA description "
                                  f"in the file): give the {ADAPTER_FILE} a LoRA run writes")
        ours = self.describe()
        for key in ("rank", "alpha", "layers"):
            if saved.get(key) != ours[key]:
                raise PatchworldError(f"LoRA weights {str(path)!r} were trained with {key} {saved.get(key)}, this "
                                      f"adapter has {ours[key]}: give the same --model.adapter options as that run")
        expected = self.tensors(world)
        for key, value in expected.items():
            if key not in tensors or tensors[key].shape != value.shape:
                found = "missing" if key not in tensors else f"of shape {tuple(tensors[key].shape)}"
                raise PatchworldError(f"LoRA weights {str(path)!r} do not fit this model: {key} is {found}, "
                                      f"expected {tuple(value.shape)}")
        set_peft_model_state_dict(world.backbone, tensors)

    def callbacks(self) -> list[Callback]:
        return [AdapterWriter(self)]


class AdapterWriter(Callback):
    """Writes the adapter weights to <run dir>/adapter.safetensors whenever a checkpoint is saved."""

    def __init__(self, adapter: LoRA):
        self.adapter, self.path = adapter, None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit":  # log_dir must be read on every process
            self.path = Path(trainer.log_dir or trainer.default_root_dir) / ADAPTER_FILE

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if self.path is not None and trainer.is_global_zero:
            self.adapter.save(pl_module, self.path)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.path is not None and self.path.is_file():
            rank_zero_info(f"LoRA adapter weights: {self.path} ({self.path.stat().st_size / 1e6:.2f} MB)")
