"""The parts' contracts (`patchworld.interfaces`) checked at run time: each broken rule is one line naming
the component, the rule, what it did and the fix (a `ContractError`).

`WorldModel` runs `check_parts` on each stage's first batch (the batch, then the tokenizer, the backbone
and the conditioner once each on two of its clips, in eval mode and without gradients, so nothing is
drawn from the training randomness) and `check_step_output` on every objective step (type and shape
checks only, no host sync); `DecoderWriter` checks what `Decoder.write` returns, and
`GenerativeObjective.bind` calls `check_generative_backbone`. `patchworld.testing` builds its conformance
checks on the same functions.
"""
from __future__ import annotations

import inspect
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .errors import ContractError, DataError
from .interfaces import Backbone, Conditioner, Decoder, GenerativeBackbone, Objective, Tokenizer
from .patches import grid_positions
from .plugins import kind_of

GENERATIVE_FIX = "use DiT, or implement patchworld.GenerativeBackbone (docs/plugins.md, 'The contracts')"

#: dtype family -> test
DTYPES: dict[str, Callable[[torch.Tensor], bool]] = {
    "floating": lambda x: x.is_floating_point(),
    "integer": lambda x: not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool),
    "bool": lambda x: x.dtype == torch.bool,
}


def name_of(component: Any) -> str:
    """'backbone FlatBackbone': the kind and class name of a part (or of a part's class; a string names itself)."""
    if isinstance(component, str):
        return component
    cls = component if isinstance(component, type) else type(component)
    kind = kind_of(cls) or "component"
    return f"{kind} {cls.__name__}"


def broken(component: Any, rule: str, detail: str, fix: str) -> ContractError:
    """The one-line error for a broken rule: who, which rule, what happened, what to do."""
    return ContractError(f"{name_of(component)} breaks the rule '{rule}': {detail}; {fix}")


def described(value: Any) -> str:
    """A value as an error message shows it: a tensor by dtype and shape, a sequence by length."""
    if torch.is_tensor(value):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    if isinstance(value, (list, tuple, dict)):
        return f"a {type(value).__name__} of {len(value)}"
    return "None" if value is None else f"a {type(value).__name__}"


def expect_tensor(component: Any, rule: str, value: Any, shape: tuple, dtype: str, fix: str) -> None:
    """Raise unless `value` is a tensor of `shape` (a str entry matches any size) with a `dtype` dtype."""
    if not torch.is_tensor(value):
        raise broken(component, rule, f"got {described(value)}", fix)
    fits = value.dim() == len(shape) and all(isinstance(s, str) or s == n for s, n in zip(shape, value.shape))
    if not fits:
        expected = ", ".join(str(s) for s in shape)
        raise broken(component, rule, f"got shape {tuple(value.shape)}, expected ({expected})", fix)
    if not DTYPES[dtype](value):
        raise broken(component, rule, f"got dtype {value.dtype}, expected a {dtype} dtype", fix)


def refuses(function: Callable, *args: Any, **kwargs: Any) -> str | None:
    """Why `function` cannot be called with these arguments (its signature refuses them), else None."""
    try:
        inspect.signature(function).bind(*args, **kwargs)
    except TypeError as error:
        return f"{function.__name__}() {error}"
    return None


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """Eval mode for the block, then every submodule's own mode back (a frozen part stays frozen)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


# ---- the batch ----------------------------------------------------------------------------------
def check_batch(batch: Any, source: Any = "the datamodule") -> None:
    """The batch contract: "video" (B, 3, T, H, W) floating in [-1, 1] (or, from a latent cache, "latents"
    (B, c, t, h, w) floating instead); optional "caption" (B str), "labels" ({name: (B,) integer}) and "index"
    ((B,) distinct integers). `source` names who made it."""
    if not isinstance(batch, dict) or not ("video" in batch or "latents" in batch):
        raise broken(source, "a batch is a dict with 'video' (or cached 'latents')", f"got {described(batch)}" + (
            f" with keys {sorted(batch)}" if isinstance(batch, dict) else ""), "collate clips into "
            "{'video': (B, 3, T, H, W), ...} (the datamodule's collate_fn)")
    if "video" in batch:
        video = batch["video"]
        rule = "batch['video'] is (B, 3, T, H, W) floating in [-1, 1]"
        expect_tensor(source, rule, video, ("B", 3, "T", "H", "W"), "floating",
                      "stack float clips (3, T, H, W), channels first (an image is a 1-frame video)")
        low, high = (float(v) for v in video.detach().aminmax())
        if not -1.001 <= low <= high <= 1.001:  # NaN fails too
            raise broken(source, rule, f"its values span [{low:.4g}, {high:.4g}]", "scale 8-bit pixels with x / 127.5 - 1")
    else:
        expect_tensor(source, "batch['latents'] is (B, c, t, h, w) floating", batch["latents"], ("B", "c", "t", "h", "w"),
                      "floating", "stack the clips' cached latents (c, t, h, w)")
    B = (batch["video"] if "video" in batch else batch["latents"]).shape[0]
    caption = batch.get("caption")
    if caption is not None and not (isinstance(caption, (list, tuple)) and len(caption) == B
                                    and all(isinstance(c, str) for c in caption)):
        raise broken(source, "batch['caption'] is a list of B str", f"got {described(caption)} for B={B}",
                     "collate captions as a list of str, one per clip")
    labels = batch.get("labels")
    if labels is not None:
        if not isinstance(labels, dict):
            raise broken(source, "batch['labels'] is a dict of (B,) integer tensors", f"got {described(labels)}",
                         "collate labels as {name: torch.tensor([...])}")
        for name, value in labels.items():
            expect_tensor(source, "batch['labels'] is a dict of (B,) integer tensors", value, (B,), "integer",
                          f"collate label {name!r} as one integer class per clip")
    index = batch.get("index")
    if index is not None:
        rule = "batch['index'] holds the (B,) distinct dataset indices of its clips"
        expect_tensor(source, rule, index, (B,), "integer", "collate each item's dataset index: torch.tensor([...])")
        if len(set(index.tolist())) < B:
            raise broken(source, rule, f"got {index.tolist()}", "give every clip of a batch its own index "
                         "(per-clip random draws are keyed on it, so equal indices draw the same masks and noise)")


# ---- tokenizer, backbone, conditioner: run once, every output checked -----------------------------
def run_tokenizer(tokenizer: Tokenizer, video: torch.Tensor) -> torch.Tensor:
    """Encode video (B, 3, T, H, W) and decode the latents, checking both against the tokenizer contract;
    returns the latents (B, c, t, h, w)."""
    c, compression, causal = tokenizer.latent_channels, tokenizer.compression, tokenizer.causal
    whole = lambda n: isinstance(n, int) and n >= 1  # noqa: E731
    if not (whole(c) and isinstance(compression, (tuple, list)) and len(compression) == 3
            and all(whole(f) for f in compression) and isinstance(causal, bool)):
        raise broken(tokenizer, "latent_channels is an int >= 1, compression three ints >= 1, causal a bool",
                     f"got latent_channels={c!r}, compression={compression!r}, causal={causal!r}",
                     "set them as class attributes or in __init__")
    B, _, T, H, W = video.shape
    latents = tokenizer.encode(video)
    expect_tensor(tokenizer, "encode(video (B, 3, T, H, W)) returns latents (B, latent_channels, "
                  "*latent_grid(T, H, W))", latents, (B, c, *tokenizer.latent_grid(T, H, W)), "floating",
                  "compress by exactly `compression` into `latent_channels` channels, or correct those attributes")
    _, t, h, w = latents.shape[1:]
    expect_tensor(tokenizer, "decode(latents (B, c, t, h, w)) returns video (B, 3, pixel_frames(t), h*ch, w*cw)",
                  tokenizer.decode(latents), (B, 3, tokenizer.pixel_frames(t), h * compression[1], w * compression[2]),
                  "floating", "decode to the size of the videos that encode to these latents")
    return latents


def run_backbone(backbone: Backbone, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Embed latents (B, c, t, h, w) and run forward on the tokens, checking both against the backbone
    contract (and `GenerativeBackbone`'s head, if it has one); returns tokens, positions and features."""
    why = refuses(backbone.forward, "tokens", "positions", depth=None)
    if why:
        raise broken(backbone, "forward(tokens, positions, depth=None) works without conditions", why,
                     "give forward a `depth: int | None = None` keyword (the features after that many blocks) "
                     "and a default for every condition")
    B = latents.shape[0]
    grid = tuple(n // p for n, p in zip(latents.shape[2:], backbone.patch_size))
    tokens, positions = backbone.embed(latents)
    expect_tensor(backbone, "embed(latents) returns tokens (B, N, dim), N = the size of the token grid", tokens,
                  (B, math.prod(grid), backbone.dim), "floating", "embed one `dim`-wide token per patch_size cell "
                  "of the latents (Backbone.embed does)")
    rule = "embed(latents) returns the token grid's positions (B, N, 3), integer, time-major"
    expect_tensor(backbone, rule, positions, (B, math.prod(grid), 3), "integer",
                  "return the integer (t, h, w) of every token (patchworld.grid_positions)")
    if not torch.equal(positions.long(), grid_positions(*grid, device=positions.device).expand(B, -1, -1)):
        raise broken(backbone, rule, f"the positions are not those of the {grid} grid in (t, h, w) order",
                     "order tokens by t, then h, then w, as patchworld.grid_positions does")
    features = backbone(tokens, positions)
    expect_tensor(backbone, "forward(tokens (B, N, D), positions) returns features (B, N, dim), one per token",
                  features, (*tokens.shape[:2], backbone.dim), "floating",
                  "keep the token axis (pool in a probe or a decoder, not in the backbone) and return width `dim`")
    if isinstance(backbone, GenerativeBackbone):
        why = generative_refusal(backbone)
        if why:
            raise broken(backbone, "a backbone with patch_values takes the calls of patchworld.GenerativeBackbone",
                         why, GENERATIVE_FIX)
        head = backbone(tokens, positions, torch.zeros(B, device=tokens.device), None, None, head=True)
        expect_tensor(backbone, "forward(..., head=True) returns the prediction (B, N, patch_values)", head,
                      (*tokens.shape[:2], backbone.patch_values), "floating",
                      "project each token to patch_values = latent channels x patch volume")
    return tokens, positions, features


def run_conditioner(conditioner: Conditioner, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode captions, checking tokens (B, L, dim) and mask (B, L) against the conditioner contract."""
    tokens, mask = conditioner(captions)
    B = len(captions)
    expect_tensor(conditioner, "forward(captions) returns tokens (B, L, dim)", tokens, (B, "L", conditioner.dim),
                  "floating", "return one row of `dim`-wide tokens per caption")
    expect_tensor(conditioner, "forward(captions) returns a padding mask (B, L) bool", mask, (B, tokens.shape[1]),
                  "bool", "return mask[b, l] = True where token l of caption b is real")
    empty = [captions[b] for b in torch.nonzero(~mask.any(1)).flatten().tolist()]
    if empty:
        raise broken(conditioner, "every caption, '' included, has a real token", f"none for {empty}",
                     "start every caption with a real [BOS] token (classifier-free guidance encodes '')")
    return tokens, mask


@torch.no_grad()
def check_pixels_or_latents(objective: Any, batch: Any) -> None:
    """A batch of cached latents (no "video") reaches only an objective that trains on latents."""
    if isinstance(batch, dict) and "video" not in batch and "latents" in batch and not objective.trains_on_latents:
        raise broken(objective, "a batch without 'video' (cached latents) goes to an objective that trains on "
                     "latents (`trains_on_latents`)", "this batch holds no pixels",
                     "train it from clips (e.g. SyntheticWorld or VideoFolder), not from a LatentCache")


def check_buckets(world, datamodule: Any) -> None:
    """Every (T, H, W) bucket of `datamodule` must fit the tokenizer's compression and the backbone's patches,
    checked before the first step (a later bucket would fail mid-run): a one-line DataError naming the
    bucket and the nearest sizes that fit."""
    tokenizer = world.tokenizer
    patch = world.backbone.patch_size if world.backbone is not None else (1, 1, 1)
    (ct, ch, cw), (pt, ph, pw) = tokenizer.compression, patch
    for bucket in getattr(datamodule, "buckets", None) or []:
        try:
            if all(n % p == 0 for n, p in zip(tokenizer.latent_grid(*bucket), patch)):
                continue
        except DataError:
            pass
        # latent frames t = k * pt; pixel frames 1 + (t - 1) * ct (causal) or t * ct; H, W multiples of c * p
        frames = [tokenizer.pixel_frames(k * pt) for k in range(1, bucket[0] + 2)]
        choices = [_nearest(frames, bucket[0]), _nearest(range(ch * ph, 2 * bucket[1] + ch * ph, ch * ph), bucket[1]),
                   _nearest(range(cw * pw, 2 * bucket[2] + cw * pw, cw * pw), bucket[2])]
        nearest = sorted(((t, h, w) for t in choices[0] for h in choices[1] for w in choices[2]),
                         key=lambda size: sum(abs(a - b) for a, b in zip(size, bucket)))
        raise DataError(
            f"{type(datamodule).__name__} bucket (T, H, W)={tuple(bucket)} does not fit {type(tokenizer).__name__} "
            f"(compression {(ct, ch, cw)}{', causal' if tokenizer.causal else ''}) with "
            f"{type(world.backbone).__name__} patches {tuple(patch)}: valid buckets have T in "
            f"{', '.join(map(str, frames[:3]))}, ..., H a multiple of {ch * ph} and W a multiple of {cw * pw}; "
            f"nearest: {', '.join(map(str, nearest[:4]))}")


def _nearest(valid, value: int) -> list[int]:
    """The valid values just below and just above `value` (one if it is valid itself)."""
    valid = list(valid)
    below = [v for v in valid if v <= value]
    above = [v for v in valid if v >= value]
    return sorted({v for v in (below[-1] if below else None, above[0] if above else None) if v is not None})


def check_parts(world, batch: dict, source: Any = "the datamodule") -> None:
    """Check a batch, then run the tokenizer, the backbone and the conditioner once on its first two clips,
    every output against its contract. In eval mode, so nothing is drawn from the training randomness
    (dropout, drop path) and a resumed run stays exact."""
    check_batch(batch, source)
    check_buckets(world, source)
    with evaluating(world):
        if "video" in batch:
            latents = run_tokenizer(world.tokenizer, batch["video"][:2])
        else:  # cached latents: the backbone takes them as they are, the tokenizer their decoding
            latents = batch["latents"][:2]
            expect_tensor(source, "batch['latents'] has the tokenizer's latent_channels", latents,
                          ("B", world.tokenizer.latent_channels, "t", "h", "w"), "floating",
                          "cache the latents with this recipe's tokenizer (patchworld cache)")
            run_tokenizer(world.tokenizer, world.tokenizer.decode(latents).float().clamp(-1, 1))
        if world.backbone is not None:
            run_backbone(world.backbone, latents)
        if world.conditioner is not None:
            run_conditioner(world.conditioner, list(batch.get("caption") or [""] * len(latents))[: len(latents)])


# ---- objective, decoder ------------------------------------------------------------------------------
def check_step_output(objective: Objective, method: str, out: Any) -> Any:
    """`out`, as returned by objective.<method> (prepare_batch, training_step, validation_step or
    predict_step), once checked against the objective contract; no host sync, so it runs every step."""
    if not isinstance(out, dict):
        raise broken(objective, f"{method} returns a dict", f"got {described(out)}",
                     "return the batch" if method == "prepare_batch" else "return {'loss': loss, ...}")
    if method == "prepare_batch":
        if "video" not in out and "latents" not in out:
            raise broken(objective, "prepare_batch returns the batch", f"'video' is missing from {sorted(out)}",
                         "return batch | {...your additions}")
        return out
    if method == "predict_step":
        return out
    loss = out.get("loss")
    if not (torch.is_tensor(loss) and loss.dim() == 0 and loss.is_floating_point()):
        raise broken(objective, f"{method} returns a dict with 'loss', a 0-dim floating tensor",
                     f"'loss' is {described(loss)}", "reduce the loss to one number (e.g. .mean())")
    if method == "training_step" and torch.is_grad_enabled() and not loss.requires_grad:
        raise broken(objective, "the training loss has a gradient", "'loss' does not require grad",
                     "compute it from the parts' outputs, not under torch.no_grad() and not detached")
    for key, value in out.items():
        if not (isinstance(value, (int, float)) or (torch.is_tensor(value) and value.numel() == 1)):
            raise broken(objective, f"{method} returns one-element values to log", f"{key!r} is {described(value)}",
                         "log scalars only (reduce with .mean(); tensors to keep belong in predict_step)")
    return out


def check_written(decoder: Decoder, paths: Any, directory: Path) -> list[Path]:
    """What `decoder.write` returned, once checked: a list of files that exist, under `directory`."""
    rule = "write returns the list of the files it wrote, under `directory`"
    if not isinstance(paths, (list, tuple)) or not all(isinstance(p, (str, Path)) for p in paths):
        raise broken(decoder, rule, f"got {described(paths)}", "return [Path, ...] (an empty list if it wrote nothing)")
    root = Path(directory).resolve()
    for path in map(Path, paths):
        if not path.is_file():
            raise broken(decoder, rule, f"{path} is not a file", "return only the paths of files it wrote")
        if root not in path.resolve().parents:
            raise broken(decoder, rule, f"{path} is outside {root}", "write under `directory`")
    return [Path(p) for p in paths]


def check_generative_backbone(world, needed_by: str) -> None:
    """Refuse, naming what is missing, a world's backbone that does not implement `GenerativeBackbone` (what
    the objective `needed_by` calls); a generative objective's `bind` calls it."""
    rule, fix = f"{needed_by} needs a patchworld.GenerativeBackbone", GENERATIVE_FIX
    backbone = world.backbone
    if backbone is None:
        raise broken(world.objective, rule, "the recipe has no backbone", "set model.backbone, e.g. class_path: DiT")
    if not isinstance(backbone, GenerativeBackbone):
        raise broken(backbone, rule, "it has no patch_values", fix)
    expected = world.tokenizer.latent_channels * math.prod(backbone.patch_size)
    if backbone.patch_values != expected:
        raise broken(backbone, rule, f"patch_values is {backbone.patch_values}, not latent channels x patch volume "
                     f"= {expected}", "make patch_values (and the head=True output) one patch of the latents")
    why = generative_refusal(backbone)
    if why:
        raise broken(backbone, rule, why, fix)


def generative_refusal(backbone: Backbone) -> str | None:
    """Why the backbone's embed or forward cannot take the calls a generative objective makes, else None."""
    return refuses(backbone.embed, "latents", "clean_mask") or refuses(
        backbone.forward, "tokens", "positions", "timesteps", "context", "context_mask", clean=None, depth=None,
        head=True)
