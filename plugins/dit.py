"""`DiT`: a diffusion transformer over spacetime patches (adaLN-Zero blocks, 3D RoPE, text attention).

Each block is modulated by a conditioning vector (timestep embedding + pooled caption) through adaLN-Zero:
a per-block linear layer, initialised to zero, produces shift / scale / gate for every sub-layer, so every
block starts as the identity. Captions also enter through attention to the conditioner's tokens: a
cross-attention sub-layer in every block (``text_attention="cross"``, DiT/PixArt style), or, with
``text_attention="joint"``, as extra keys and values of every block's self-attention (CogVideoX / MMDiT
style attention over [video; text] with the text not updated), which drops the cross-attention's query and
output projections over every video token: 11% fewer FLOPs per training step at the peers config
(157.7 against 176.5 GFLOP; diffusers' CogVideoX 161.9; benchmarks/peers.py).
Positions are integer (t, h, w) coordinates rotated into queries and keys (`Rope3d`), so any grid works.

Frame conditioning: a token can be *clean* (its latent frames are given). Clean tokens are modulated with
timestep 0 while the others get the sampling timestep, and `embed(latents, clean_mask)` adds the clean
mask channel through a zero-initialised patch projection, so a freshly built model ignores it.

Attention is full 3D over all tokens by default; ``factorized=True`` alternates spatial attention (within
each frame) and temporal attention (along each spatial location) inside every block.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from einops import rearrange
from timm.layers import Mlp
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

from patchworld import Backbone, ComponentError, DataError, PatchEmbed3d, Rope3d
from patchworld.errors import require_positive

from .vit import attention_backend, init_transformer


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of continuous timesteps t (...,) in [0, 1] -> (..., dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = (t.float() * scale).unsqueeze(-1) * freqs  # (..., half)
    return F.pad(torch.cat([angles.cos(), angles.sin()], dim=-1), (0, dim - 2 * half))


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.addcmul(shift, x, 1 + scale)  # x * (1 + scale) + shift in one pass


class Attention(nn.Module):
    """Multi-head attention through SDPA with optional 3D RoPE on q/k; self-attention when `context` is None."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, qk_norm: bool = True):
        super().__init__()
        if dim % heads:
            raise ComponentError(f"DiT: dim {dim} must be a multiple of heads {heads} (each head gets dim/heads channels)")
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim or dim, 2 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=1e-6) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, rope: Rope3d | None = None,
                angles: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                joint: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, N, D); context: (B, L, Dc) or None; angles: (B, 1, N, R/2) (`Rope3d.rotations`);
        # joint: (B, L, D) tokens whose keys and values are appended, unrotated (joint text attention);
        # mask: (B, 1, 1, keys) True = attend
        source = x if context is None else context
        q = rearrange(self.q(x), "b n (h d) -> b h n d", h=self.heads)  # (B, heads, N, hd)
        k, v = rearrange(self.kv(source), "b l (two h d) -> two b h l d", two=2, h=self.heads)  # (B, heads, L, hd)
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None and angles is not None:
            q, k = rope(q, angles), rope(k, angles)
        if joint is not None:
            k_joint, v_joint = rearrange(self.kv(joint), "b l (two h d) -> two b h l d", two=2, h=self.heads)
            k, v = torch.cat([k, self.k_norm(k_joint)], dim=2), torch.cat([v, v_joint], dim=2)  # (B, heads, N+L, hd)
        with attention_backend(x):
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, heads, N, hd)
        return self.proj(rearrange(out, "b h n d -> b n (h d)"))


def select_per_token(values: torch.Tensor, clean: torch.Tensor | None) -> torch.Tensor:
    """values (B, 1, K) -> unchanged; (B, 2, K) = [noisy, clean] -> (B, N, K) picked by clean (B, N) bool."""
    if clean is None:
        return values
    return torch.where(clean[..., None], values[:, 1:2], values[:, 0:1])


class DiTBlock(nn.Module):
    """adaLN-Zero block: [spatial+temporal | full] self-attention, cross-attention to the caption, MLP; with
    `joint_text` no cross-attention: the caption's tokens are extra keys and values of the self-attention."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, context_dim: int | None, factorized: bool,
                 joint_text: bool = False):
        super().__init__()
        self.factorized = factorized
        self.self_attn = nn.ModuleList(Attention(dim, heads) for _ in range(2 if factorized else 1))
        self.self_norm = nn.ModuleList(nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6) for _ in self.self_attn)
        cross = context_dim is not None and not joint_text
        self.cross_attn = Attention(dim, heads, context_dim) if cross else None
        self.cross_norm = nn.LayerNorm(dim, eps=1e-6) if cross else None
        self.mlp_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=lambda: nn.GELU(approximate="tanh"))
        self.sublayers = len(self.self_attn) + 1  # each gets shift, scale, gate
        self.adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 3 * self.sublayers * dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor, clean: torch.Tensor | None, grid: tuple[int, int, int],
                rope: Rope3d, angles: torch.Tensor, context: torch.Tensor | None,
                context_mask: torch.Tensor | None, joint: torch.Tensor | None = None,
                joint_mask: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, N, D); cond: (B, 1, D), or (B, 2, D) = [noisy, clean] with clean (B, N) bool per token;
        # joint text attention: joint (B, L, D) caption tokens, joint_mask (B, 1, 1, N + L) True = attend
        mods = select_per_token(self.adaLN(cond), clean).chunk(3 * self.sublayers, dim=-1)  # each (B, 1 or N, D)
        for i, (attn, norm) in enumerate(zip(self.self_attn, self.self_norm)):
            shift, scale, gate = mods[3 * i : 3 * i + 3]
            h = modulate(norm(x), shift, scale)  # (B, N, D)
            if not self.factorized:
                h = attn(h, rope=rope, angles=angles, joint=joint, mask=joint_mask)
            else:
                h = self._factorized(attn, h, rope, angles, grid, spatial=i == 0)
            x = torch.addcmul(x, gate, h)  # x + gate * h
        if self.cross_attn is not None and context is not None:
            x = x + self.cross_attn(self.cross_norm(x), context=context, mask=context_mask)  # (B, N, D)
        shift, scale, gate = mods[-3:]
        return torch.addcmul(x, gate, self.mlp(modulate(self.mlp_norm(x), shift, scale)))  # x + gate * MLP

    @staticmethod
    def _factorized(attn: Attention, h: torch.Tensor, rope: Rope3d, angles: torch.Tensor, grid,
                    spatial: bool) -> torch.Tensor:
        t, hh, ww = grid
        pattern = "b (t s) d -> (b t) s d" if spatial else "b (t s) d -> (b s) t d"
        angle_pattern = "b o (t s) r -> (b t) o s r" if spatial else "b o (t s) r -> (b s) o t r"
        back = "(b t) s d -> b (t s) d" if spatial else "(b s) t d -> b (t s) d"
        seq = rearrange(h, pattern, t=t, s=hh * ww)  # (B*t, h*w, D) or (B*h*w, t, D)
        seq_angles = rearrange(angles.expand(h.shape[0], -1, -1, -1), angle_pattern, t=t, s=hh * ww)
        out = attn(seq, rope=rope, angles=seq_angles)
        return rearrange(out, back, t=t, s=hh * ww)  # (B, N, D)


class DiT(Backbone):
    """Diffusion transformer over spacetime patches of the tokenizer's latents.

    Args:
        dim: token width.
        depth: number of DiT blocks.
        heads: attention heads (head size dim/heads must be >= 6 for 3D RoPE).
        mlp_ratio: MLP hidden width / dim.
        patch_size: spacetime patch (t, h, w) on the latent grid.
        factorized: spatial-then-temporal attention in each block instead of full 3D attention.
        text_attention: how the caption's tokens reach the video tokens: ``"cross"``, a cross-attention
            sub-layer in every block; ``"joint"``, extra keys and values of every block's self-attention
            (fewer FLOPs; full 3D attention only).
        gradient_checkpointing: recompute block activations in the backward pass (less memory).
        rope_base: RoPE frequency base.
    """

    def __init__(self, dim: int = 256, depth: int = 6, heads: int = 4, mlp_ratio: float = 4.0,
                 patch_size: int | tuple[int, int, int] = (1, 4, 4), factorized: bool = False,
                 text_attention: Literal["cross", "joint"] = "cross", gradient_checkpointing: bool = False,
                 rope_base: float = 10000.0):
        super().__init__(dim, patch_size)
        require_positive("DiT", depth=depth, heads=heads, mlp_ratio=mlp_ratio)
        if text_attention not in ("cross", "joint"):
            raise ComponentError(f"DiT.text_attention {text_attention!r}; valid: 'cross', 'joint'")
        if text_attention == "joint" and factorized:
            raise ComponentError("DiT: text_attention 'joint' needs full 3D attention (factorized false): the caption "
                                 "joins one attention over all video tokens")
        self.depth, self.heads, self.mlp_ratio, self.factorized = depth, heads, mlp_ratio, factorized
        self.text_attention = text_attention
        self.gradient_checkpointing = gradient_checkpointing
        self.rope = Rope3d(dim // heads, rope_base)
        self.time_embed = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.rope_base = rope_base

    def bind(self, world) -> None:
        super().bind(world)  # patch_embed from the tokenizer's latent channels
        context_dim = world.conditioner.dim if world.conditioner is not None else None
        self.out_channels = self.in_channels
        self.mask_embed = PatchEmbed3d(1, self.dim, self.patch_size)  # clean-frame mask channel, zero-initialised
        self.context_pool = nn.Linear(context_dim, self.dim) if context_dim else None
        joint = context_dim is not None and self.text_attention == "joint"
        # joint text attention: the caption's tokens in the video tokens' width, once for every block
        self.context_proj = nn.Sequential(nn.Linear(context_dim, self.dim), nn.LayerNorm(self.dim, eps=1e-6)) if joint else None
        self.blocks = nn.ModuleList(
            DiTBlock(self.dim, self.heads, self.mlp_ratio, context_dim, self.factorized, joint) for _ in range(self.depth)
        )
        self.final_norm = nn.LayerNorm(self.dim, elementwise_affine=False, eps=1e-6)
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(self.dim, 2 * self.dim))
        self.final = nn.Linear(self.dim, self.out_channels * math.prod(self.patch_size))
        self._init_weights()

    def _init_weights(self) -> None:
        self.apply(lambda m: m.weight is None or init_transformer(m) if isinstance(m, nn.LayerNorm) else init_transformer(m))
        nn.init.normal_(self.time_embed[0].weight, std=0.02)
        nn.init.normal_(self.time_embed[2].weight, std=0.02)
        zero = [self.mask_embed.proj, self.final_adaLN[-1], self.final]
        zero += [block.adaLN[-1] for block in self.blocks]  # adaLN-Zero: every block starts as the identity
        zero += [block.cross_attn.proj for block in self.blocks if block.cross_attn is not None]
        for layer in zero:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def patch_values(self) -> int:
        """Values per output patch: latent channels x patch volume."""
        return self.out_channels * math.prod(self.patch_size)

    def embed(self, latents: torch.Tensor, clean_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (B, c, t, h, w) [+ clean_mask (B, t) bool per latent frame] -> tokens (B, N, D), positions (B, N, 3)."""
        tokens, positions = self.patch_embed(latents)
        if clean_mask is not None:
            channel = clean_mask.to(latents.dtype)[:, None, :, None, None].expand(-1, 1, -1, *latents.shape[3:])
            tokens = tokens + self.mask_embed(channel)[0]  # (B, N, D)
        return tokens, positions

    def conditioning(self, timesteps: torch.Tensor, context: torch.Tensor | None,
                     context_mask: torch.Tensor | None, with_clean: bool = False) -> torch.Tensor:
        """timesteps (B,) in [0, 1] + pooled caption -> adaLN conditioning (B, 1, D); with_clean appends
        the same for timestep 0: (B, 2, D) = [noisy, clean]."""
        if with_clean:
            timesteps = torch.stack([timesteps, torch.zeros_like(timesteps)], dim=1)  # (B, 2)
        else:
            timesteps = timesteps[:, None]  # (B, 1)
        cond = self.time_embed(timestep_embedding(timesteps, self.dim).to(self.time_embed[0].weight.dtype))
        if self.context_pool is not None and context is not None:
            weights = context_mask.to(context.dtype).unsqueeze(-1)  # (B, L, 1)
            pooled = (context * weights).sum(1) / weights.sum(1).clamp(min=1)  # (B, Dc)
            cond = cond + self.context_pool(pooled)[:, None]
        return cond

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, timesteps: torch.Tensor | None = None,
                context: torch.Tensor | None = None, context_mask: torch.Tensor | None = None,
                clean: torch.Tensor | None = None, depth: int | None = None, head: bool = False) -> torch.Tensor:
        """Hidden features (B, N, D) after `depth` blocks, or with ``head=True`` the output patches (B, N, P).

        tokens (B, N, D) at positions (B, N, 3); timesteps (B,) in [0, 1] (1 = noise; default 0 = clean);
        clean (B, N) bool marks given tokens, which are modulated with timestep 0; context (B, L, Dc)
        caption tokens with context_mask (B, L), True where real.
        """
        B, N, _ = tokens.shape
        if timesteps is None:
            timesteps = torch.zeros(B, device=tokens.device)
        grid = tuple(int(positions[0, :, axis].max()) + 1 for axis in range(3))
        if self.factorized and math.prod(grid) != N:
            raise DataError(f"factorized DiT attention needs a full token grid; got {N} tokens on grid {grid}")
        cond = self.conditioning(timesteps, context, context_mask, with_clean=clean is not None)  # (B, 1|2, D)
        angles = self.rope.rotations(positions)  # (B, 1, N, R/2) complex, once for every block
        mask = context_mask[:, None, None, :] if context_mask is not None else None  # (B, 1, 1, L)
        joint = joint_mask = None
        if self.context_proj is not None and context is not None:  # the blocks have no cross-attention then
            joint = self.context_proj(context)  # (B, L, D)
            if context_mask is not None:  # every video key, and the caption's real tokens
                video_keys = context_mask.new_ones(B, N)
                joint_mask = torch.cat([video_keys, context_mask], dim=1)[:, None, None, :]  # (B, 1, 1, N + L)
        extra = (context, mask, joint, joint_mask)
        x = tokens
        for block in self.blocks[:depth]:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, cond, clean, grid, self.rope, angles, *extra, use_reentrant=False)
            else:
                x = block(x, cond, clean, grid, self.rope, angles, *extra)  # (B, N, D)
        if not head:
            return self.final_norm(x)
        shift, scale = select_per_token(self.final_adaLN(cond), clean).chunk(2, dim=-1)
        return self.final(modulate(self.final_norm(x), shift, scale))  # (B, N, P)
