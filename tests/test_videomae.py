"""VideoMAE + ViT + Pixels, the recipe family that proves the core."""
import glob

import torch
from safetensors.torch import load_file
from PIL import Image

from patchworld import WorldModel
from patchworld.data import SyntheticWorld
from patchworld_plugins import Pixels, VideoMAE, ViT
from patchworld_plugins.videomae import tube_mask


def tiny_model(mask_ratio=0.75):
    return WorldModel(Pixels(), VideoMAE(mask_ratio, predictor_dim=32, predictor_depth=1, predictor_heads=2),
                      ViT(dim=48, depth=2, heads=2, patch_size=(2, 8, 8)), warmup_steps=5)


def test_tube_mask_ratio_and_tubes():
    grid = (4, 6, 5)
    visible, masked = tube_mask(3, grid, 0.9, generator=torch.Generator().manual_seed(0))
    cells = 6 * 5
    keep = round(0.1 * cells)
    assert visible.shape == (3, 4 * keep) and masked.shape == (3, 4 * (cells - keep))
    for v, m in zip(visible, masked):
        assert sorted(torch.cat([v, m]).tolist()) == list(range(4 * cells))  # a partition of all tokens
        spatial = (v % cells).view(4, keep)
        assert (spatial == spatial[0]).all()  # the same cells in every frame: tubes through all time
    assert not torch.equal(visible[0], visible[1])  # per-sample masks


def test_encoder_sees_only_visible_tokens():
    model = tiny_model(mask_ratio=0.75)
    seen = []
    model.backbone.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[1]))
    model.objective.training_step(model, {"video": torch.zeros(2, 3, 4, 32, 32)})
    tokens = 2 * 4 * 4  # (T/2) * (H/8) * (W/8)
    assert seen == [tokens * 0.25]


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    model = tiny_model()
    batch = next(iter(SyntheticWorld(frames=2, size=(16, 16), batch_size=4, train_size=4).train_dataloader()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)

    def fixed_mask_loss():
        return model.objective.masked_errors(model, batch["video"], generator.manual_seed(0)).mean()

    first = fixed_mask_loss().item()
    for _ in range(200):
        optimizer.zero_grad()
        loss = fixed_mask_loss()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1 * first


def test_fit_checkpoint_then_predict_writes_features(run_cli, recipe_path, tmp_path):
    small = ["--model.backbone.init_args.depth", "1", "--model.backbone.init_args.dim", "48",
             "--data.init_args.frames", "4", "--data.init_args.size", "[32, 32]", "--data.init_args.batch_size", "4",
             "--data.init_args.predict_size", "3", "--trainer.enable_progress_bar", "false"]
    assert run_cli("fit", "--config", recipe_path("videomae-tiny"), *small, "--trainer.max_steps", "2",
                   "--trainer.limit_val_batches", "1", "--trainer.default_root_dir", tmp_path / "run") == 0
    checkpoint = glob.glob(str(tmp_path / "run/lightning_logs/version_0/checkpoints/last.ckpt"))
    assert checkpoint
    assert run_cli("predict", "--config", recipe_path("videomae-tiny"), *small, "--ckpt_path", checkpoint[0],
                   "--trainer.default_root_dir", tmp_path / "run") == 0
    files = sorted(glob.glob(str(tmp_path / "run/lightning_logs/*/predictions/*.safetensors")))
    assert len(files) == 3
    pictures = [f.replace(".safetensors", ".png") for f in files]  # something a person can look at
    assert all(Image.open(f).size == (4 * 32, 2 * 32) for f in pictures)  # 4 frames; input above features
    features = load_file(files[0])
    assert features["tokens"].shape == (2 * 4 * 4, 48) and features["positions"].shape == (32, 3)
    assert torch.allclose(features["pooled"], features["tokens"].mean(0))
    # the checkpoint restores the same frozen features, twice
    model = WorldModel.load_from_checkpoint(checkpoint[0])
    model.eval()
    video = SyntheticWorld(frames=4, size=(32, 32)).splits["predict"][0]["video"][None]
    first, second = model.features(video)[0], model.features(video)[0]
    assert torch.equal(first, second)
    assert torch.allclose(first[0].float(), features["tokens"], atol=5e-2)  # predict ran under bf16 autocast


def test_embedding_writer_draws_the_input_above_a_picture_of_its_features(tmp_path):
    """The PNG next to each safetensors file: input frames on top, the tokens' first 3 principal components
    on the token grid (positions (t, h, w)) below, upsampled to the frame size."""
    import numpy as np

    from patchworld_plugins import EmbeddingWriter

    world = tiny_model().eval()
    video = SyntheticWorld(frames=4, size=(32, 48)).splits["predict"][0]["video"][None]  # (1, 3, 4, 32, 48)
    batch = {"video": video, "index": torch.tensor([7])}
    with torch.no_grad():
        outputs = world.predict_step(batch, 0)
    assert outputs["positions"][0].amax(0).tolist() == [1, 3, 5]  # a 2 x 4 x 6 token grid
    written = EmbeddingWriter(strip_frames=3).write(outputs, batch, tmp_path, 0)
    assert sorted(p.name for p in written) == ["000007.png", "000007.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000007.png", "000007.safetensors"]  # no temp files
    picture = np.asarray(Image.open(tmp_path / "000007.png").convert("RGB")).astype(float)
    assert picture.shape == (2 * 32, 3 * 48, 3)  # strip_frames=3 took effect: 3 frames wide, 2 rows
    frames, features = picture[:32], picture[32:]
    expected = ((video[0, :, [0, 2, 3]].clamp(-1, 1) + 1) * 127.5).round().permute(2, 1, 3, 0).reshape(32, 3 * 48, 3)
    assert np.abs(frames - expected.numpy()).max() <= 1  # the input frames on top
    assert features.std() > 10 and len(np.unique(features.reshape(-1, 3), axis=0)) > 8  # features: not constant
    cell = features[:8, :8]  # one token (8 x 8 pixels) is one colour: the token grid, upsampled
    assert (cell == cell[0, 0]).all()
    assert not EmbeddingWriter(strip_frames=0).write(outputs, batch, tmp_path / "none", 0)[1:]  # 0: no PNG
