"""Performance plumbing (no timings asserted): `--threads` sets the compute threads of a run, a run cut short by
its wall-time budget says so with the steps it reached, and benchmarks/peers.py matches its configs."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from patchworld.runs import cut_short

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
MAE_TINY = ["--config", str(RECIPES / "videomae-tiny.yaml"), "--model.backbone.init_args.depth", "1",
            "--model.backbone.init_args.dim", "32", "--model.backbone.init_args.heads", "2",
            "--data.init_args.batch_size", "2", "--data.init_args.size", "[32, 32]", "--data.init_args.frames", "4",
            "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
            "--trainer.enable_checkpointing", "false", "--trainer.precision", "32-true"]


class ThreadsSeen(pl.Callback):
    """Records torch's thread count at every training step."""

    seen: list[int] = []

    def on_train_batch_end(self, *args) -> None:
        ThreadsSeen.seen.append(torch.get_num_threads())


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_sets_torch_threads_inside_the_run(run_cli, restore_threads):
    ThreadsSeen.seen = []
    assert run_cli("fit", *MAE_TINY, "--trainer.max_steps", "2", "--threads", "1",
                   "--trainer.callbacks+=test_performance.ThreadsSeen") == 0
    assert ThreadsSeen.seen == [1, 1]


def test_threads_below_one_is_refused_in_one_line(run_cli, capsys, restore_threads):
    assert run_cli("fit", *MAE_TINY, "--trainer.max_steps", "1", "--threads", "0") == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "patchworld: error: --threads must be at least 1, got 0"


class SlowSteps(pl.LightningModule):
    """A model whose every step takes ~0.2 s, so a 1-second budget ends training after a few steps."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        import time

        time.sleep(0.2)
        return self.layer(batch).pow(2).mean()

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.randn(10_000, 2), batch_size=2)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def trainer(**limits) -> pl.Trainer:
    return pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      accelerator="cpu", **limits)


def test_a_run_stopped_by_max_time_names_it_with_the_steps_reached():
    run = trainer(max_steps=1000, max_time="00:00:00:01")
    run.fit(SlowSteps())
    assert 0 < run.global_step < 1000
    assert cut_short(run) == (f"patchworld: training ended at step {run.global_step} of the 1000 planned: stopped by "
                              f"max_time (0:00:01 of training) after {run.global_step} of 1000 steps; this is not "
                              f"the fully trained model (raise --trainer.max_time)")


def test_a_run_stopped_by_max_epochs_names_it_and_a_finished_run_says_nothing():
    run = trainer(max_steps=1000, max_epochs=1, limit_train_batches=3)
    run.fit(SlowSteps())
    assert cut_short(run).endswith("stopped by max_epochs (1) after 3 of 1000 steps")
    finished = trainer(max_steps=2)
    finished.fit(SlowSteps())
    assert cut_short(finished) is None


def test_fit_prints_the_max_time_line_at_the_end(run_cli, capsys):
    assert run_cli("fit", *MAE_TINY, "--trainer.max_steps", "100000", "--trainer.max_time", "00:00:00:01") == 0
    last = capsys.readouterr().err.strip().splitlines()[-1]
    match = re.fullmatch(r"patchworld: training ended at step (\d+) of the 100000 planned: stopped by max_time "
                         r"\(0:00:0\d of training\) after (\d+) of 100000 steps; .*", last)
    assert match and match.group(1) == match.group(2) and int(match.group(1)) > 0


# ---- benchmarks/peers.py: the matched configs (built, not timed) -------------------------------------------
@pytest.fixture
def peers(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import peers

    return peers


def test_peers_pairs_see_512_tokens_per_clip(peers):
    for config in (peers.DIT, peers.VJEPA_CONFIG):
        assert peers.tokens_per_clip(config["frames"], config["size"], config["patch"]) == 512
    text = torch.randn(16, 64)
    tokens, mask = peers.FixedText(text)(["a", "b"])
    assert tokens.shape == (2, 16, 64) and bool(mask.all())


def test_casts_and_copies_counts_what_autocast_casts(peers):
    """`peers.py --profile`'s counts: a bf16-autocast step casts (its weights and inputs to bf16), the same step in
    fp32 casts nothing; a copy is counted apart from a cast."""
    from measure import casts_and_copies

    layer, x = torch.nn.Linear(64, 64), torch.randn(8, 64)

    def step(bf16: bool):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                layer(x).float().sum().backward()
            x.clone().copy_(x)
        return run

    bf16, fp32 = casts_and_copies(step(True)), casts_and_copies(step(False))
    assert bf16["casts"] >= 3 and bf16["cast Melem"] > 0 and "casts" not in fp32
    assert fp32["copies"] >= 1 and fp32["copy Melem"] >= 8 * 64 / 1e6 and fp32["ops"] > 0


def test_peers_dit_pair_has_the_same_shape(peers):
    pytest.importorskip("diffusers")
    off, c = torch.autocast("cpu", enabled=False), peers.DIT
    inputs = peers.dit_inputs("cpu")
    ours, theirs = peers.patchworld_dit(inputs, off).model.backbone, peers.cogvideox_dit(inputs, off).model.config
    assert (ours.dim, len(ours.blocks), ours.heads, ours.patch_size) == (c["dim"], c["depth"], c["heads"], c["patch"])
    assert (theirs.num_attention_heads * theirs.attention_head_dim, theirs.num_layers, theirs.num_attention_heads,
            (theirs.patch_size_t, theirs.patch_size, theirs.patch_size)) == (c["dim"], c["depth"], c["heads"], c["patch"])
    assert (theirs.text_embed_dim, theirs.max_text_seq_length) == (c["text_dim"], c["text_tokens"])


def test_peers_vjepa_pair_has_the_same_shape(peers):
    pytest.importorskip("pyjepa")
    off, c = torch.autocast("cpu", enabled=False), peers.VJEPA_CONFIG
    inputs = peers.vjepa_inputs("cpu")
    ours, new_masks = peers.patchworld_vjepa(inputs, off)
    new_masks()  # the masks both sides train on
    theirs = peers.pyjepa_vjepa(inputs, off).model
    encoder, predictor = theirs.encoder.backbone, theirs.predictor.backbone
    vit, our_predictor = ours.model.backbone, ours.model.objective.predictor
    assert (vit.dim, len(vit.blocks)) == (encoder.embed_dim, len(encoder.blocks)) == (c["dim"], c["depth"])
    assert vit.blocks[0].attn.num_heads == encoder.blocks[0].attn.num_heads == c["heads"]
    assert (our_predictor.dim, len(our_predictor.blocks)) == (predictor.predictor_embed.out_features,
                                                              len(predictor.predictor_blocks)) == (96, 6)
    assert [m.context.shape[1] > 0 and m.target.shape[1] > 0 for m in inputs["masks"]] == [True, True]


def test_peers_skip_a_missing_peer_in_one_line(peers, monkeypatch, capsys):
    monkeypatch.setattr(peers, "PEERS", {"dit": "no_such_package_pw", "vjepa": "no_such_package_pw"})
    monkeypatch.setattr(sys, "argv", ["peers.py"])
    assert peers.main() == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f'peers.py: skipping {pair}: no_such_package_pw is not installed (pip install -e ".[bench]")'
                     for pair in ("dit", "vjepa")]
