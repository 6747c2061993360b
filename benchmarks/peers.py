"""patchworld against the libraries a user would otherwise pick, side by side in one run: a DiT + rectified-flow
training step against diffusers' CogVideoX 3D transformer, and a ViT + V-JEPA step against pyjepa.

    pip install -e ".[bench]"                     # diffusers and pyjepa
    python benchmarks/peers.py [--pairs dit vjepa] [--precisions fp32 bf16] [--rounds 6] [--device cpu]
    python benchmarks/peers.py --pairs dit --precisions bf16 --profile   # casts and copies per step, no timing
    python benchmarks/peers.py --pairs dit --text_attention joint --cpu_attention fused   # patchworld's options

One step = forward + loss + backward + AdamW (+ the EMA target update for V-JEPA) on a batch already in
memory. Each pair runs in interleaved rounds (A,B, B,A, ...). The table gives each contender's median seconds
per step; the median (min-max) over rounds of the paired ratio patchworld / peer (below 1: patchworld is
faster); FLOPs per step (`measure.step_flops`: matmuls, convolutions, attention); MFU against the matmul
peak of the same precision measured at the start of the run; and the memory a step holds
(`measure.held_memory`: the allocator's peak on CUDA, the tensors saved for backward on a CPU). No assertions.

How the configs are matched
---------------------------
DiT + Flow (patchworld) vs CogVideoXTransformer3DModel (diffusers):
  * the same clips: batch 8 of 16x32x32 RGB pixels (no VAE on either side) cut into 2x4x4 patches, 512 video
    tokens per clip (CogVideoX 1.5's temporal patching: patch_size_t=2, patch_size=4);
  * width 256, 4 heads of 64, depth 6, MLP 4x with tanh-GELU, LayerNorm QK-norm (eps 1e-6), 3D RoPE on
    queries and keys from integer (t, h, w) positions (diffusers' get_3d_rotary_pos_embed with
    grid_type="slice"), timestep embedding 256 wide;
  * the same 16 precomputed text tokens of width 64 for both (no text encoder runs on either side);
  * the same loss: rectified flow, x_t = (1 - t) x0 + t noise, mean squared error to the velocity noise - x0,
    t logit-normal (patchworld's `Flow`, text-to-video only and no caption dropout; the formula written out
    for CogVideoX, whose library has no training step);
  * the same optimizer: torch AdamW, lr 1e-4, weight decay 0.01 on weights of >= 2 dimensions, betas
    (0.9, 0.99), in the implementation `--adamw` names (default: fused, what patchworld's recipes use).
  Unavoidable (the architectures differ): CogVideoX attends jointly over [text; video] (the 16 text tokens go
  through every block's attention and MLP as well) with one adaLN per sub-layer for video and text, while
  patchworld's DiT self-attends over the video tokens, reads the text through a cross-attention in every
  block and pools it into the adaLN conditioning; CogVideoX's RoPE gives each head 16/24/24 channels for
  (t, h, w), patchworld's 20/20/20 (+4 unrotated). They do different FLOPs: the table shows both, and the
  ratio of FLOP/s compares work rates.

ViT + V-JEPA (patchworld) vs VJEPA (pyjepa):
  * ViT-tiny encoder 192 wide, 12 blocks, 3 heads, MLP 4x; predictor 96 wide, 6 blocks, 3 heads (pyjepa gives
    its predictor the encoder's head count); batch 8 of 16x64x64 clips, 2x8x8 tubelets, 512 tokens per clip;
  * the same two mask families (short-range 8 blocks of 15%, long-range 2 of 70%, tubes through all time)
    and the very same masks: patchworld samples them (outside the timed step) and pyjepa gets those token
    indices as its masks_enc / masks_pred, so both encode and predict the same tokens;
  * the same loss (L1 between the predictions and the layer-normed EMA-target features at the target
    tokens, averaged over both families), EMA momentum 0.998 after every step, AdamW (lr 1e-4, weight decay
    0.04) as above, over pyjepa's own parameter groups (pyjepa.build_param_groups).
  Unavoidable: pyjepa adds a fixed sin-cos table built for one clip size, patchworld computes the sin-cos
  features from the tokens' positions (any size works); pyjepa learns a mask token per family, patchworld
  one. pyjepa's VJEPA.forward concatenates the families' context features along the batch, which fails
  for unequal context sizes (here ~50% and ~10% of the tokens), so its step calls pyjepa's target encoding,
  encoder and predictor once per family, as that forward does when the sizes agree, and pyjepa's
  prediction_loss on both. Collapse monitors are off (monitor_every=0).

bf16 rows run real bf16 autocast around the forward and loss, like Lightning's bf16-mixed, even on CPUs
without native bf16, where patchworld's `fit` falls back to fp32 (framework/precision.py): there bf16 is
emulated and slow for both, so those rows compare the two codes, not a speed to expect. What such a CPU can
still compare is `--profile`: per step, the dtype casts and other copies each side makes (calls and elements,
from torch's profiler), its aten operators and its FLOPs; those counts are the same on every CPU.

patchworld's side takes two of its options: `--text_attention` (the DiT's cross-attention to the caption, the
recipes' choice, or joint text attention: the caption's tokens as extra keys and values, as CogVideoX does)
and `--cpu_attention` (bf16 training attention on a CPU through the math SDPA backend, patchworld's default,
which computes in fp32, or PyTorch's fused kernel, which stays in bf16, as the peers do).
"""
from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from measure import casts_and_copies, held_memory, interleaved, matmul_peak, paired_ratios, step_flops, timed
from patchworld import Conditioner, WorldModel
from patchworld.model import parameter_groups
from patchworld_plugins import DiT, Flow, Pixels, ViT, VJEPA, vit

#: AdamW implementations (`--adamw`); both sides of each pair use the same one, `OPTIMIZER` (set by main)
ADAMW = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}
OPTIMIZER = dict(ADAMW["fused"])

# DiT pair: (B, 3, T, H, W) clips, 2x4x4 patches -> (T/2)(H/4)(W/4) = 512 tokens
DIT = {"batch": 8, "frames": 16, "size": 32, "patch": (2, 4, 4), "dim": 256, "heads": 4, "depth": 6,
       "mlp_ratio": 4.0, "text_tokens": 16, "text_dim": 64, "lr": 1e-4, "weight_decay": 0.01, "betas": (0.9, 0.99),
       "text_attention": "cross"}
# V-JEPA pair: 16x64x64 clips, 2x8x8 tubelets -> 8*8*8 = 512 tokens
VJEPA_CONFIG = {"batch": 8, "frames": 16, "size": 64, "patch": (2, 8, 8), "dim": 192, "depth": 12, "heads": 3,
                "predictor_dim": 96, "predictor_depth": 6, "momentum": 0.998, "lr": 1e-4, "weight_decay": 0.04}
PEERS = {"dit": "diffusers", "vjepa": "pyjepa"}


@dataclass
class Contender:
    """One side of a pair: `step()` runs one training step of `model`."""

    name: str
    step: Callable[[], None]
    model: torch.nn.Module

    @property
    def parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)


class FixedText(Conditioner):
    """The benchmark's conditioner: the same precomputed text tokens (L, dim) for every caption."""

    def __init__(self, tokens: torch.Tensor):
        super().__init__()
        self.dim = tokens.shape[-1]
        self.register_buffer("tokens", tokens)

    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch, length = len(captions), self.tokens.shape[0]
        mask = torch.ones(batch, length, dtype=torch.bool, device=self.tokens.device)
        return self.tokens.expand(batch, -1, -1), mask  # (B, L, dim), (B, L)


def tokens_per_clip(frames: int, size: int, patch: tuple[int, int, int]) -> int:
    return (frames // patch[0]) * (size // patch[1]) * (size // patch[2])


def adamw(groups, lr: float, weight_decay: float, betas=(0.9, 0.999)) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=betas, **OPTIMIZER)


def train_step(loss_fn: Callable[[], torch.Tensor], optimizer: torch.optim.Optimizer, autocast: torch.autocast,
               after: Callable[[], None] = lambda: None) -> Callable[[], None]:
    """forward + loss under `autocast`, backward and the optimizer step outside it, then `after()`."""
    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn()
        loss.backward()
        optimizer.step()
        after()
    return step


# ---- DiT + Flow vs diffusers CogVideoX ----------------------------------------------------------------
def dit_inputs(device: str) -> dict:
    c = DIT
    torch.manual_seed(0)
    video = torch.rand(c["batch"], 3, c["frames"], c["size"], c["size"], device=device) * 2 - 1  # (B, 3, T, H, W)
    text = torch.randn(c["text_tokens"], c["text_dim"], device=device) * 0.5  # (L, Dt)
    return {"video": video, "text": text}


def patchworld_dit(inputs: dict, autocast: torch.autocast) -> Contender:
    c = DIT
    torch.manual_seed(0)
    backbone = DiT(dim=c["dim"], depth=c["depth"], heads=c["heads"], mlp_ratio=c["mlp_ratio"], patch_size=c["patch"],
                   text_attention=c["text_attention"])
    objective = Flow(caption_dropout=0.0, mixture={"t2v": 1.0}, progress=False)
    world = WorldModel(Pixels(), objective, backbone, FixedText(inputs["text"])).to(inputs["video"].device).train()
    batch = {"video": inputs["video"], "caption": [""] * c["batch"]}
    optimizer = adamw(parameter_groups(world), c["lr"], c["weight_decay"], c["betas"])
    loss = lambda: world.objective.training_step(world, batch)["loss"]  # noqa: E731
    return Contender("patchworld DiT", train_step(loss, optimizer, autocast), world)


def cogvideox_dit(inputs: dict, autocast: torch.autocast) -> Contender:
    from diffusers import CogVideoXTransformer3DModel
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    c = DIT
    pt, p, _ = c["patch"]
    grid = (c["frames"] // pt, c["size"] // p, c["size"] // p)  # (t, h, w) token grid
    device = inputs["video"].device
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(
        num_attention_heads=c["heads"], attention_head_dim=c["dim"] // c["heads"], in_channels=3, out_channels=3,
        time_embed_dim=c["dim"], text_embed_dim=c["text_dim"], num_layers=c["depth"], sample_frames=c["frames"],
        sample_height=c["size"], sample_width=c["size"], patch_size=p, patch_size_t=pt,
        temporal_compression_ratio=1, max_text_seq_length=c["text_tokens"], use_rotary_positional_embeddings=True,
    ).to(device).train()
    rope = get_3d_rotary_pos_embed(c["dim"] // c["heads"], ((0, 0), grid[1:]), grid[1:], grid[0], grid_type="slice",
                                   max_size=grid[1:], device=device)  # (cos, sin), each (N, head_dim)
    x0 = inputs["video"].transpose(1, 2)  # (B, T, 3, H, W): CogVideoX's layout
    text = inputs["text"].expand(c["batch"], -1, -1)  # (B, L, Dt)
    optimizer = adamw(parameter_groups(model), c["lr"], c["weight_decay"], c["betas"])

    def loss() -> torch.Tensor:
        t = torch.sigmoid(torch.randn(c["batch"], device=device))  # (B,) logit-normal
        noise = torch.randn_like(x0)
        x_t = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
        velocity = model(x_t, text, timestep=t * 1000, image_rotary_emb=rope, return_dict=False)[0]
        return F.mse_loss(velocity.float(), noise - x0)

    return Contender("diffusers CogVideoX", train_step(loss, optimizer, autocast), model)


# ---- ViT + V-JEPA vs pyjepa ---------------------------------------------------------------------------
def vjepa_inputs(device: str) -> dict:
    """The clips and the masks both sides train on (`masks`: one `BlockMask` per family, set by `new_masks`)."""
    c = VJEPA_CONFIG
    torch.manual_seed(0)
    video = torch.rand(c["batch"], 3, c["frames"], c["size"], c["size"], device=device) * 2 - 1  # (B, 3, T, H, W)
    return {"video": video, "masks": None}


def patchworld_vjepa(inputs: dict, autocast: torch.autocast) -> tuple[Contender, Callable[[], None]]:
    """The contender and `new_masks()`, which samples the next masks with patchworld's sampler into inputs."""
    c = VJEPA_CONFIG
    video = inputs["video"]
    torch.manual_seed(0)
    objective = VJEPA(predictor_dim=c["predictor_dim"], predictor_depth=c["predictor_depth"], predictor_heads=c["heads"],
                      ema=(c["momentum"], c["momentum"]), monitor_every=0)
    world = WorldModel(Pixels(), objective, ViT(dim=c["dim"], depth=c["depth"], heads=c["heads"], patch_size=c["patch"]))
    world = world.to(video.device).train()
    optimizer = adamw(parameter_groups(world), c["lr"], c["weight_decay"])
    loss = lambda: objective.training_step(world, {"video": video, "masks": inputs["masks"]})["loss"]  # noqa: E731
    step = train_step(loss, optimizer, autocast, after=lambda: objective.on_train_batch_end(world, 0.0))

    def new_masks() -> None:
        masks = objective.prepare_batch({"video": video.cpu()})["masks"]
        inputs["masks"] = [type(m)(m.context.to(video.device), m.target.to(video.device)) for m in masks]

    return Contender("patchworld V-JEPA", step, world), new_masks


def pyjepa_vjepa(inputs: dict, autocast: torch.autocast) -> Contender:
    import pyjepa

    c = VJEPA_CONFIG
    video = inputs["video"]
    torch.manual_seed(0)
    model = pyjepa.create_jepa("vjepa", encoder="vit_tiny", img_size=c["size"], patch_size=c["patch"][1],
                               num_frames=c["frames"], tubelet_size=c["patch"][0], pred_depth=c["predictor_depth"],
                               pred_embed_dim=c["predictor_dim"]).to(video.device).train()
    optimizer = adamw(pyjepa.build_param_groups([model.encoder, model.predictor], c["weight_decay"]), c["lr"],
                      c["weight_decay"])
    encoder, predictor = model.encoder.backbone, model.predictor.backbone  # inside pyjepa's multi-mask wrappers

    def loss() -> torch.Tensor:
        context = [m.context for m in inputs["masks"]]  # each (B, Nc) token indices
        target = [m.target for m in inputs["masks"]]  # each (B, Nt)
        targets = model.encode_target(video, target)  # layer-normed EMA-target features at each family's targets
        predictions = [predictor(encoder(video, masks=[ctx]), None, [ctx], [tgt], mask_index=i)
                       for i, (ctx, tgt) in enumerate(zip(context, target))]  # each (B, Nt, D)
        return pyjepa.prediction_loss(predictions, targets)

    step = train_step(loss, optimizer, autocast, after=lambda: model.update_target(c["momentum"]))
    return Contender("pyjepa V-JEPA", step, model)


# ---- the run --------------------------------------------------------------------------------------------
def build_pair(pair: str, device: str, autocast: torch.autocast) -> tuple[Contender, Contender, Callable[[], None]]:
    """(patchworld, peer, what to do before each round) for a pair name."""
    if pair == "dit":
        inputs = dit_inputs(device)
        return patchworld_dit(inputs, autocast), cogvideox_dit(inputs, autocast), lambda: None
    inputs = vjepa_inputs(device)
    ours, new_masks = patchworld_vjepa(inputs, autocast)
    new_masks()
    return ours, pyjepa_vjepa(inputs, autocast), new_masks


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return f"{names[0] if names else platform.processor() or 'CPU'} ({torch.get_num_threads()} threads)"


def missing_peers(pairs: list[str]) -> dict[str, str]:
    """pair -> the package it needs that is not installed."""
    return {pair: PEERS[pair] for pair in pairs if importlib.util.find_spec(PEERS[pair]) is None}


def profile(pairs: list[str], precisions: list[str], device: str, options: str) -> int:
    """The --profile table: per pair, precision and contender, what one step casts and copies (`casts_and_copies`)
    and its FLOPs."""
    print(f"patchworld vs peers, one training step under torch's profiler on {device_name(device)}, torch "
          f"{torch.__version__}; {options}")
    print(f"\n{'pair':<6} {'prec':<5} {'contender':<20} {'params':>7} {'GFLOP/step':>10} {'casts':>6} {'cast Melem':>10} "
          f"{'copies':>6} {'copy Melem':>10} {'aten ops':>8}")
    for pair in pairs:
        for precision in precisions:
            autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
            for contender in build_pair(pair, device, autocast)[:2]:
                moved = casts_and_copies(contender.step)
                print(f"{pair:<6} {precision:<5} {contender.name:<20} {contender.parameters / 1e6:>6.2f}M "
                      f"{step_flops(contender.step) / 1e9:>10.1f} {moved.get('casts', 0):>6} "
                      f"{moved.get('cast Melem', 0):>10.1f} {moved.get('copies', 0):>6} {moved.get('copy Melem', 0):>10.1f} "
                      f"{moved.get('ops', 0):>8}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", nargs="+", default=list(PEERS), choices=list(PEERS))
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds per pair and precision")
    parser.add_argument("--adamw", default="fused", choices=list(ADAMW), help="AdamW implementation of both sides")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--text_attention", default="cross", choices=["cross", "joint"],
                        help="patchworld DiT's text attention (recipes: cross)")
    parser.add_argument("--cpu_attention", default="math", choices=["math", "fused"],
                        help="patchworld's bf16 training attention on a CPU: the math SDPA backend (default) or the fused kernel")
    parser.add_argument("--profile", action="store_true",
                        help="instead of timing: casts, copies, operators and FLOPs of one step of each contender")
    args = parser.parse_args()
    OPTIMIZER.clear()
    OPTIMIZER.update(ADAMW[args.adamw])
    DIT["text_attention"] = args.text_attention
    if args.cpu_attention == "fused":
        vit.MATH_ATTENTION_TOKENS = 0
    missing = missing_peers(args.pairs)
    for pair, package in missing.items():
        print(f"peers.py: skipping {pair}: {package} is not installed (pip install -e \".[bench]\")", file=sys.stderr)
    pairs = [pair for pair in args.pairs if pair not in missing]
    if not pairs:
        return 1
    device = args.device
    options = f"patchworld: text attention {args.text_attention}, CPU attention {args.cpu_attention}"
    if args.profile:
        return profile(pairs, args.precisions, device, options)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {name: matmul_peak(dtypes[name], device) for name in args.precisions}
    print(f"patchworld vs peers, training steps (fwd + bwd + AdamW, {args.adamw}) on {device_name(device)}, "
          f"torch {torch.__version__}, {args.rounds} interleaved rounds; {options}")
    print("matmul peak: " + ", ".join(f"{name} {peak / 1e9:.1f} GFLOP/s" for name, peak in peaks.items()))
    print(f"\n{'pair':<6} {'prec':<5} {'contender':<20} {'params':>7} {'s/step':>8} {'ours/peer':>18} "
          f"{'GFLOP/step':>10} {'GFLOP/s':>8} {'MFU':>6} {'MiB':>7}")
    summary = []
    for pair in pairs:
        for precision in args.precisions:
            autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
            ours, peer, before_round = build_pair(pair, device, autocast)
            stats = {}
            for contender in (ours, peer):
                with held_memory(device) as memory:
                    timed(contender.step, device)  # warm-up (kernel choices, allocator)
                stats[contender.name] = [step_flops(contender.step), memory[0]]
            times = dict(zip((ours.name, peer.name), interleaved(ours.step, peer.step, args.rounds, device, before_round)))
            middle, low, high = paired_ratios(times[ours.name], times[peer.name])
            for contender in (ours, peer):
                flops, memory = stats[contender.name]
                seconds = statistics.median(times[contender.name])
                ratio = f"{middle:.2f} ({low:.2f}-{high:.2f})" if contender is ours else ""
                print(f"{pair:<6} {precision:<5} {contender.name:<20} {contender.parameters / 1e6:>6.2f}M {seconds:>8.3f} "
                      f"{ratio:>18} {flops / 1e9:>10.1f} {flops / seconds / 1e9:>8.1f} "
                      f"{flops / seconds / peaks[precision]:>6.1%} {memory:>7.0f}")
            summary.append(f"{pair} {precision} {middle:.2f}")
    print(f"\npatchworld / peer step time (median of paired rounds; below 1 = patchworld faster): {', '.join(summary)}; "
          f"{device_name(device)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
