"""The causal 3D KL video VAE: causality, shapes, size errors, overfitting, latent statistics, the
reconstruction objective through the CLI, using a trained VAE frozen through its checkpoint, export."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from patchworld import DataError, PatchworldError, WorldModel
from patchworld.cli import main
from patchworld_plugins.export import export_part
from patchworld_plugins.vae import VAE, VAEReconstruction, psnr, ssim
from patchworld_plugins.videomae import VideoMAE
from patchworld_plugins.vit import ViT

TINY = {"latent_channels": 4, "width": 8, "multipliers": [1, 2], "blocks": 1}
TINY_ARGS = ["--model.tokenizer.init_args.width=8", "--model.tokenizer.init_args.multipliers=[1, 2, 2]",
             "--model.tokenizer.init_args.blocks=[0, 1, 0]", "--model.objective.init_args.crop=null",
             "--data.init_args.frames=5", "--data.init_args.size=[16, 16]", "--data.init_args.batch_size=2",
             "--data.init_args.val_size=2", "--data.init_args.predict_size=2", "--trainer.max_steps=3",
             "--trainer.val_check_interval=3", "--trainer.limit_val_batches=1", "--trainer.precision=32-true"]


def randomized(vae: VAE) -> VAE:
    """Give the zero-initialised last convolutions of each block random weights, so every path matters."""
    with torch.no_grad():
        for name, param in vae.named_parameters():
            if "conv2" in name:
                param.normal_(0, 0.05)
    return vae


def test_frame_zero_is_encoded_and_decoded_on_its_own():
    torch.manual_seed(0)
    vae = randomized(VAE(compression=(2, 4, 4), **TINY)).eval()
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    changed = video.clone()
    changed[:, :, 1:] = torch.rand_like(changed[:, :, 1:]) * 2 - 1
    with torch.no_grad():
        latents, latents_changed = vae.encode(video), vae.encode(changed)  # (1, 4, 5, 4, 4)
        assert torch.equal(latents[:, :, 0], latents_changed[:, :, 0])
        assert not torch.allclose(latents[:, :, 1:], latents_changed[:, :, 1:])
        # the decoder is causal too: pixel frame 0 comes from latent frame 0 alone
        latents_changed[:, :, 0] = latents[:, :, 0]
        assert torch.equal(vae.decode(latents)[:, :, 0], vae.decode(latents_changed)[:, :, 0])
        # and an image is exactly the first frame of a video
        assert torch.allclose(vae.encode(video[:, :, :1]), latents[:, :, :1], atol=1e-5)


@pytest.mark.parametrize("compression, size, grid", [
    ((2, 4, 4), (1, 16, 16), (1, 4, 4)),       # an image
    ((2, 4, 4), (9, 16, 24), (5, 4, 6)),       # widescreen
    ((2, 4, 4), (5, 32, 8), (3, 8, 2)),        # vertical
    ((4, 8, 8), (9, 16, 32), (3, 2, 4)),
    ((4, 8, 8), (1, 8, 8), (1, 1, 1)),
])
def test_encode_decode_shapes(compression, size, grid):
    vae = VAE(compression=compression, **TINY)
    video = torch.rand(2, 3, *size) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(video)
        assert latents.shape == (2, 4, *grid)
        assert vae.decode(latents).shape == video.shape


def test_sizes_that_do_not_fit_say_which_sizes_are_valid():
    vae = VAE(compression=(2, 4, 4), **TINY)
    with pytest.raises(DataError, match=r"T = 1 \+ k\*2 \(1, 3, 5, \.\.\.\), H a multiple of 4"):
        vae.encode(torch.zeros(1, 3, 4, 16, 16))  # even frame count
    with pytest.raises(DataError, match=r"\(T, H, W\)=\(5, 18, 16\)"):
        vae.encode(torch.zeros(1, 3, 5, 18, 16))
    with pytest.raises(DataError, match="1-frame video"):
        vae.encode(torch.zeros(1, 3, 16, 16))  # an image without its time axis
    with pytest.raises(PatchworldError, match="powers of two"):
        VAE(compression=(3, 4, 4))


@pytest.mark.parametrize("factor", [(2, 4, 4), (1, 2, 2), (4, 2, 1)])
def test_shortcut_reshapes_are_causal_inverses(factor):
    from patchworld_plugins.vae import channels_to_space, space_to_channels

    video = torch.rand(2, 3, 1 + 2 * factor[0], 8, 8)
    packed = space_to_channels(video, factor)  # (2, 3*st*sh*sw, 3, 8/sh, 8/sw)
    assert packed.shape == (2, 3 * factor[0] * factor[1] * factor[2], 3, 8 // factor[1], 8 // factor[2])
    assert torch.equal(channels_to_space(packed, factor), video)
    # latent frame 0 holds pixel frame 0 alone (repeated), as the causal convolutions do
    assert torch.equal(packed[:, :, 0], space_to_channels(video[:, :, :1], factor)[:, :, 0])


def test_a_tiny_vae_overfits_one_clip():
    from patchworld.data.synthetic import SyntheticClips
    from patchworld.precision import cpu_bf16_is_fast

    torch.manual_seed(0)
    clip = SyntheticClips(1, "train", frames=5, size=(32, 32))[0]["video"][None]  # (1, 3, 5, 32, 32)
    vae = VAE(compression=(2, 4, 4), latent_channels=8, width=16, multipliers=[1, 2], blocks=[0, 1])
    world = WorldModel(vae, VAEReconstruction(kl_weight=1e-6))
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    for step in range(400):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cpu_bf16_is_fast()):  # emulated bf16 is ~30x slower
            out = world.objective.training_step(world, {"video": clip})
        out["loss"].backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)  # as the vae-tiny recipe does
        optimizer.step()
        optimizer.zero_grad()
        if step % 50 == 49:
            with torch.no_grad():
                score = psnr(vae.decode(vae.encode(clip)), clip).item()
            if score > 30:
                break
    assert score > 30, f"PSNR {score:.1f} dB after {step + 1} steps"


def test_latent_statistics_make_encode_unit_variance_and_decode_invert_them():
    torch.manual_seed(0)
    vae = randomized(VAE(compression=(2, 4, 4), **TINY)).eval()
    video = torch.rand(4, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        mean, _ = vae.posterior(video)
        for _ in range(3):
            vae.update_latent_stats(mean * 5 + 3)  # pretend the raw latents are off-centre and wide
        assert torch.allclose(vae.latent_shift, mean.mean((0, 2, 3, 4)) * 5 + 3, atol=1e-4)
        normalised = (mean * 5 + 3 - vae.latent_shift.view(1, -1, 1, 1, 1)) / vae.latent_scale.view(1, -1, 1, 1, 1)
        per_channel = normalised.transpose(0, 1).flatten(1)
        assert torch.allclose(per_channel.mean(1), torch.zeros(4), atol=1e-4)
        assert torch.allclose(per_channel.std(1), torch.ones(4), atol=1e-3)
        assert torch.allclose(vae.decode(vae.encode(video)), vae.decode_raw(vae.posterior(video)[0]), atol=1e-4)


def test_metrics():
    video = torch.rand(2, 3, 3, 16, 16) * 2 - 1
    assert ssim(video, video).item() == pytest.approx(1.0, abs=1e-4)
    assert psnr(video + 0.02, video).mean().item() == pytest.approx(10 * torch.log10(torch.tensor(4 / 0.02**2)).item(), abs=0.1)
    assert VAE(compression=(2, 4, 4), latent_channels=8).compression_ratio(9, 64, 64) == pytest.approx(3 * 9 * 64 * 64 / (8 * 5 * 16 * 16))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A 3-step fit of vae-tiny (shrunk) through the CLI; its last checkpoint and run directory."""
    root = tmp_path_factory.mktemp("vae")
    code = main(["fit", "--config", "vae-tiny", f"--trainer.default_root_dir={root}", *TINY_ARGS])
    assert code == 0
    return next(root.rglob("last.ckpt")), root


def test_fit_logs_reconstruction_metrics_and_predict_writes_pairs(fitted):
    checkpoint, root = fitted
    metrics = (next(root.rglob("metrics.csv"))).read_text().splitlines()[0].split(",")
    assert {"val/psnr", "val/ssim", "val/compression", "val/kl", "val/latent_std"} <= set(metrics)
    code = main(["predict", "--config", "vae-tiny", f"--trainer.default_root_dir={root / 'predict'}",
                 f"--ckpt_path={checkpoint}", *TINY_ARGS])
    assert code == 0
    written = sorted(p.name for p in (root / "predict").rglob("*.mp4"))
    assert {"000000_original.mp4", "000000_reconstruction.mp4", "000000_side_by_side.mp4"} <= set(written)


def test_checkpoint_gives_a_frozen_tokenizer_for_another_recipe(fitted, tmp_path):
    checkpoint, _ = fitted
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    vae = VAE(checkpoint=str(checkpoint))  # the architecture comes from the checkpoint
    assert vae.config["width"] == 8 and vae.latent_channels == 8
    assert torch.equal(vae.latent_scale, state["tokenizer.latent_scale"])
    assert int(vae.stats_updates) == 3  # statistics were measured during the fit
    world = WorldModel(vae, VideoMAE(predictor_dim=16, predictor_depth=1, predictor_heads=2),
                       backbone=ViT(dim=24, depth=1, heads=2, patch_size=(1, 2, 2)))
    world.train()
    assert not vae.training and all(not p.requires_grad for p in vae.parameters())
    before = {k: v.clone() for k, v in vae.state_dict().items() if isinstance(v, torch.Tensor)}
    optimizer = torch.optim.AdamW([p for p in world.parameters() if p.requires_grad], lr=1e-2)
    loss = world.objective.training_step(world, {"video": torch.rand(2, 3, 5, 16, 16) * 2 - 1})["loss"]
    loss.backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in vae.state_dict().items() if k in before)
    # and through the CLI: the VideoMAE recipe with the VAE as its tokenizer
    code = main(["fit", "--config", "videomae-tiny", f"--trainer.default_root_dir={tmp_path}",
                 "--model.tokenizer=VAE", f"--model.tokenizer.init_args.checkpoint={checkpoint}",
                 "--model.backbone.init_args.dim=24", "--model.backbone.init_args.depth=1",
                 "--model.backbone.init_args.heads=2", "--model.backbone.init_args.patch_size=[1, 2, 2]",
                 "--data.init_args.frames=5", "--data.init_args.size=[16, 16]", "--data.init_args.batch_size=2",
                 "--data.init_args.val_size=2", "--trainer.max_steps=2", "--trainer.limit_val_batches=0",
                 "--trainer.precision=32-true"])
    assert code == 0
    downstream = torch.load(next(tmp_path.rglob("*.ckpt")), map_location="cpu", weights_only=False)["state_dict"]
    assert torch.equal(downstream["tokenizer.decoder.conv_out.weight"], state["tokenizer.decoder.conv_out.weight"])


def test_export_to_safetensors_and_load_it(fitted, tmp_path, capsys):
    checkpoint, _ = fitted
    output = tmp_path / "vae.safetensors"
    assert main(["export", str(checkpoint), "--output", str(output)]) == 0
    assert "wrote tokenizer weights" in capsys.readouterr().out
    with safe_open(str(output), framework="pt") as file:
        keys, metadata = set(file.keys()), file.metadata()
    assert {"encoder.conv_in.weight", "latent_shift", "latent_scale"} <= keys
    assert json.loads(metadata["extra_state"])["compression"] == [2, 4, 4]
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        from_ckpt, from_file = VAE(checkpoint=str(checkpoint)), VAE(checkpoint=str(output))
        assert torch.equal(from_ckpt.encode(video), from_file.encode(video))
    # other parts and bad requests
    assert main(["export", str(checkpoint), "--part", "decoder", "--output", str(tmp_path / "x.safetensors")]) == 2
    assert "no 'decoder' weights; the parts it holds: tokenizer" in capsys.readouterr().err
    with pytest.raises(PatchworldError, match="does not exist"):
        export_part(tmp_path / "missing.ckpt", output)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vae.safetensors"]  # nothing half-written


# ---- tiled / chunked encode and decode -------------------------------------------------------------
def clips(count: int = 2, frames: int = 9, size: tuple[int, int] = (32, 48)) -> torch.Tensor:
    from patchworld.data.synthetic import SyntheticClips

    data = SyntheticClips(count, "val", frames=frames, size=size, object_scale=2.0)
    return torch.stack([data[i]["video"] for i in range(count)])  # (count, 3, frames, H, W)


def test_time_chunks_give_the_whole_clip_and_keep_frame_zero_on_its_own():
    torch.manual_seed(0)
    vae = randomized(VAE(compression=(2, 4, 4), **TINY)).eval()
    video = torch.rand(2, 3, 17, 16, 24) * 2 - 1
    with torch.no_grad():
        latents, decoded = vae.encode(video), vae.decode(vae.encode(video))  # (2, 4, 9, 4, 6), (2, 3, 17, 16, 24)
        for frames in (2, 4, 6):  # 6: the last chunk is shorter
            vae.tile_frames = frames
            assert torch.allclose(vae.encode(video), latents, atol=1e-5)
            assert torch.allclose(vae.decode(latents), decoded, atol=1e-5)
        changed = video.clone()
        changed[:, :, 1:] = torch.rand_like(changed[:, :, 1:]) * 2 - 1
        assert torch.equal(vae.encode(changed)[:, :, 0], vae.encode(video)[:, :, 0])


def test_spatial_tiles_blend_to_the_whole_frame_within_tolerance():
    """Tiles see zero padding at their edges and their own normalisation statistics, so they are close, not
    equal: on SyntheticWorld clips the tiled decode stays above 30 dB PSNR of the untiled one (the cost
    against the original clips is measured by benchmarks/vae_tiling.py, docs/data.md)."""
    torch.manual_seed(0)
    vae = VAE(compression=(2, 4, 4), **TINY).eval()
    video = clips()
    with torch.no_grad():
        latents = vae.encode(video)
        decoded = vae.decode(latents).clamp(-1, 1)
        vae.tile_size, vae.tile_overlap = 32, 16
        assert psnr(vae.decode(latents), decoded).min() > 30
        assert (vae.encode(video) - latents).pow(2).mean() < 0.05 * latents.pow(2).mean()


def test_tiles_cover_every_pixel_once_after_blending():
    from patchworld_plugins.vae import blend_weights, tile_spans

    for length, tile, overlap, step in [(64, 32, 16, 4), (100, 48, 16, 4), (40, 40, 8, 8), (96, 40, 8, 8)]:
        spans = tile_spans(length, tile, overlap, step)
        assert spans[0][0] == 0 and spans[-1][1] == length
        assert all(stop - start == min(tile, length) and start % step == 0 for start, stop in spans)
        assert all(a[1] - b[0] >= overlap for a, b in zip(spans, spans[1:]))  # neighbours share >= overlap
        total = torch.zeros(length // step)
        for (start, stop), weight in zip(spans, blend_weights(spans, step)):
            total[start // step : stop // step] += weight
        assert torch.allclose(total, torch.ones_like(total))  # the ramps cross-fade to 1 everywhere


def test_tile_options_bound_the_work_of_every_call():
    """The option takes effect and bounds memory: every encoder and decoder call sees at most a tile of
    `tile_size` pixels and a chunk of 1 + `tile_frames` frames, whatever the clip's size."""
    vae = VAE(compression=(2, 4, 4), **TINY).eval()
    shapes = []
    for part in (vae.encoder, vae.decoder):
        part.register_forward_pre_hook(lambda module, args: shapes.append((module, tuple(args[0].shape[2:]))))
    video = torch.rand(1, 3, 17, 32, 48) * 2 - 1
    with torch.no_grad():
        vae.decode(vae.encode(video))
        assert [s for _, s in shapes] == [(17, 32, 48), (9, 8, 12)]  # untiled: the whole clip
        shapes.clear()
        vae.tile_frames, vae.tile_size, vae.tile_overlap = 8, 24, 8
        vae.decode(vae.encode(video))
    encoder = [s for m, s in shapes if m is vae.encoder]
    decoder = [s for m, s in shapes if m is vae.decoder]
    assert max(t for t, _, _ in encoder) == 9
    assert all(t <= 9 and h <= 24 and w <= 24 for t, h, w in encoder)
    assert all(t <= 5 and h <= 6 and w <= 6 for t, h, w in decoder)
    assert len(encoder) == len(decoder) == 2 * 3 * 2  # 2 x 3 tiles of 24 px, 2 chunks of 17 frames each


@pytest.mark.parametrize("options, message", [
    ({"tile_frames": 3}, "tile_frames=3 must be a positive multiple of the temporal compression 2"),
    ({"tile_size": 30}, "tile_size=30 must be a positive multiple of the spatial compression 4"),
    ({"tile_size": 32, "tile_overlap": 32}, "tile_overlap=32 must be a multiple of the spatial compression 4 and "
                                           "smaller than tile_size=32"),
])
def test_bad_tile_options_say_what_is_valid(options, message):
    with pytest.raises(PatchworldError, match=message):
        VAE(compression=(2, 4, 4), **TINY, **options)
