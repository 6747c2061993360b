"""The prediction writer: hands each predicted batch to the recipe's decoder."""
from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info

from .contracts import check_written


class DecoderWriter(BasePredictionWriter):
    """Calls `decoder.write(outputs, batch, directory, batch_index)` after every predict batch."""

    def __init__(self, decoder):
        super().__init__(write_interval="batch")
        self.decoder = decoder
        self.written: list = []

    def write_on_batch_end(self, trainer, pl_module, prediction: Any, batch_indices, batch, batch_idx, dataloader_idx=0):
        directory = pl_module.prediction_dir()
        directory.mkdir(parents=True, exist_ok=True)
        written = self.decoder.write(prediction, batch, directory, batch_idx)
        self.written += check_written(self.decoder, written, directory)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.written:
            rank_zero_info(f"wrote {len(self.written)} files under {pl_module.prediction_dir()}")
