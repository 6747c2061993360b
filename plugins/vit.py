"""`ViT`: a plain Vision Transformer over spacetime tubelets (timm blocks, 3D sin-cos positions).

Positions are added from the integer (t, h, w) coordinates of each token, so the encoder runs on any
grid size and on any subset of tokens (the visible tokens of a masked clip). `TokenPredictor` is the
narrow ViT that masked objectives (VideoMAE's decoder, V-JEPA's predictor) put after it.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from patchworld import Backbone, ComponentError, sincos_3d
from patchworld.errors import require_positive


def transformer_blocks(dim: int, depth: int, heads: int, mlp_ratio: float, drop_path: float = 0.0,
                       owner: str = "ViT") -> nn.ModuleList:
    """`depth` pre-norm timm blocks with stochastic depth rising linearly to `drop_path`; `owner` names the
    component (and its parameters) in the error for a width that the heads do not divide."""
    require_positive(owner, dim=dim, heads=heads, mlp_ratio=mlp_ratio)
    if depth < 0:
        raise ComponentError(f"{owner}.depth must be >= 0, got {depth}")
    if dim % heads:
        raise ComponentError(f"{owner}: dim {dim} must be a multiple of heads {heads} (each head gets dim/heads "
                             f"channels)")
    rates = torch.linspace(0, drop_path, depth).tolist() if depth else []
    return nn.ModuleList(
        Block(dim, heads, mlp_ratio, qkv_bias=True, drop_path=rate, norm_layer=functools.partial(nn.LayerNorm, eps=1e-6))
        for rate in rates
    )


#: the longest sequence for which bf16 training attention on a CPU takes the math SDPA backend (0: never)
MATH_ATTENTION_TOKENS = 2048


def attention_backend(x: torch.Tensor):
    """The SDPA backends for training attention over tokens `x` (B, N, D): on a CPU in bf16 (autocast or bf16
    tensors), for sequences up to `MATH_ATTENTION_TOKENS`, only the math one, whose backward was measured ~3x
    faster there than the fused kernel's (docs/performance.md), though it computes in fp32 (q, k, v and the
    scores cast up); anywhere else (a GPU, fp32, no gradient, long sequences) PyTorch's choice. Use it as a
    context around the attention calls."""
    autocast_bf16 = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
    bf16 = x.dtype == torch.bfloat16 or autocast_bf16
    if x.device.type == "cpu" and bf16 and torch.is_grad_enabled() and x.shape[-2] <= MATH_ATTENTION_TOKENS:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


def init_transformer(module: nn.Module) -> None:
    """timm's ViT initialisation: truncated-normal linear weights, zero biases, unit norms."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ViT(Backbone):
    """Plain ViT encoder over tubelet tokens.

    Args:
        dim: token width.
        depth: number of transformer blocks.
        heads: attention heads.
        mlp_ratio: MLP hidden width / dim.
        patch_size: tubelet size (t, h, w) on the tokenizer's latent grid.
        drop_path: maximum stochastic-depth rate.
    """

    def __init__(self, dim: int = 192, depth: int = 6, heads: int = 3, mlp_ratio: float = 4.0,
                 patch_size: int | tuple[int, int, int] = (2, 8, 8), drop_path: float = 0.0):
        super().__init__(dim, patch_size)
        self.blocks = transformer_blocks(dim, depth, heads, mlp_ratio, drop_path)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(init_transformer)

    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Features of `tokens` (B, N, D) at `positions` (B, N, 3); `depth` stops after that many blocks."""
        x = tokens + sincos_3d(positions, self.dim).to(tokens.dtype)  # (B, N, D)
        with attention_backend(x):
            for block in self.blocks[:depth]:
                x = block(x)  # (B, N, D)
        return self.norm(x)


class TokenPredictor(nn.Module):
    """Narrow ViT: context features + learned mask tokens at target positions -> predictions there.

    Args:
        in_dim: width of the context features.
        dim: the predictor's own (narrower) width.
        depth / heads / mlp_ratio: its transformer blocks.
        out_dim: width of each prediction.
    """

    def __init__(self, in_dim: int, dim: int, depth: int, heads: int, out_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(in_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = transformer_blocks(dim, depth, heads, mlp_ratio, owner="predictor (predictor_dim, predictor_heads)")
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, out_dim)
        self.apply(init_transformer)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(self, context: torch.Tensor, context_positions: torch.Tensor,
                target_positions: torch.Tensor, with_context: bool = False):
        """Predictions at the target positions (B, Nt, out_dim); with `with_context` also the predictions
        at the context positions (B, Nc, out_dim) (V-JEPA 2.1's dense loss reads both)."""
        # context: (B, Nc, in_dim); context_positions: (B, Nc, 3); target_positions: (B, Nt, 3)
        context = self.embed(context) + sincos_3d(context_positions, self.dim).to(context.dtype)  # (B, Nc, dim)
        queries = self.mask_token + sincos_3d(target_positions, self.dim).to(context.dtype)  # (B, Nt, dim)
        x = torch.cat([context, queries.expand(context.shape[0], -1, -1)], dim=1)  # (B, Nc + Nt, dim)
        with attention_backend(x):
            for block in self.blocks:
                x = block(x)
        nc = context.shape[1]
        if with_context:
            out = self.head(self.norm(x))  # (B, Nc + Nt, out_dim)
            return out[:, nc:], out[:, :nc]
        return self.head(self.norm(x[:, nc:]))  # (B, Nt, out_dim)
