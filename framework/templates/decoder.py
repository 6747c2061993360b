"""`MyDecoder`: writes each clip's mean-pooled features as a small JSON file, the kind of output a search
index or a notebook reads."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import patchworld
from patchworld.data.video_io import atomic_path


class MyDecoder(patchworld.Decoder):
    """Writes <index>.json per clip: the mean over tokens of the predicted features.

    Args:
        digits: decimals kept per feature value.
    """

    def __init__(self, digits: int = 4):
        super().__init__()
        self.digits = digits

    def write(self, outputs: dict[str, Any], batch: dict, directory: Path, batch_index: int) -> list[Path]:
        pooled = outputs["tokens"].float().mean(1).cpu()  # (B, N, D) -> (B, D)
        names = [f"{int(i):06d}" for i in batch["index"]] if "index" in batch else [
            f"{batch_index:04d}_{k:02d}" for k in range(len(pooled))]  # two batches never share a name
        written = []
        for name, features in zip(names, pooled):
            path = Path(directory) / f"{name}.json"
            with atomic_path(path) as tmp:  # a crash never leaves half a file
                Path(tmp).write_text(json.dumps([round(v, self.digits) for v in features.tolist()]))
            written.append(path)
        return written
