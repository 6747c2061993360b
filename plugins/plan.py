"""``patchworld plan``: plan toward goal images with an action-conditioned world model, in closed loop.

    patchworld plan runs/act-tiny --episodes 100            # a trained ActionConditioned run
    patchworld plan --dynamics exact --episodes 100         # the toy: true dynamics on the located agent
    patchworld plan runs/act-tiny --goal goal.png --start "[0.2, 0.3]"   # one episode toward your own goal image

Every episode (seeded starts and goals, `Arena.episode`) is run by the CEM planner (MPC: re-plan every
`--replan_every` actions) and by the baselines on the same starts and goals: random actions and the greedy
oracle that knows the true state. Written under --output: plan.md and plan.json (success within
`--tolerance` with a 95% interval, final distance, planning seconds per episode; plan.json also each
episode's start, goal, end, distance and seconds), episodes/NNN.mp4 (the
executed episode beside its goal image) and trajectories.png (planned vs executed paths).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from patchworld import DataError, PatchworldError
from patchworld.recipes import load_run
from patchworld.parsing import CommandParser
from patchworld.data.actions import ActionWorld, Arena, check_image
from patchworld.data.video_io import atomic_path, write_video
from patchworld.evaluation.planning import (CEM, Episode, ExactDynamics, LearnedDynamics, act_episode,
                                            oracle_policy, plan_episode, random_policy, summarise)

from .action_conditioned import ActionConditioned

TOY = ("exact", "blind")
BASELINES = ("random", "oracle")
SCALE = 4  # the videos' pixels per world pixel


def load_dynamics(checkpoint: str | None, toy: str | None) -> tuple[str, object, Arena]:
    """(row name, dynamics, arena) from a trained ActionConditioned run, or the toy dynamics `toy`."""
    if (checkpoint is None) == (toy is None):
        raise PatchworldError(f"patchworld plan: give a trained ActionConditioned run (CHECKPOINT) or --dynamics "
                              f"({' or '.join(TOY)}), not both")
    if toy is not None:
        arena = Arena()
        return f"cem:{toy}", ExactDynamics(arena, use_actions=toy == "exact"), arena
    world, data = load_run(checkpoint)
    if not isinstance(world.objective, ActionConditioned):
        raise PatchworldError(f"checkpoint {checkpoint!r} trained a {type(world.objective).__name__}, not an "
                              f"ActionConditioned world model: nothing in it predicts what actions do")
    if not isinstance(data, ActionWorld):
        raise PatchworldError(f"checkpoint {checkpoint!r} trained on {type(data).__name__}; planning runs in ActionWorld")
    return f"cem:{Path(checkpoint).name}", LearnedDynamics(world), data.arena


def read_goal(path: str, arena: Arena) -> torch.Tensor:
    """A goal image file as a frame (3, 1, H, W) in [-1, 1] of the world's size."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)  # (H, W, 3)
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"--goal {path!r}: not a readable image ({error})") from None
    return check_image(torch.from_numpy(image).permute(2, 0, 1) / 127.5 - 1, arena, f"--goal {path!r}")


def episode_video(arena: Arena, episode: Episode, goal_image: torch.Tensor) -> torch.Tensor:
    """(3, T, SCALE*H, SCALE*(2W + 1)): the executed episode on the left, the goal image on the right."""
    frames = arena.render(episode.positions)  # (3, T, H, W)
    divider = torch.ones(3, frames.shape[1], arena.height, 1)
    video = torch.cat([frames, divider, goal_image.expand_as(frames)], dim=-1)
    return video.repeat_interleave(SCALE, dim=-2).repeat_interleave(SCALE, dim=-1)


def markdown(rows: dict[str, dict], settings: dict) -> str:
    lines = [f"Planning in ActionWorld: {settings['episodes']} episodes (seed {settings['seed']}), "
             f"{settings['steps']} actions each, success = ending within {settings['tolerance']} of the goal "
             f"(frame = 1); CEM {settings['samples']} samples x {settings['iterations']} iterations, horizon "
             f"{settings['horizon']}, re-planning every {settings['replan_every']} actions.", "",
             "| policy | success | 95% interval | final distance | seconds / episode |", "|---|---|---|---|---|"]
    for name, row in rows.items():
        s = row["success"]
        lines.append(f"| {name} | {s['value']:.2f} | [{s['low']:.2f}, {s['high']:.2f}] | {row['final_distance']:.3f} | "
                     f"{row['seconds_per_episode']:.3f} |")
    return "\n".join(lines) + "\n"


def plot_trajectories(episodes: list[Episode], arena: Arena, tolerance: float, path: Path, count: int = 6) -> Path:
    """Planned (each plan's intended path, dashed) vs executed (solid) paths of the first `count` episodes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = episodes[:count]
    figure, axes = plt.subplots(1, len(shown), figsize=(2.4 * len(shown), 2.6), squeeze=False)
    for ax, episode in zip(axes[0], shown):
        for plan in episode.plans:
            ax.plot(*plan.T, "--", color="tab:orange", lw=0.8, alpha=0.7)
        ax.plot(*episode.positions.T, "-o", color="tab:blue", ms=2.5, lw=1.2)
        ax.plot(*episode.positions[0], "s", color="black", ms=5)
        ax.add_patch(plt.Circle(episode.goal.tolist(), tolerance, color="tab:green", alpha=0.35))
        ax.set(xlim=(0, 1), ylim=(1, 0), aspect="equal", xticks=[], yticks=[],
               title=f"{'reached' if episode.distance() < tolerance else 'missed'} ({episode.distance():.2f})")
    axes[0][0].plot([], [], "--", color="tab:orange", label="planned")
    axes[0][0].plot([], [], "-", color="tab:blue", label="executed")
    axes[0][0].plot([], [], "s", color="black", label="start")
    axes[0][0].plot([], [], "o", color="tab:green", alpha=0.35, label="goal ± tolerance")
    axes[0][0].legend(fontsize=6, loc="lower left")
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=90, format="png", bbox_inches="tight")
    plt.close(figure)
    return path


def plan_command(argv: list[str]) -> int:
    """Plan toward goal images with an action-conditioned world model (CEM, closed loop); success table and mp4s."""
    parser = CommandParser(prog="patchworld plan", description=__doc__)
    parser.add_argument("checkpoint", type=str | None, nargs="?", default=None,
                        help="a trained ActionConditioned run (its directory or a .ckpt)")
    parser.add_argument("--dynamics", type=str | None, default=None,
                        help=f"instead of a checkpoint, a toy model: {' or '.join(TOY)} (true dynamics, or ignoring actions)")
    parser.add_argument("--episodes", type=int, default=100, help="seeded episodes (starts and goals)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the episodes and of the planner's draws")
    parser.add_argument("--steps", type=int, default=16, help="actions per episode")
    parser.add_argument("--horizon", type=int, default=6, help="actions per plan")
    parser.add_argument("--replan_every", type=int, default=2, help="actions executed before re-planning")
    parser.add_argument("--samples", type=int, default=128, help="CEM candidates per iteration")
    parser.add_argument("--elites", type=int, default=16, help="CEM candidates kept per iteration")
    parser.add_argument("--iterations", type=int, default=3, help="CEM iterations per plan")
    parser.add_argument("--tolerance", type=float, default=0.1, help="success: the agent ends this close to the goal")
    parser.add_argument("--baselines", type=list[str], default=list(BASELINES),
                        help=f"model-free policies run on the same episodes: {', '.join(BASELINES)}")
    parser.add_argument("--videos", type=int | None, default=None, help="mp4s of the first N episodes (default: all)")
    parser.add_argument("--goal", type=str | None, default=None, help="one episode toward this goal image (PNG, the world's size)")
    parser.add_argument("--start", type=list[float] | None, default=None, help="with --goal: the start position [X, Y] (fractions of the frame, y down)")
    parser.add_argument("--output", type=str, default="runs/plan", help="folder for plan.md/json, episodes/, trajectories.png")
    args = parser.parse_args(argv)
    cem = CEM(args.horizon, args.samples, args.elites, args.iterations)
    unknown = sorted(set(args.baselines) - set(BASELINES))
    if unknown or args.dynamics not in (None, *TOY):
        raise PatchworldError(f"patchworld plan: unknown {'baselines ' + str(unknown) if unknown else '--dynamics ' + repr(args.dynamics)}; "
                              f"valid baselines: {', '.join(BASELINES)}; valid --dynamics: {', '.join(TOY)}")
    if min(args.episodes, args.steps, args.horizon, args.replan_every, args.elites) < 1 or args.elites > args.samples:
        raise PatchworldError("patchworld plan: --episodes, --steps, --horizon, --replan_every and --elites must be "
                              "at least 1, and --elites at most --samples")
    if args.replan_every > args.horizon:
        raise PatchworldError(f"patchworld plan: --replan_every {args.replan_every} exceeds --horizon {args.horizon}")
    name, dynamics, arena = load_dynamics(args.checkpoint, args.dynamics)
    if args.goal is not None:
        if args.start is None or len(args.start) != 2:
            raise PatchworldError("patchworld plan: --goal needs --start '[X, Y]' (the agent's start, in [0, 1])")
        goal_image = read_goal(args.goal, arena)
        episodes = [(torch.tensor(args.start, dtype=torch.float32).clamp(arena.radius, 1 - arena.radius),
                     goal_image, arena.locate(goal_image[None])[0, 0])]
    else:
        episodes = [(start, arena.render(goal[None]), goal) for start, goal in
                    (arena.episode(args.seed, index) for index in range(args.episodes))]

    generator = torch.Generator().manual_seed(args.seed)
    runs = {name: [plan_episode(dynamics, arena, start, image, goal, cem, args.steps, args.replan_every, generator)
                   for start, image, goal in episodes]}
    for baseline in args.baselines:
        runs[baseline] = [act_episode(random_policy(arena, args.seed, index) if baseline == "random" else
                                      oracle_policy(arena, goal), arena, start, goal, args.steps)
                          for index, (start, _, goal) in enumerate(episodes)]

    output = Path(args.output)
    (output / "episodes").mkdir(parents=True, exist_ok=True)
    for index, (episode, (_, image, _)) in enumerate(zip(runs[name], episodes)):
        if args.videos is None or index < args.videos:
            write_video(output / "episodes" / f"{index:03d}.mp4", episode_video(arena, episode, image), fps=4)
    plot_trajectories(runs[name], arena, args.tolerance, output / "trajectories.png")
    settings = {key: value for key, value in vars(args).items() if key not in ("baselines", "output")} | {"episodes": len(episodes)}
    rows = {policy: summarise(episodes_run, args.tolerance) for policy, episodes_run in runs.items()}
    table = markdown(rows, settings)
    with atomic_path(output / "plan.json") as tmp:
        tmp.write_text(json.dumps({"settings": settings, "policies": rows, "episodes": {
            policy: [{"start": episode.positions[0].tolist(), "goal": episode.goal.tolist(), "end": episode.positions[-1].tolist(),
                      "distance": episode.distance(), "seconds": episode.seconds} for episode in episodes_run]
            for policy, episodes_run in runs.items()}}, indent=2))
    with atomic_path(output / "plan.md") as tmp:
        tmp.write_text(table)
    print(table, end="")
    print(f"wrote {output / 'plan.md'}, plan.json, trajectories.png and {len(list((output / 'episodes').glob('*.mp4')))} mp4s")
    return 0
