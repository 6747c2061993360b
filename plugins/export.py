"""``patchworld export``: one part's weights and buffers from a checkpoint to a ``.safetensors`` file.

    patchworld export runs/vae-tiny/lightning_logs/version_0/checkpoints/last.ckpt            # the tokenizer
    patchworld export last.ckpt --part backbone --output vit.safetensors

Keys lose their ``<part>.`` prefix (``tokenizer.encoder.conv_in.weight`` -> ``encoder.conv_in.weight``).
A part's stored configuration (its ``_extra_state``, e.g. the VAE's architecture) goes into the file's
metadata as JSON, so the file alone rebuilds the part (``VAE(checkpoint="vae.safetensors")``).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from jsonargparse import ArgumentParser
from safetensors import safe_open
from safetensors.torch import save_file

from patchworld import PatchworldError
from patchworld.data.video_io import atomic_path


def read_part(path: str | Path, part: str = "tokenizer") -> tuple[dict[str, torch.Tensor], dict | None]:
    """Weights+buffers of one part of a WorldModel, from a patchworld ``.ckpt`` (keys ``<part>.*``) or an
    exported ``.safetensors``, and the part's stored configuration (its ``_extra_state``) if it has one."""
    path = Path(path)
    if not path.is_file():
        raise PatchworldError(f"checkpoint {str(path)!r} does not exist (expected a patchworld .ckpt or an "
                              f"exported .safetensors)")
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as file:
                tensors = {key: file.get_tensor(key) for key in file.keys()}
                metadata = file.metadata() or {}
        except Exception as error:
            raise PatchworldError(f"{str(path)!r} is not a readable safetensors file: {error}") from None
        return tensors, json.loads(metadata["extra_state"]) if "extra_state" in metadata else None
    try:  # Lightning checkpoints hold optimizer factories and hyper-parameters, not only tensors
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise PatchworldError(f"checkpoint {str(path)!r} could not be read: {error}") from None
    state = checkpoint.get("state_dict", {}) if isinstance(checkpoint, dict) else {}
    prefix = f"{part}."
    weights = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not weights:
        parts = sorted({key.split(".", 1)[0] for key in state})
        raise PatchworldError(f"checkpoint {str(path)!r} has no {part!r} weights; the parts it holds: "
                              f"{', '.join(parts) or 'none'}")
    return weights, weights.pop("_extra_state", None)


def export_part(checkpoint: str | Path, output: str | Path, part: str = "tokenizer") -> Path:
    """Write `part`'s tensors from `checkpoint` to `output` (.safetensors), atomically; returns `output`."""
    weights, extra = read_part(checkpoint, part)
    tensors = {key: value.detach().contiguous().clone() for key, value in weights.items()}  # no shared storage
    metadata = {"format": "pt", "part": part, "source": Path(checkpoint).name}
    if extra is not None:
        try:
            metadata["extra_state"] = json.dumps(extra)
        except TypeError as error:
            raise PatchworldError(f"the {part}'s stored configuration cannot be written as JSON: {error}") from None
    with atomic_path(output) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(output)


def export_command(argv: list[str]) -> int:
    """Export one part (default: the tokenizer) of a checkpoint to .safetensors."""
    parser = ArgumentParser(prog="patchworld export", description=export_command.__doc__)
    parser.add_argument("checkpoint", type=str, help="a patchworld .ckpt (from fit)")
    parser.add_argument("--part", type=str, default="tokenizer",
                        help="which part: tokenizer, backbone, objective, conditioner or decoder")
    parser.add_argument("--output", type=str, default=None,
                        help="the .safetensors file to write (default: <checkpoint stem>.<part>.safetensors "
                             "next to the checkpoint)")
    args = parser.parse_args(argv)
    output = Path(args.output) if args.output else Path(args.checkpoint).with_suffix(f".{args.part}.safetensors")
    if output.suffix != ".safetensors":
        raise PatchworldError(f"--output {str(output)!r} must end in .safetensors")
    written = export_part(args.checkpoint, output, args.part)
    print(f"wrote {args.part} weights to {written}")
    return 0
