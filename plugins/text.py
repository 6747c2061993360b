"""`TinyTextEncoder`: a small trainable caption encoder that needs no downloads.

Words are hashed into a fixed number of buckets (no vocabulary file), embedded with learned positions
and mixed by a few transformer blocks. A leading [BOS] token means even an empty caption (used for
classifier-free guidance) gives one valid token.
"""
from __future__ import annotations

import re
import zlib

import torch
from torch import nn

from patchworld import Conditioner
from patchworld.errors import require_positive

from .vit import init_transformer, transformer_blocks


class TinyTextEncoder(Conditioner):
    """Hashed word embeddings + a small transformer.

    Args:
        dim: output token width.
        depth: transformer blocks.
        heads: attention heads of each block.
        buckets: size of the hashed vocabulary.
        max_words: captions are truncated to this many words.
    """

    def __init__(self, dim: int = 128, depth: int = 2, heads: int = 4, buckets: int = 4096, max_words: int = 32):
        super().__init__()
        require_positive(type(self).__name__, dim=dim, buckets=buckets, max_words=max_words)
        self.dim, self.buckets, self.max_words = dim, buckets, max_words
        self.words = nn.Embedding(buckets + 1, dim)  # index `buckets` is [BOS]
        self.position = nn.Parameter(torch.zeros(1, max_words + 1, dim))
        self.blocks = transformer_blocks(dim, depth, heads, 4.0, owner=type(self).__name__)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.apply(init_transformer)
        nn.init.normal_(self.words.weight, std=0.02)
        nn.init.normal_(self.position, std=0.02)

    def token_ids(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> ids (B, L) and mask (B, L), L = 1 + longest caption (in words, capped)."""
        words = [re.findall(r"[a-z0-9]+", caption.lower())[: self.max_words] for caption in captions]
        length = 1 + max((len(w) for w in words), default=0)
        ids = torch.zeros(len(captions), length, dtype=torch.long)
        mask = torch.zeros(len(captions), length, dtype=torch.bool)
        for row, caption_words in enumerate(words):
            hashed = [self.buckets] + [zlib.crc32(w.encode()) % self.buckets for w in caption_words]
            ids[row, : len(hashed)] = torch.tensor(hashed)
            mask[row, : len(hashed)] = True
        return ids, mask

    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.token_ids(captions)
        ids, mask = ids.to(self.position.device), mask.to(self.position.device)
        x = self.words(ids) + self.position[:, : ids.shape[1]]  # (B, L, dim)
        attention_mask = mask[:, None, None, :]  # (B, 1, 1, L): padding is never attended to
        for block in self.blocks:
            x = x + block.drop_path1(block.ls1(block.attn(block.norm1(x), attn_mask=attention_mask)))
            x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return self.norm(x), mask  # (B, L, dim), (B, L)
