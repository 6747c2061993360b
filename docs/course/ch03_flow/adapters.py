"""Chapter 3's functions plugged into the real objective: `CourseFlow`, the first-party `Flow` whose noising,
velocity target and sampler step are the student's `noised`, `velocity_target` and `euler_step`, and
`guided_model`, the sampler's network call with the student's `guided_velocity` (used by the grader and by
run.py)."""
from __future__ import annotations

from types import ModuleType
from typing import Callable

import torch

from patchworld_plugins.flow import Flow


class CourseFlow(Flow):
    """`Flow` (Euler sampler) on the chapter's functions; with correct functions it trains and samples
    exactly as the first-party one.

    Args:
        functions: the module with the chapter's functions (exercises.py or solutions.py).
        **kwargs: `Flow`'s arguments.
    """

    def __init__(self, functions: ModuleType, **kwargs):
        super().__init__(sampler="euler", **kwargs)
        # the functions themselves (a module object would not survive the deep copies Lightning makes)
        self.course_noised, self.course_target = functions.noised, functions.velocity_target
        self.course_step = functions.euler_step

    def noised(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # x0, noise: (B, c, t, h, w); t: (B,) or one time for all clips
        t = torch.as_tensor(t, device=x0.device, dtype=torch.float32).expand(x0.shape[0])  # (B,)
        return self.course_noised(x0, noise, t)

    def target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.course_target(x0, noise)  # (B, c, t, h, w)

    def step(self, x, prediction, t, t_next, model=None):
        return self.course_step(x, prediction.to(x.dtype), t, t_next)  # (B, c, t, h, w)


def guided_model(world, functions: ModuleType, captions: list[str], guidance: float) -> Callable:
    """The network call `Flow.generate` makes for text-to-video, with the chapter's `guided_velocity` combining
    the predictions with and without the captions: model(x (B, c, t, h, w), t 0-dim) -> (B, c, t, h, w)."""
    objective, B = world.objective, len(captions)
    conditional = objective.encode_captions(world, captions, B)  # tokens (B, L, D), mask (B, L)
    unconditional = objective.encode_captions(world, [""] * B, B)

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        times = t.expand(B)
        return functions.guided_velocity(objective.denoise(world, x, times, None, *conditional),
                                         objective.denoise(world, x, times, None, *unconditional), guidance)
    return model


def seeded_noise(world, shape: tuple[int, int, int], seeds: list[int]) -> torch.Tensor:
    """The starting noise `Flow.generate` draws for clips of pixel size (T, H, W): (B, c, t, h, w), clip b
    from seed seeds[b]."""
    latent = (world.tokenizer.latent_channels, *world.tokenizer.latent_grid(*shape))
    return torch.stack([torch.randn(latent, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
