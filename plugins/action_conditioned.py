"""`ActionConditioned`: predict what an action does, in a frozen encoder's feature space (V-JEPA 2-AC style).

Each frame of a clip is embedded on its own by a frozen encoder into z_t, a grid of n feature tokens of D
values. The encoder is either a trained patchworld run (``encoder: RUN``: its objective's `features`, e.g.
V-JEPA's target encoder or VideoMAE's encoder, the image repeated over the frames its tubelets need) or the
recipe's own tokenizer (and backbone, if it has one) frozen at its seeded initialisation: raw pixels cut into
`pixel_patch` patches with `Pixels` and no backbone, a random-init encoder with a `ViT`.

A predictor (`ActionPredictor`) maps (z_0..z_t, a_0..a_t) to the next embedding z_{t+1}: a transformer over
every token of every frame, block-causal over time (a token of frame t sees all tokens of frames <= t), the
action embedded and added to the tokens of the frame it is taken at. Two losses, mean squared error:

* teacher-forced: every next embedding predicted from the true past ones, all steps at once;
* rollout: from the first frame alone, `rollout_steps` steps predicted autoregressively (each prediction fed
  back in), compared with the true embeddings, so errors that compound over a plan are trained away.

`use_actions: false` hides the actions from the predictor (zeros): the action-blind control whose held-out
loss says how much the actions explain. Planning with a trained model: ``patchworld plan`` (docs/worlds.md).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from patchworld import DataError, Objective, PatchworldError, grid_positions, patchify, sincos_3d
from patchworld.patches import check_divisible
from patchworld.recipes import load_run
from patchworld.evaluation.contestants import fit_frames

from .vit import init_transformer


class ActionPredictor(nn.Module):
    """Block-causal transformer over the frames' tokens: every token of frame t sees the tokens of frames <= t
    and predicts its own token in frame t + 1 (as its value now plus a change).

    Args:
        features: D, the values of one token of a frame's embedding.
        action_dim: values of one action (embedded and added to every token of the frame it is taken at).
        dim / depth / heads: the transformer's width, blocks and attention heads.
    """

    def __init__(self, features: int, action_dim: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.dim = dim
        self.embed = nn.Linear(features, dim)
        self.action = nn.Linear(action_dim, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, features)
        self.apply(init_transformer)
        nn.init.zeros_(self.head.weight)  # starts by predicting "nothing changes"

    def tokens(self, z: torch.Tensor, actions: torch.Tensor, places: torch.Tensor, first: int = 0) -> torch.Tensor:
        """Input tokens (B, t, n, dim) of frames first..first + t - 1: embedding + action + (t, h, w) position."""
        # z: (B, t, n, D); actions: (B, t, A), action i taken at frame i; places: (n, 2) integer (h, w)
        t, n = z.shape[1], z.shape[2]
        times = torch.arange(first, first + t, device=z.device)[:, None, None].expand(t, n, 1)
        positions = torch.cat([times, places.expand(t, n, 2)], dim=-1)  # (t, n, 3)
        return self.embed(z) + self.action(actions)[:, :, None] + sincos_3d(positions, self.dim).to(z.dtype)

    def attend(self, x: torch.Tensor) -> torch.Tensor:
        """Block-causal transformer: tokens (B, t, n, dim) -> outputs (B, t, n, dim)."""
        t, n = x.shape[1], x.shape[2]
        frame = torch.arange(t, device=x.device).repeat_interleave(n)  # (t*n,) each token's frame
        blocked = torch.zeros(t * n, t * n, device=x.device, dtype=x.dtype)
        blocked.masked_fill_(frame[None, :] > frame[:, None], float("-inf"))  # no token sees a later frame
        return self.norm(self.blocks(x.flatten(1, 2), mask=blocked)).unflatten(1, (t, n))

    def forward(self, z: torch.Tensor, actions: torch.Tensor, places: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: z (B, t, n, D) = z_0..z_{t-1}, actions (B, t, A) -> predictions (B, t, n, D) of z_1..z_t."""
        return z + self.head(self.attend(self.tokens(z, actions, places)))

    def rollout(self, start: torch.Tensor, actions: torch.Tensor, places: torch.Tensor) -> torch.Tensor:
        """Autoregressive: start (B, n, D) and actions (B, h, A) -> predictions (B, h, n, D), each fed back in as
        the next step's input. Block-causal attention lets earlier frames' keys and values be kept (a cache per
        layer), so each step runs the transformer on the newest frame's tokens only."""
        z, caches, predictions = start[:, None], [[] for _ in self.blocks.layers], []
        for step in range(actions.shape[1]):
            x = self.tokens(z, actions[:, step : step + 1], places, first=step)[:, 0]  # (B, n, dim)
            for layer, cache in zip(self.blocks.layers, caches):
                x = newest_frame(layer, x, cache)
            z = z + self.head(self.norm(x))[:, None]  # (B, 1, n, D)
            predictions.append(z)
        return torch.cat(predictions, dim=1)


def newest_frame(layer: nn.TransformerEncoderLayer, x: torch.Tensor, cache: list) -> torch.Tensor:
    """One pre-norm encoder `layer` on the newest frame's tokens x (B, n, dim), which attend to each other and
    to the keys and values of the earlier frames in `cache` (this frame's are appended): the same outputs as the
    layer on every frame under the block-causal mask, for the newest frame."""
    attention = layer.self_attn
    query, key, value = F.linear(layer.norm1(x), attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    cache.append((key, value))
    heads = lambda t: t.unflatten(-1, (attention.num_heads, -1)).transpose(1, 2)  # noqa: E731  (B, heads, N, hd)
    keys, values = torch.cat([k for k, _ in cache], dim=1), torch.cat([v for _, v in cache], dim=1)  # (B, t*n, dim)
    mixed = F.scaled_dot_product_attention(heads(query), heads(keys), heads(values))  # (B, heads, n, hd)
    x = x + attention.out_proj(mixed.transpose(1, 2).flatten(2))  # (B, n, dim)
    return x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))


class ActionConditioned(Objective):
    """Action-conditioned next-embedding prediction on a frozen encoder, teacher-forced plus rollout losses.

    Args:
        frame_size: (H, W) of the frames (the datamodule's size; the embedding's length depends on it).
        encoder: a trained patchworld run (its directory or a .ckpt) whose frozen `features` embed each frame;
            None: the recipe's own tokenizer (+ backbone), frozen at its seeded initialisation.
        action_dim: values per action (the batches' "actions" (B, T - 1, action_dim)).
        dim: the predictor's width.
        depth: the predictor's transformer blocks.
        heads: the predictor's attention heads.
        rollout_steps: steps of the autoregressive rollout loss (0: teacher forcing only).
        rollout_weight: weight of the rollout loss (the teacher-forced loss has weight 1).
        use_actions: False hides the actions from the predictor (the action-blind control).
        pixel_patch: without a backbone, the latents are cut into patches of this many pixels a side (raw
            pixels: a token per 8 x 8 patch by default).
    """

    def __init__(self, frame_size: tuple[int, int] = (32, 32), encoder: str | None = None, action_dim: int = 2,
                 dim: int = 64, depth: int = 2, heads: int = 4, rollout_steps: int = 2, rollout_weight: float = 1.0,
                 use_actions: bool = True, pixel_patch: int = 8):
        super().__init__()
        if rollout_steps < 0 or action_dim < 1:
            raise PatchworldError(f"ActionConditioned needs rollout_steps >= 0 and action_dim >= 1, got "
                                  f"{rollout_steps} and {action_dim}")
        self.frame_size, self.encoder_path, self.action_dim = tuple(int(n) for n in frame_size), encoder, action_dim
        self.dim, self.depth, self.heads = dim, depth, heads
        self.rollout_steps, self.rollout_weight, self.use_actions = rollout_steps, rollout_weight, use_actions
        self.pixel_patch = pixel_patch

    def bind(self, world) -> None:
        self.encoder = None
        if self.encoder_path is not None:
            try:
                self.encoder = load_run(self.encoder_path)[0].requires_grad_(False).eval()
            except PatchworldError as error:
                raise PatchworldError(f"ActionConditioned.encoder: {error}") from None
        else:  # the recipe's own parts, frozen at their seeded initialisation
            for part in (world.tokenizer, world.backbone):
                if part is not None:
                    part.requires_grad_(False)
        source = self.encoder if self.encoder is not None else world
        self.image_frames = image_frames(source, *self.frame_size)
        tokens, places = self.frame_tokens(world, torch.zeros(1, 3, 1, *self.frame_size))
        self.register_buffer("places", places, persistent=False)  # (n, 2) each token's (h, w)
        self.predictor = ActionPredictor(tokens.shape[-1], self.action_dim, self.dim, self.depth, self.heads)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()  # frozen: no dropout, no batch statistics
        return self

    # ---- the model a planner uses -------------------------------------------------------------------
    @torch.no_grad()
    def frame_tokens(self, world, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The frozen encoder's tokens of still images (N, 3, 1, H, W): (N, n, D) float, and their (h, w) (n, 2)."""
        images = images.expand(-1, -1, self.image_frames, -1, -1)  # repeated over the frames one token row needs
        if self.encoder is not None:
            tokens, positions = self.encoder.features(images)  # (N, n, D), (N, n, 3)
        elif world.backbone is not None:
            tokens, positions = self.features(world, images)  # the recipe's frozen encoder
        else:  # e.g. raw pixels: patches of the latents
            latents = world.tokenizer.encode(images)[:, :, :1]  # (N, c, 1, h, w)
            patch = (1, self.pixel_patch, self.pixel_patch)
            check_divisible(tuple(latents.shape[2:]), patch, f"latent grid (ActionConditioned.pixel_patch {self.pixel_patch})")
            grid = [n // p for n, p in zip(latents.shape[2:], patch)]
            tokens, positions = patchify(latents, patch), grid_positions(*grid, device=latents.device)[None]
        return tokens.float(), positions[0, :, 1:]

    def embed(self, world, video: torch.Tensor) -> torch.Tensor:
        """Each frame's embedding: video (B, 3, T, H, W) -> tokens (B, T, n, D), every frame encoded on its own."""
        B, _, T, H, W = video.shape
        if (H, W) != self.frame_size:
            raise DataError(f"ActionConditioned: frames of {H}x{W}, but frame_size is {self.frame_size[0]}x"
                            f"{self.frame_size[1]} (the size its predictor was built for)")
        tokens, _ = self.frame_tokens(world, video.transpose(1, 2).flatten(0, 1)[:, :, None])  # (B*T, n, D)
        return tokens.unflatten(0, (B, T))

    def shown(self, actions: torch.Tensor) -> torch.Tensor:
        """The actions as the predictor sees them: zeros for the action-blind control."""
        return actions if self.use_actions else torch.zeros_like(actions)

    def predict_next(self, z: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Teacher-forced predictions (B, t, n, D) of z_1..z_t from z_0..z_{t-1} (B, t, n, D) and actions (B, t, A)."""
        return self.predictor(z, self.shown(actions), self.places)

    def rollout(self, start: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Embeddings (B, h, n, D) predicted autoregressively from start (B, n, D) under actions (B, h, A)."""
        return self.predictor.rollout(start, self.shown(actions), self.places)

    # ---- training -----------------------------------------------------------------------------------
    def checked_actions(self, batch: dict) -> torch.Tensor:
        """The batch's actions (B, T - 1, A), or a one-line DataError saying what is wrong with them."""
        actions = batch.get("actions")
        frames = batch["video"].shape[2]
        if actions is None:
            raise DataError("ActionConditioned needs batches with \"actions\" (B, T - 1, action_dim): use a "
                            "datamodule with actions, e.g. ActionWorld")
        if actions.dim() != 3 or actions.shape[1] != frames - 1 or actions.shape[2] != self.action_dim:
            raise DataError(f"ActionConditioned: the batch's actions have shape {tuple(actions.shape)}, expected "
                            f"(B, {frames - 1}, {self.action_dim}): one action of action_dim={self.action_dim} "
                            f"values between consecutive frames")
        return actions.float()

    def losses(self, world, batch: dict) -> dict[str, torch.Tensor]:
        actions = self.checked_actions(batch)  # (B, T - 1, A)
        z = self.embed(world, batch["video"])  # (B, T, n, D)
        teacher = F.mse_loss(self.predict_next(z[:, :-1], actions), z[:, 1:])
        result = {"teacher_forcing": teacher, "loss": teacher}
        steps = min(self.rollout_steps, actions.shape[1])
        if steps:
            result["rollout"] = F.mse_loss(self.rollout(z[:, 0], actions[:, :steps]), z[:, 1 : steps + 1])
            result["loss"] = teacher + self.rollout_weight * result["rollout"]
        return result

    def training_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        return self.losses(world, batch)

    def validation_step(self, world, batch: dict) -> dict[str, torch.Tensor]:
        return self.losses(world, batch)


def image_frames(model, height: int, width: int) -> int:
    """The fewest frames a still image must be repeated over for `model` (a WorldModel) to encode it."""
    for frames in range(1, 17):
        try:
            if fit_frames(model, frames, height, width) == frames:
                return frames
        except PatchworldError:
            continue
    raise PatchworldError(f"ActionConditioned: the encoder takes no clip of up to 16 frames at {height}x{width}")
