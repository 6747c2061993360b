"""``patchworld export``: one part's weights and buffers from a checkpoint to a ``.safetensors`` file.

    patchworld export runs/vae-tiny       # the tokenizer of the run's newest last.ckpt
    patchworld export last.ckpt --part backbone --output vit.safetensors

Keys lose their ``<part>.`` prefix (``tokenizer.encoder.conv_in.weight`` -> ``encoder.conv_in.weight``).
A part's stored configuration (its ``_extra_state``, e.g. the VAE's architecture) goes into the file's
metadata as JSON, so the file alone rebuilds the part (``VAE(checkpoint="vae.safetensors")``).
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import save_file

from patchworld import PatchworldError
from patchworld.checkpoints import find_last, read_part
from patchworld.parsing import CommandParser
from patchworld.data.video_io import atomic_path


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
    parser = CommandParser(prog="patchworld export", description=export_command.__doc__)
    parser.add_argument("checkpoint", type=str, help="a patchworld .ckpt (from fit), or a run directory (its newest last.ckpt)")
    parser.add_argument("--part", type=str, default="tokenizer",
                        help="which part: tokenizer, backbone, objective, conditioner or decoder")
    parser.add_argument("--output", type=str, default=None,
                        help="the .safetensors file to write (default: <checkpoint stem>.<part>.safetensors "
                             "next to the checkpoint)")
    args = parser.parse_args(argv)
    source = find_last(args.checkpoint) if Path(args.checkpoint).is_dir() else Path(args.checkpoint)
    output = Path(args.output) if args.output else source.with_suffix(f".{args.part}.safetensors")
    if output.suffix != ".safetensors":
        raise PatchworldError(f"--output {str(output)!r} must end in .safetensors")
    written = export_part(source, output, args.part)
    print(f"wrote {args.part} weights to {written}")
    return 0
