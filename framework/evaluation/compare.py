"""``patchworld compare``: the JEPA comparison — frozen probes, physics surprise and cost, in one command
(the study itself: `patchworld.evaluation.study`), and ``patchworld physics`` on a study's models.

    patchworld compare --config recipes/compare-tiny.yaml
    patchworld compare --config recipes/compare-tiny.yaml --output runs/my-study --probe.seeds 5

Run again on the same output, it reuses every model, feature set, physics score and ceiling an earlier run
saved there with the same settings (`--fresh` recomputes them). A model that fails is named in one line and
the study goes on; the command then exits with `FAILED_MODELS` (3) after writing every output.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.video_io import check_writable
from ..errors import PatchworldError
from ..parsing import debugging
from .ceiling import CeilingSpec
from .clips import DataSpec
from .contestants import Baseline, ModelSpec
from .physics import PhysicsSpec, as_spec, ranked_pairs, write_physics
from .report import write_outputs
from .study import ProbeSpec, Study


def parser():
    from jsonargparse import ActionConfigFile

    from ..parsing import CommandParser

    p = CommandParser(prog="patchworld compare", description=(__doc__ or "").split("\n\n")[0], default_env=False)
    p.add_argument("--config", action=ActionConfigFile, help="a study config (e.g. recipes/compare-tiny.yaml)")
    p.add_argument("--name", type=str, default="study", help="the study's title in the report")
    p.add_argument("--output", type=str, default="runs/compare", help="where report.md, results.json and plots go")
    p.add_argument("--models", type=list[ModelSpec], default=[], help="models to train (or load) and compare")
    p.add_argument("--baselines", type=list[Baseline], default=[], help="untrained feature sources")
    p.add_argument("--data", type=DataSpec, default=DataSpec(), help="clips for training and probes")
    p.add_argument("--probe", type=ProbeSpec, default=ProbeSpec(), help="the probe protocol")
    p.add_argument("--physics", type=PhysicsSpec, default=PhysicsSpec(),
                   help="matched physics sets and their scoring (as for patchworld physics)")
    p.add_argument("--tasks", type=dict[str, list[str]] | None, default=None,
                   help="task families {family: [task, ...]} (default appearance/motion/physics)")
    p.add_argument("--ceiling", type=CeilingSpec | None, default=CeilingSpec(),
                   help="the supervised ceiling every task is measured against (null: none, no gap closed)")
    p.add_argument("--keep_unlearnable", type=list[str], default=[],
                   help="tasks to keep although their ceiling is not above chance (reported, in no family average)")
    p.add_argument("--budget_flops", type=float | None, default=None,
                   help="training FLOPs per model (steps = budget / FLOPs per step); null = each recipe's max_steps")
    p.add_argument("--extract_batch_size", type=int, default=64, help="clips per batch for features and surprise")
    p.add_argument("--bf16", type=bool, default=True, help="bf16 autocast for feature extraction")
    p.add_argument("--device", type=str, default="cpu", help="cpu or cuda")
    p.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    p.add_argument("--threads", type=int | None, default=None,
                   help="torch intra-op threads for training, features and surprise (default: torch's choice)")
    p.add_argument("--probe_threads", type=int | None, default=None,
                   help="threads while training probes (default: torch's choice)")
    p.add_argument("--fresh", type=bool, default=False,
                   help="recompute everything instead of reusing what an earlier run saved under output")
    return p


#: the exit status of a study that wrote its outputs but lost some models (1 and 2: no outputs, see the CLI)
FAILED_MODELS = 3


def parse_study(argv: list[str]):
    """(parsed namespace with instantiated specs, the config as a plain dict) of a study's arguments."""
    from ..recipes import resolve_recipe_args
    from ..plugins import load_plugins

    p = parser()
    cfg = p.parse_args(resolve_recipe_args(argv, load_plugins()))  # --config may name a shipped study
    import yaml

    config = yaml.safe_load(p.dump(cfg, skip_none=False))
    init = p.instantiate_classes(cfg)
    if not init.models and not init.baselines:
        raise PatchworldError("compare: the config lists no models and no baselines (keys: models, baselines)")
    return init, config


def compare_command(argv: list[str]) -> int:
    """Compare world models' frozen features (probes), physics surprise and cost; writes report.md."""
    init, config = parse_study(argv)
    check_writable(Path(init.output) / "report.md")  # now, not after an hour of training
    results = run_study(init, config)
    print(f"wrote {Path(init.output) / 'report.md'} ({results['wall_time_s'] / 60:.1f} min)")
    failed = [name for name, entry in results["models"].items() if "failed" in entry]
    if failed:
        print(f"patchworld: error: compare: {len(failed)} of {len(results['models'])} models failed ({', '.join(failed)}); "
              f"the others' results are in {Path(init.output) / 'report.md'}", file=sys.stderr)
        return FAILED_MODELS
    return 0


def make_study(init) -> Study:
    import logging

    for name in ("pytorch_lightning", "lightning_fabric"):  # one model after another: no per-model banners
        logging.getLogger(name).setLevel(logging.WARNING)
    if init.threads:
        torch.set_num_threads(init.threads)
    return Study([_as(ModelSpec, m) for m in init.models], [_as(Baseline, b) for b in init.baselines],
                 _as(DataSpec, init.data), _as(ProbeSpec, init.probe), init.budget_flops, Path(init.output),
                 init.tasks, init.extract_batch_size, init.bf16, init.device, init.progress, init.probe_threads,
                 as_spec(init.physics), _as(CeilingSpec, init.ceiling) if init.ceiling is not None else None,
                 init.keep_unlearnable, init.fresh, debugging())


def run_study(init, config: dict | None = None) -> dict:
    """Run a parsed study config (the namespace `parser()` gives) and write its outputs."""
    study = make_study(init)
    results = study.run()
    results = {"name": init.name, "config": config, "families": study.families,
               "fractions": [str(f) for f in study.probe.fractions], "seeds": study.probe.seeds,
               "sweep": {"lr": study.probe.lrs, "weight_decay": study.probe.weight_decays},
               "budget_flops": init.budget_flops, "wall_time_s": results["wall_time_s"], "wall_time": results["wall_time"],
               "models": results["models"],
               "differences": results["differences"], "physics": results.get("physics"),
               "ceilings": results["ceilings"], "gap_closed": results["gap_closed"]}
    write_outputs(results, Path(init.output))
    return results


def study_physics_command(argv: list[str]) -> int:
    """``patchworld physics`` on a study: every model (its checkpoint, the one `compare` saved under the
    study's output with the same settings, or trained now to the budget and saved there), its random-init
    control and the baselines; surprise curves an earlier run of either command kept are reused."""
    if any(a.split("=")[0] == "--ckpt_path" for a in argv):
        raise PatchworldError("physics: --ckpt_path is for a recipe; a study's models name their own checkpoints "
                              "(models[i].checkpoint), or reuse the ones `patchworld compare` saved")
    init, _ = parse_study(argv)
    study = make_study(init)
    if study.physics is None:
        raise PatchworldError("physics: this study trains on your own videos; give physics.folder with matched sets")
    output = Path(init.output)
    check_writable(output / "physics.md")
    controls = {}
    bar = tqdm(study.entries(), desc="physics", unit="model", disable=not init.progress)
    for role, spec in bar:
        bar.set_description(f"physics [{spec.name}]")
        if getattr(spec, "features", None):
            continue
        model, _, _ = study.contestants.prepare(role, spec, bar)
        study.saved_physics(role, spec, model, bar)
        if role == "control":
            controls[spec.name[: -len("-random")]] = spec.name
    write_physics(study.physics.results(ranked_pairs(study.physics, controls)), output, init.name)
    print(f"wrote {output / 'physics.md'}")
    return 0


def _as(cls, value):
    """A dataclass instance from what jsonargparse gives (an instance or a namespace/dict)."""
    if isinstance(value, cls):
        return value
    return cls(**(value.as_dict() if hasattr(value, "as_dict") else dict(value)))
