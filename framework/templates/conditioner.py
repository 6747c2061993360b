"""`MyConditioner`: a bag of hashed words, no vocabulary file and no download: each word picks one of
`buckets` learned embeddings, plus a learned position; a leading [BOS] token keeps "" non-empty."""
from __future__ import annotations

import re
import zlib

import torch
from torch import nn

import patchworld


class MyConditioner(patchworld.Conditioner):
    """Hashed word embeddings with learned positions: captions -> tokens (B, L, dim), mask (B, L).

    Args:
        dim: token width.
        buckets: size of the hashed vocabulary.
        max_words: captions are cut to this many words.
    """

    def __init__(self, dim: int = 64, buckets: int = 1024, max_words: int = 16):
        super().__init__()
        self.dim, self.buckets, self.max_words = dim, buckets, max_words
        self.words = nn.Embedding(buckets + 1, dim)  # index `buckets` is [BOS]
        self.position = nn.Parameter(torch.randn(max_words + 1, dim) * 0.02)

    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        words = [re.findall(r"[a-z0-9]+", caption.lower())[: self.max_words] for caption in captions]
        length = 1 + max(len(w) for w in words)  # L: [BOS] + the longest caption
        ids = torch.zeros(len(captions), length, dtype=torch.long)
        mask = torch.zeros(len(captions), length, dtype=torch.bool)
        for row, caption_words in enumerate(words):
            hashed = [self.buckets] + [zlib.crc32(w.encode()) % self.buckets for w in caption_words]
            ids[row, : len(hashed)], mask[row, : len(hashed)] = torch.tensor(hashed), True
        ids, mask = ids.to(self.position.device), mask.to(self.position.device)
        tokens = self.words(ids) + self.position[:length]  # (B, L, dim); padding is masked, never mixed in
        return tokens, mask  # (B, L, dim), (B, L)
