"""What a study re-run on the same output can reuse: each piece of work (a trained model, a model's features,
its physics surprise, the ceilings) is saved with a *stamp*, a small JSON file written after the work itself
that records the fingerprint of the inputs that produced it. A later run reuses the work only when the stamp
is there and its fingerprint matches its own inputs; otherwise it clears the stamp and does the work again.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..data.video_io import atomic_path


def fingerprint(inputs) -> str:
    """A short hash of JSON-able `inputs` (keys sorted, so the order of a dict does not matter)."""
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def read_stamp(path: Path, inputs, fresh: bool = False) -> dict | None:
    """The record stamped at `path` for these same `inputs`, or None (no stamp, other inputs, unreadable, or
    `fresh`: the user asked for everything to be done again)."""
    if fresh:
        return None
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("fingerprint") == fingerprint(inputs) else None


def write_stamp(path: Path, inputs, **record) -> None:
    """Stamp the work just saved beside `path` as produced by `inputs` (kept readable), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"fingerprint": fingerprint(inputs), "inputs": inputs, **record}, default=str))


def file_text(path: str) -> str | None:
    """A recipe file's text (its edits change a fingerprint), or None for a name that is not a readable file."""
    try:
        return Path(path).read_text()
    except OSError:
        return None
