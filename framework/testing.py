"""Conformance checks for plugin authors, in the spirit of scikit-learn's `check_estimator`.

    from patchworld.testing import check_backbone, check_help

    def test_my_backbone():
        check_backbone(MyBackbone)                    # a class with small defaults, or any factory:
        check_backbone(lambda: MyBackbone(dim=48))
        check_help(MyBackbone)                        # what `--model.backbone.help MyBackbone` shows

Each `check_<part>(make, ...)` builds the part with `make()` (more than once: the round trips need fresh
copies), binds it in a tiny `WorldModel` with small first-party companions (`PIXELS`, `VIT`, `MAE`; give
others by keyword, e.g. ``check_objective(MyFlow, backbone=DIT, conditioner=TEXT)``) and runs its rules
on tiny random clips, in seconds on a CPU. A broken rule raises a one-line `ContractError` naming the
component, the rule and the fix.

Besides the contract of `patchworld.interfaces` (every output over several grid sizes, through
`patchworld.contracts`) and each part's own rules (listed with its check), every check runs these:
* typed: every constructor parameter is type-annotated (a recipe's value is then validated);
* each clip on its own: a clip's outputs do not depend on the other clips of its batch;
* bf16: it runs under bf16 autocast (bf16-mixed training and predict) with finite outputs;
* overfit: a few optimizer steps on one batch lower a loss through it (if it has trainable weights), and
  gradients reach its weights;
* checkpoint: its world's state_dict, saved with `torch.save` and loaded with ``weights_only=True`` into a
  freshly built world, gives the same outputs;
* pickling: the world holding it pickles, and the copy gives the same outputs (DDP and DataLoader
  workers start processes with pickled copies).
Before the behavioural rules a part's weights get a little seeded noise, so that zero-initialised layers
(adaLN-Zero gates, zero heads) cannot hide a dependence.

`load_world(recipe, checkpoint=None, overrides=None)` (from `patchworld.recipes`) builds a whole
`WorldModel` and datamodule from a recipe, as ``patchworld fit`` does, for tests inside a real model.
"""
from __future__ import annotations

import functools
import inspect
import io
import itertools
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import docstring_parser
import torch
from pytorch_lightning import LightningDataModule
from torch import nn

from .recipes import load_world  # noqa: F401  (re-exported: a WorldModel and datamodule from a recipe)
from .contracts import (broken, check_batch, check_generative_backbone, check_step_output, check_written, described,
                        evaluating, expect_tensor, run_backbone, run_conditioner, run_tokenizer)
from .errors import ContractError, DataError
from .interfaces import Backbone, Captioner, GenerativeBackbone, Objective, PromptExpander, Tokenizer
from .model import WorldModel
from .patches import grid_positions
from .plugins import KINDS, load_plugins

Factory = Callable[[], Any]


def one_thread(check: Callable) -> Callable:
    """Run `check` on one torch thread: its tensors are tiny, so more threads only add synchronisation (many
    times slower on a busy CPU)."""
    @functools.wraps(check)
    def run(*args: Any, **kwargs: Any) -> None:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            check(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
    return run


def registered(kind: str, name: str, **arguments: Any) -> Factory:
    """A factory of the registered component `name` of `kind` built with `arguments`."""
    return lambda: load_plugins().get(kind, name)(**arguments)


#: the small first-party companions a check binds its part with
PIXELS = registered("tokenizer", "Pixels")
VIT = registered("backbone", "ViT", dim=48, depth=2, heads=2, patch_size=(1, 4, 4))
DIT = registered("backbone", "DiT", dim=48, depth=2, heads=2, patch_size=(1, 4, 4))
MAE = registered("objective", "VideoMAE", mask_ratio=0.5, predictor_dim=32, predictor_depth=1, predictor_heads=2)
TEXT = registered("conditioner", "TinyTextEncoder", dim=32, depth=1, heads=2)

#: token grids (t, h, w) the shape rules run on: one frame, a wide clip, a tall clip
GRIDS = ((1, 2, 2), (2, 1, 3), (2, 3, 2))
PROMPTS = ["a large red circle moves to the right", "a small blue square falls down slowly and bounces"]
CAPTIONS = [PROMPTS[0], "", PROMPTS[1]]  # "" is classifier-free guidance's unconditional caption


@dataclass
class Bench:
    """The tiny world a check binds its part in, as factories, so it can build fresh copies of it."""

    tokenizer: Factory = PIXELS
    objective: Factory = MAE
    backbone: Factory | None = VIT
    conditioner: Factory | None = None
    decoder: Factory | None = None

    def world(self, seed: int = 0) -> WorldModel:
        torch.manual_seed(seed)  # also the world's run seed (patchworld.randomness)
        parts = {name: make() for name, make in vars(self).items() if make is not None}
        for name, part in parts.items():
            base = KINDS[name]
            if not isinstance(part, base):
                raise ContractError(f"the {name} factory made {described(part)}, not a patchworld.{base.__name__}")
            check_typed(type(part))
        return WorldModel(**parts)


# ---- rules every check uses ----------------------------------------------------------------------------
def clips(tokenizer: Tokenizer, grid: tuple[int, int, int], patch: tuple[int, int, int] = (1, 1, 1),
          batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Random videos (batch, 3, T, H, W) in [-1, 1] of the size whose token grid is `grid` for `patch`."""
    t, h, w = (g * p for g, p in zip(grid, patch))  # the latent grid
    size = (tokenizer.pixel_frames(t), h * tokenizer.compression[1], w * tokenizer.compression[2])
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def perturb(module: nn.Module, seed: int = 0, scale: float = 0.02) -> None:
    """Add seeded noise to every floating parameter (zero-initialised layers then pass signals on)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            if param.is_floating_point():
                param.add_(torch.randn(param.shape, generator=generator).to(param) * scale)


def tensors(value: Any) -> list[torch.Tensor]:
    """The tensors in a (nested) output: a tensor, a tuple or list of them, a dict of them."""
    if torch.is_tensor(value):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    return [t for item in value for t in tensors(item)] if isinstance(value, (list, tuple)) else []


def same(component: Any, rule: str, got: Any, expected: Any, fix: str, atol: float = 1e-4) -> None:
    """Raise unless two outputs hold the same tensors (up to float rounding)."""
    for a, b in itertools.zip_longest(tensors(got), tensors(expected)):
        if a is None or b is None or a.shape != b.shape:
            raise broken(component, rule, f"got {described(a)} where {described(b)} was expected", fix)
        if not torch.allclose(a.float(), b.float(), atol=atol, rtol=1e-3, equal_nan=True):
            difference = (a.float() - b.float()).abs().nan_to_num(float("inf")).max()
            raise broken(component, rule, f"outputs differ by up to {float(difference):.3g}", fix)


def check_each_clip_alone(component: Any, what: str, run: Callable[[slice], Any]) -> None:
    """Rule: `run(clips)` gives clip 1 the same outputs in the whole batch as alone."""
    whole, alone = tensors(run(slice(None))), tensors(run(slice(1, 2)))
    same(component, f"{what} treats each clip on its own", [t[1:2] for t in whole], alone,
         "compute every statistic per clip (no BatchNorm over the batch, nothing mixed across the batch axis)")


def check_bf16(component: Any, what: str, run: Callable[[], Any]) -> None:
    """Rule: `run()` works under bf16 autocast, with finite outputs."""
    rule = f"{what} runs under bf16 autocast"
    fix = ("match dtypes where autocast does not: tensors you create to the inputs' dtype (.to(x.dtype)), inputs "
           "to float32 in autocast-disabled sections (x.float())")
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = run()
    except (RuntimeError, TypeError) as error:
        raise broken(component, rule, f"{type(error).__name__}: {str(error).splitlines()[0]}", fix) from error
    if not all(bool(t.isfinite().all()) for t in tensors(out) if t.is_floating_point()):
        raise broken(component, rule, "it returned non-finite values", "compute fragile sums in float32 "
                     "(with torch.autocast(x.device.type, enabled=False))")


def check_overfit(component: Any, weights: Iterable[nn.Parameter], train: Callable[[], torch.Tensor],
                  evaluate: Callable[[], float], extra: Iterable[nn.Parameter] = (),
                  after_step: Callable[[float], None] = lambda progress: None, steps: int = 25, lr: float = 3e-3,
                  ratio: float = 0.8) -> None:
    """Rules: gradients reach `weights` (the component's), and `steps` Adam steps on the loss `train()` (over
    `weights` and `extra`) bring `evaluate()` below `ratio` x its start; skipped without trainable weights."""
    own = [p for p in weights if p.requires_grad]
    if not own:
        return
    optimizer = torch.optim.Adam(own + list(extra), lr=lr)
    with torch.no_grad():
        start = evaluate()
    for step in range(steps):
        optimizer.zero_grad()
        train().backward()
        if step == 0:
            grads = [p.grad for p in own if p.grad is not None]
            if not grads or not any(bool(g.abs().sum() > 0) for g in grads):
                raise broken(component, "gradients reach its weights", "no weight got a gradient",
                             "do not detach, or compute under torch.no_grad(), what the outputs are made of")
            if not all(bool(g.isfinite().all()) for g in grads):
                raise broken(component, "its gradients are finite", "a weight got a NaN or Inf gradient",
                             "guard divisions and logarithms (clamp the denominators)")
        optimizer.step()
        after_step((step + 1) / steps)
    with torch.no_grad():
        end = evaluate()
    if not end < ratio * start:
        raise broken(component, "a short overfit on one batch lowers the loss", f"{steps} Adam steps (lr {lr}) took "
                     f"it from {start:.4g} to {end:.4g} (wanted below {ratio:g} x)", "check that its outputs depend "
                     "on its weights and inputs (no frozen, saturated or disconnected layers)")


def pickled(component: Any, value: Any) -> Any:
    """A copy of `value` through pickle, as DDP and DataLoader workers make one; else the broken rule."""
    try:
        return pickle.loads(pickle.dumps(value))
    except Exception as error:
        raise broken(component, "it pickles (DDP and DataLoader workers start processes with copies)",
                     f"{type(error).__name__}: {error}", "keep no lambdas, local functions, open files or locks "
                     "as attributes (store settings; build or open such objects where they are used)") from None


def check_round_trips(bench: Bench, world: WorldModel, component: Any, probe: Callable[[WorldModel], Any]) -> None:
    """Rules 'checkpoint' and 'pickling': a freshly built world loaded (strict) from `world`'s checkpoint (its
    state_dict and what `WorldModel` adds, through torch.save / torch.load(weights_only=True)), and a pickled
    copy of `world`, give the same `probe` outputs."""
    def probed(w: WorldModel) -> Any:
        with evaluating(w), torch.no_grad():
            return probe(w)

    expected = probed(world)
    checkpoint = {"state_dict": world.state_dict()}
    world.on_save_checkpoint(checkpoint)  # what Lightning's checkpoints add: the run seed (randomness keys), ...
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    try:
        checkpoint = torch.load(buffer, weights_only=True)
    except pickle.UnpicklingError as error:
        raise broken(component, "its state_dict loads with torch.load(weights_only=True)", str(error).splitlines()[0],
                     "keep only tensors and plain values (str, numbers, lists, dicts) in state_dict and "
                     "get_extra_state") from None
    fresh = bench.world(seed=1)
    fresh.on_load_checkpoint(checkpoint)
    try:
        fresh.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise broken(component, "a freshly built copy loads its state_dict (strict)", " ".join(str(error).split()),
                     "create every submodule and buffer in __init__ or bind (never lazily in forward)") from None
    same(component, "a copy loaded from its state_dict gives the same outputs", probed(fresh), expected,
         "keep everything that changes outputs in parameters, buffers or get_extra_state")
    copy = pickled(component, world)
    same(component, "a pickled copy gives the same outputs", probed(copy), expected,
         "restore every piece of state when unpickled (__getstate__ / __setstate__)")


# ---- the checks -------------------------------------------------------------------------------------------
@one_thread
def check_tokenizer(make: Factory, *, backbone: Factory = VIT, objective: Factory = MAE) -> None:
    """Conformance of a `Tokenizer`: the shared rules, plus
    * sizes: `latent_grid` agrees with `pixel_frames` and `latent_frame_of`, and `latent_grid` and `encode`
      refuse a size they cannot encode with a `DataError`;
    * causal: a causal tokenizer's latent frame 0 depends on pixel frame 0 only;
    * overfit: decode(encode(video)) learns to reconstruct one batch (if it has trainable weights)."""
    bench = Bench(make, objective, backbone)
    world = bench.world()
    tokenizer = world.tokenizer
    perturb(tokenizer)
    with evaluating(world), torch.no_grad():
        for grid in GRIDS:
            video = clips(tokenizer, grid)
            run_tokenizer(tokenizer, video)
        check_sizes(tokenizer)
        if tokenizer.causal:
            check_causal(tokenizer)
        check_each_clip_alone(tokenizer, "encode", lambda k: tokenizer.encode(video[k]))
        check_bf16(tokenizer, "encode and decode", lambda: tokenizer.decode(tokenizer.encode(video)))

    def reconstruction() -> torch.Tensor:
        return (tokenizer.decode(tokenizer.encode(video)).float() - video).pow(2).mean()

    check_overfit(tokenizer, tokenizer.parameters(), reconstruction, lambda: float(reconstruction()), ratio=0.9)
    check_round_trips(bench, world, world.tokenizer, lambda w: w.tokenizer.encode(video))


def check_sizes(tokenizer: Tokenizer) -> None:
    """Rules: `pixel_frames(t)` frames encode to t latent frames, the last of which carries the last pixel
    frame; a height that is no multiple of the compression is refused with a DataError."""
    _, ch, cw = tokenizer.compression
    for t in (1, 2, 3):
        frames = tokenizer.pixel_frames(t)
        if tokenizer.latent_grid(frames, ch, cw)[0] != t or tokenizer.latent_frame_of(frames - 1) != t - 1:
            raise broken(tokenizer, "latent_grid, pixel_frames and latent_frame_of agree", f"pixel_frames({t}) = "
                         f"{frames} frames give {tokenizer.latent_grid(frames, ch, cw)[0]} latent frames and put the "
                         f"last in latent frame {tokenizer.latent_frame_of(frames - 1)}",
                         "keep `compression` and `causal` in line with what encode does")
    if ch == 1:
        return
    bad = torch.zeros(1, 3, tokenizer.pixel_frames(1), ch + 1, cw)
    for what, call in (("latent_grid", lambda: tokenizer.latent_grid(*bad.shape[2:])),
                       ("encode", lambda: tokenizer.encode(bad))):
        try:
            call()
        except DataError:
            continue
        raise broken(tokenizer, f"{what} refuses a size it cannot encode with a DataError", f"it accepted H={ch + 1} "
                     f"with height compression {ch}", "call self.latent_grid(T, H, W) first in encode (it raises a "
                     "DataError naming the valid sizes)")


def check_causal(tokenizer: Tokenizer) -> None:
    """Rule: latent frame 0 is the same whatever the later pixel frames are."""
    video = clips(tokenizer, (3, 1, 1))
    changed = torch.cat([video[:, :, :1], -video[:, :, 1:]], dim=2)  # every later frame different
    same(tokenizer, "a causal tokenizer encodes frame 0 on its own", tokenizer.encode(changed)[:, :, 0],
         tokenizer.encode(video)[:, :, 0], "pad time on the past side only (causal convolutions), or set causal = False")


@one_thread
def check_backbone(make: Factory, *, tokenizer: Factory = PIXELS, objective: Factory = MAE,
                   conditioner: Factory | None = None, any_order: bool = True) -> None:
    """Conformance of a `Backbone`: the shared rules, plus
    * positions: its features depend on the positions, and (unless ``any_order=False``, for a backbone that
      needs the whole grid in order, e.g. factorized attention) follow them when the tokens are shuffled,
      and it runs on any subset of the tokens (masked objectives pass only the visible ones);
    * depth: ``depth=None`` is ``depth=len(blocks)``, ``depth=1`` works and (with several blocks) differs;
    * a `GenerativeBackbone` also: its signatures fit what `Flow` and `DDPM` call, a clean mask and
      timesteps are accepted, and the head's prediction has the documented shape."""
    bench = Bench(tokenizer, objective, make, conditioner)
    world = bench.world()
    backbone = world.backbone
    perturb(backbone)
    with evaluating(world), torch.no_grad():
        for grid in GRIDS:
            latents = world.tokenizer.encode(clips(world.tokenizer, grid, backbone.patch_size))
            tokens, positions, features = run_backbone(backbone, latents)
        check_positions(backbone, tokens, positions, features, any_order)
        check_depth(backbone, tokens, positions, features)
        if isinstance(backbone, GenerativeBackbone):
            check_generative_backbone(world, "a generative objective (Flow, DDPM)")
            check_generative_calls(backbone, latents)
        check_each_clip_alone(backbone, "forward", lambda k: backbone(tokens[k], positions[k]))
        check_bf16(backbone, "forward", lambda: backbone(tokens, positions))
    head = nn.Linear(backbone.dim, 4)
    target = torch.randn(*tokens.shape[:2], 4, generator=torch.Generator().manual_seed(0))

    def regression() -> torch.Tensor:  # fit a random target per token through the backbone
        return (head(backbone(tokens, positions)) - target).pow(2).mean()

    check_overfit(backbone, backbone.parameters(), regression, lambda: float(regression()), extra=head.parameters())
    check_round_trips(bench, world, world.backbone, lambda w: w.backbone(*w.backbone.embed(latents)))


def check_positions(backbone: Backbone, tokens: torch.Tensor, positions: torch.Tensor, features: torch.Tensor,
                    any_order: bool) -> None:
    """Rules: features change when the positions move; shuffling tokens and positions together shuffles the
    features alike; a subset of the tokens gives (B, K, D)."""
    B, N, _ = tokens.shape
    order = torch.randperm(N, generator=torch.Generator().manual_seed(0))
    if torch.allclose(backbone(tokens, positions[:, order]).float(), features.float(), atol=1e-4):
        raise broken(backbone, "its features depend on the positions", "shuffling the positions among the tokens "
                     "changed no feature", "add a position encoding computed from `positions` (patchworld.sincos_3d, "
                     "patchworld.Rope3d)")
    if not any_order:
        return
    same(backbone, "a token's features follow its position, not its index in the sequence",
         backbone(tokens[:, order], positions[:, order]), features[:, order],
         "place tokens by their positions (scatter them onto the grid by position, not by index), or pass "
         "any_order=False if it needs the whole grid in order")
    keep = order[: N // 2].sort().values
    expect_tensor(backbone, "forward runs on any subset of the tokens", backbone(tokens[:, keep], positions[:, keep]),
                  (B, len(keep), backbone.dim), "floating", "size everything from `positions`, never from a full grid")


def check_depth(backbone: Backbone, tokens: torch.Tensor, positions: torch.Tensor, features: torch.Tensor) -> None:
    """Rules: `blocks` lists its blocks; ``depth=len(blocks)`` is the default; ``depth=1`` gives (B, N, D)."""
    blocks = getattr(backbone, "blocks", None)
    if not isinstance(blocks, (nn.ModuleList, nn.Sequential, list, tuple)) or len(blocks) < 1:
        raise broken(backbone, "blocks lists its blocks (depth counts them)", f"blocks is {described(blocks)}",
                     "keep them in self.blocks = nn.ModuleList(...)")
    same(backbone, "forward(depth=None) is forward(depth=len(blocks))", backbone(tokens, positions, depth=len(blocks)),
         features, "run self.blocks[:depth], then what follows the blocks")
    first = backbone(tokens, positions, depth=1)
    expect_tensor(backbone, "forward(depth=1) returns the features after one block", first, tuple(features.shape),
                  "floating", "run self.blocks[:depth]")
    if len(blocks) > 1 and torch.allclose(first.float(), features.float(), atol=1e-5):
        raise broken(backbone, "forward(depth=k) returns the features after k blocks", f"depth=1 and depth="
                     f"{len(blocks)} give the same features, so depth is ignored (the layer search would read one "
                     f"layer {len(blocks)} times)", "take depth as a parameter of forward (not in **conditions) and "
                     "run self.blocks[:depth]")


def check_generative_calls(backbone: Backbone, latents: torch.Tensor) -> None:
    """Rule: the calls `Flow` and `DDPM` make work: embed with a clean mask, forward with timesteps and clean
    tokens, head=True giving (B, N, patch_values)."""
    B, t = latents.shape[0], latents.shape[2]
    clean_frames = (torch.arange(t) == 0).expand(B, -1)  # (B, t): the first latent frame given
    tokens, positions = backbone.embed(latents, clean_frames)
    clean = positions[..., 0] == 0  # (B, N): the tokens of that frame (temporal patch 1) or none
    expect_tensor(backbone, "forward(tokens, positions, timesteps, None, None, clean=..., head=True) returns "
                  "(B, N, patch_values)", backbone(tokens, positions, torch.rand(B), None, None, clean=clean, head=True),
                  (*tokens.shape[:2], backbone.patch_values), "floating", "project every token to one latent patch")


@one_thread
def check_conditioner(make: Factory, *, tokenizer: Factory = PIXELS, backbone: Factory = VIT,
                      objective: Factory = MAE) -> None:
    """Conformance of a `Conditioner`: the shared rules, plus
    * padding: a caption's real tokens are the same alone as in a batch of longer and shorter captions;
    * captions matter: two different captions give different tokens."""
    bench = Bench(tokenizer, objective, backbone, conditioner=make)
    world = bench.world()
    conditioner = world.conditioner
    perturb(conditioner)
    with evaluating(world), torch.no_grad():
        tokens, mask = run_conditioner(conditioner, CAPTIONS)
        for b, caption in enumerate(CAPTIONS):
            alone, alone_mask = conditioner([caption])
            same(conditioner, "a caption's real tokens do not depend on the other captions of the batch",
                 alone[0][alone_mask[0]], tokens[b][mask[b]], "keep padding out of every real token (mask it in "
                 "attention; pad after, never before, the caption)")
        pooled = pool(tokens, mask)
        if torch.allclose(pooled[0], pooled[2], atol=1e-5):
            raise broken(conditioner, "different captions give different tokens", f"{CAPTIONS[0]!r} and "
                         f"{CAPTIONS[2]!r} gave the same tokens", "encode the words of the caption")
        check_bf16(conditioner, "forward", lambda: conditioner(CAPTIONS))
    head = nn.Linear(conditioner.dim, 4)
    target = torch.randn(len(CAPTIONS), 4, generator=torch.Generator().manual_seed(0))

    def regression() -> torch.Tensor:  # fit a random target per caption from its pooled tokens
        return (head(pool(*conditioner(CAPTIONS))) - target).pow(2).mean()

    check_overfit(conditioner, conditioner.parameters(), regression, lambda: float(regression()),
                  extra=head.parameters())
    check_round_trips(bench, world, world.conditioner, lambda w: w.conditioner(CAPTIONS)[0])


def pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of each caption's real tokens: (B, L, D), (B, L) -> (B, D)."""
    weights = mask.to(tokens.dtype).unsqueeze(-1)  # (B, L, 1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp(min=1)


@one_thread
def check_objective(make: Factory, *, tokenizer: Factory = PIXELS, backbone: Factory | None = VIT,
                    conditioner: Factory | None = None, grid: tuple[int, int, int] = (2, 4, 4),
                    extras: Callable[[torch.Tensor], dict] | None = None) -> None:
    """Conformance of an `Objective` (on a batch whose token grid is `grid`, plus the keys `extras(video)`
    returns for an objective that needs more than video, caption and index, e.g. ActionConditioned's
    "actions"): the shared rules, plus
    * steps: prepare_batch, training_step, validation_step and predict_step return what the contract says,
      and the training loss has finite gradients;
    * validation is repeatable: the same values twice for the same batch and weights;
    * features: tokens (B, N, D) and positions (B, N, 3) for the first and the last choice of every
      `feature_options` entry, each clip on its own; `future_error`, if defined, (B,) finite, each clip
      on its own;
    * overfit: training steps on one batch lower its validation loss."""
    bench = Bench(tokenizer, make, backbone, conditioner)
    world = bench.world()
    objective = world.objective
    patch = world.backbone.patch_size if world.backbone is not None else (1, 1, 1)
    video = clips(world.tokenizer, grid, patch)
    batch = check_step_output(objective, "prepare_batch", objective.prepare_batch(
        {"video": video, "caption": PROMPTS, "index": torch.arange(len(video))} | (extras(video) if extras else {})))

    def training_loss() -> torch.Tensor:
        world.train()
        return check_step_output(objective, "training_step", objective.training_step(world, batch))["loss"]

    def validation() -> dict:
        with evaluating(world), torch.no_grad():
            return check_step_output(objective, "validation_step", objective.validation_step(world, batch))

    check_bf16(objective, "training_step", training_loss)
    first = validation()
    same(objective, "validation_step gives the same values for the same batch and weights", validation(), first,
         "draw validation masks and noise from patchworld.randomness (sample_generators), not torch's global generator")
    with evaluating(world), torch.no_grad():
        check_step_output(objective, "predict_step", objective.predict_step(world, batch))
        check_features(objective, world, video)
    check_overfit(objective, world.parameters(), training_loss, lambda: float(validation()["loss"]), steps=20,
                  lr=1e-3, ratio=1.0, after_step=lambda progress: objective.on_train_batch_end(world, progress))
    check_round_trips(bench, world, objective, lambda w: w.objective.validation_step(w, batch))


def check_features(objective: Objective, world: WorldModel, video: torch.Tensor) -> None:
    """Rules: `features` at the first and last choice of every `feature_options` entry gives tokens (B, N, D)
    and positions (B, N, 3), each clip on its own; a defined `future_error` gives (B,) finite, likewise."""
    options = objective.feature_options(world)
    ends = [[(key, values[0]), (key, values[-1])] for key, values in options.items() if values]
    for where in dict.fromkeys(tuple(choice) for choice in itertools.product(*ends)):
        tokens, positions = objective.features(world, video, **dict(where))
        rule = f"features(world, video, {', '.join(f'{k}={v!r}' for k, v in where)}) returns tokens (B, N, D) and positions (B, N, 3)"
        expect_tensor(objective, rule, tokens, (len(video), "N", "D"), "floating", "return one feature row per token")
        expect_tensor(objective, rule, positions, (*tokens.shape[:2], 3), "integer", "return the tokens' (t, h, w)")
        check_each_clip_alone(objective, "features", lambda k: objective.features(world, video[k], **dict(where))[0])
    if type(objective).future_error is Objective.future_error:
        return
    context = world.tokenizer.pixel_frames(world.backbone.patch_size[0] if world.backbone is not None else 1)
    errors = objective.future_error(world, video, context)
    expect_tensor(objective, "future_error(world, window, past) returns (B,)", errors, (len(video),), "floating",
                  "return one error per clip")
    if not bool(errors.isfinite().all()):
        raise broken(objective, "future_error returns finite errors", f"got {errors.tolist()}", "guard the error's divisions")
    check_each_clip_alone(objective, "future_error", lambda k: objective.future_error(world, video[k], context))


@one_thread
def check_decoder(make: Factory, *, outputs: dict | None = None, batch: dict | None = None) -> None:
    """Conformance of a `Decoder` on predict `outputs` for `batch` (default: a video (B, 3, 4, 16, 16) as
    "video" and features as "tokens" / "positions", what the first-party objectives return):
    * files: `write` returns the paths of the files it wrote, all under the directory, none empty, and
      leaves no other file (nothing half-written);
    * names: two batches without "index" (batch_index 0 and 1) write different files;
    * bf16: bf16 outputs (predict under bf16-mixed) are written too;
    * checkpoint and pickling as for every part."""
    bench = Bench(decoder=make)
    world = bench.world()
    decoder = world.decoder
    video = torch.rand(2, 3, 4, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    if outputs is None:
        outputs = {"video": video, "tokens": torch.randn(2, 8, 16), "positions": grid_positions(2, 2, 2).expand(2, -1, -1)}
    batch = batch if batch is not None else {"video": video, "caption": PROMPTS, "index": torch.tensor([3, 7])}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for folder in ("one", "two", "three"):
            (root / folder).mkdir()
        paths = check_written(decoder, decoder.write(outputs, batch, root / "one", 0), root / "one")
        if not paths:
            raise broken(decoder, "write writes files for predict outputs", f"it wrote nothing for {sorted(outputs)}",
                         "pass check_decoder outputs=... that this decoder writes")
        left = sorted(set(p for p in (root / "one").rglob("*") if p.is_file()) - set(paths))
        if left or any(p.stat().st_size == 0 for p in paths):
            raise broken(decoder, "write leaves only whole files, and returns them all", f"left {left[:1] or 'an empty file'}",
                         "write through patchworld.data.video_io.atomic_path and return every path written")
        unnamed = {key: value for key, value in batch.items() if key != "index"}
        first = decoder.write(outputs, unnamed, root / "two", 0)
        if set(first) & set(decoder.write(outputs, unnamed, root / "two", 1)):
            raise broken(decoder, "two batches never write the same file", "batch_index 0 and 1 wrote the same "
                         "path", "name files by batch['index'] when present, else by batch_index")
        half = {key: value.bfloat16() if torch.is_tensor(value) and value.is_floating_point() else value
                for key, value in outputs.items()}
        check_bf16(decoder, "write", lambda: decoder.write(half, batch, root / "three", 0))
    check_round_trips(bench, world, decoder, lambda w: list(w.decoder.state_dict().values()))


SPLITS = {"train": "fit", "val": "validate", "test": "test", "predict": "predict"}  # dataloader -> setup stage


def first_batches(datamodule: LightningDataModule) -> dict[str, Any]:
    """The first batch of every dataloader the datamodule defines, after prepare_data and setup."""
    datamodule.prepare_data()
    found = {}
    for split, stage in SPLITS.items():
        method = f"{split}_dataloader"
        if getattr(type(datamodule), method) is not getattr(LightningDataModule, method):
            datamodule.setup(stage)
            found[split] = next(iter(getattr(datamodule, method)()))
    return found


@one_thread
def check_datamodule(make: Factory) -> None:
    """Conformance of a `LightningDataModule` for patchworld:
    * batches: the first batch of every dataloader it defines follows the batch contract (`check_batch`);
    * repeatable: a freshly made datamodule yields the same first batches (everything seeded);
    * checkpoint: its state_dict round-trips through torch.save / torch.load(weights_only=True);
    * pickling: it pickles, and the copy yields the same first batches (DDP, DataLoader workers)."""
    datamodule = make()
    if not isinstance(datamodule, LightningDataModule):
        raise ContractError(f"the datamodule factory made {described(datamodule)}, not a LightningDataModule")
    check_typed(type(datamodule))
    batches = first_batches(datamodule)
    if not batches:
        raise broken(datamodule, "it has a dataloader", "it defines none of " + ", ".join(f"{s}_dataloader" for s in SPLITS),
                     "define train_dataloader (and val_dataloader, predict_dataloader as needed)")
    for batch in batches.values():
        check_batch(batch, datamodule)
    fresh = first_batches(make())
    for split, batch in batches.items():
        same(datamodule, f"a fresh copy yields the same first {split} batch", fresh.get(split), batch,
             repeatable_fix(getattr(datamodule, f"{split}_dataloader")()))
    buffer = io.BytesIO()
    torch.save(datamodule.state_dict(), buffer)
    buffer.seek(0)
    make().load_state_dict(torch.load(buffer, weights_only=True))
    copy = pickled(datamodule, datamodule)
    for split, batch in first_batches(copy).items():
        same(datamodule, f"a pickled copy yields the same first {split} batch", batch, batches[split],
             repeatable_fix(getattr(datamodule, f"{split}_dataloader")()))


def repeatable_fix(loader: Any) -> str:
    """How to make a dataloader's batches repeatable: seed its shuffling if it shuffles unseeded, else every
    random draw of its clips."""
    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, torch.utils.data.RandomSampler) and sampler.generator is None:
        return ("it shuffles with an unseeded generator: pass DataLoader(..., generator=torch.Generator()"
                ".manual_seed(seed)) from the datamodule's settings")
    return "seed every random draw from the datamodule's settings (e.g. numpy.random.default_rng([seed, index]))"


def check_prompt_expander(make: Factory) -> None:
    """Conformance of a `PromptExpander`: `expand` returns one non-empty str per prompt, in order; each
    prompt is expanded on its own (alone as in a batch) and the same every time, by a fresh copy too."""
    expander = make()
    if not isinstance(expander, PromptExpander):
        raise ContractError(f"the prompt expander factory made {described(expander)}, not a patchworld PromptExpander")
    check_typed(type(expander))
    expanded = expander.expand(list(PROMPTS))
    if not (isinstance(expanded, list) and len(expanded) == len(PROMPTS)
            and all(isinstance(text, str) and text.strip() for text in expanded)):
        raise broken(expander, "expand(prompts) returns one non-empty str per prompt", f"got {expanded!r} for "
                     f"{list(PROMPTS)!r}", "return a list of as many captions, in the prompts' order")
    alone = [expander.expand([prompt])[0] for prompt in PROMPTS]
    if alone != expanded or make().expand(list(PROMPTS)) != expanded:
        raise broken(expander, "a prompt's expansion depends only on the prompt", f"{expanded!r} in a batch, "
                     f"{alone!r} alone", "expand each prompt on its own, without randomness")


def check_captioner(make: Factory) -> None:
    """Conformance of a `Captioner`: `caption` of clips (B, 3, frames, H, W) at its `size` returns B non-empty
    str; each clip is captioned on its own and the same every time, by a fresh copy too."""
    captioner = make()
    if not isinstance(captioner, Captioner):
        raise ContractError(f"the captioner factory made {described(captioner)}, not a patchworld Captioner")
    check_typed(type(captioner))
    video = torch.rand(3, 3, captioner.frames, *captioner.size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    captions = captioner.caption(video)
    if not (isinstance(captions, list) and len(captions) == 3 and all(isinstance(c, str) and c.strip() for c in captions)):
        raise broken(captioner, "caption(video) returns one non-empty str per clip", f"got {captions!r} for 3 clips",
                     "return a list of B captions")
    alone = [captioner.caption(video[b : b + 1])[0] for b in range(3)]
    if alone != captions or make().caption(video) != captions:
        raise broken(captioner, "a clip's caption depends only on the clip", f"{captions!r} in a batch, {alone!r} "
                     "alone or from a fresh copy", "caption each clip on its own, with seeded (or no) randomness")


def constructor_parameters(cls: type) -> list[inspect.Parameter]:
    return [p for name, p in inspect.signature(cls.__init__).parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def check_typed(cls: type) -> None:
    """Rule: every constructor parameter is type-annotated, so a recipe's value is validated (an untyped ``depth``
    would take ``--model.backbone.init_args.depth banana``)."""
    untyped = [p.name for p in constructor_parameters(cls) if p.annotation is inspect.Parameter.empty]
    if untyped:
        raise broken(cls, "every constructor parameter is type-annotated", f"{untyped} are not",
                     "annotate them (dim: int = 64): the recipe keys are validated by type")


def check_help(cls: type) -> None:
    """What ``patchworld fit --model.<part>.help NAME`` shows is complete: the class docstring starts with a
    summary line (also shown by ``patchworld plugins``), and every constructor parameter is type-annotated
    (the recipe key is validated) and documented in the docstring's ``Args:`` section, one
    ``name: what it does`` line each (``a / b:`` documents neither)."""
    if not (cls.__doc__ or "").strip():
        raise broken(cls, "the class docstring starts with a summary line", "it has no docstring",
                     '"""One line saying what it is.""" under the class line')
    documented = {param.arg_name for param in docstring_parser.parse(cls.__doc__).params}
    check_typed(cls)
    missing = [p.name for p in constructor_parameters(cls) if p.name not in documented]
    if missing:
        raise broken(cls, "every constructor parameter is documented under Args:", f"no `name: ...` line for {missing}",
                     "add one `name: what it does` line per parameter under Args: in the class docstring")
