"""The first-party patchworld plugin, registered through the same ``patchworld`` entry-point group
(and the same hooks) as any third-party plugin."""
from importlib.resources import files

from patchworld import hookimpl
from patchworld.evaluation.compare import compare_command
from patchworld.data import SyntheticWorld, VideoFolder
from patchworld.data.actions import ActionWorld
from patchworld.evaluation.physics import physics_command

from .action_conditioned import ActionConditioned
from .adapters import LoRA  # noqa: F401  (an Adapter: --model.adapter LoRA)
from .adherence import adherence
from .judge import judge
from .captions import ProbeCaptioner, StyleExpander, recaption
from .cache import LatentCache, cache_command
from .ddpm import DDPM
from .dit import DiT
from .export import export_command
from .flow import Flow
from .minilm import MiniLM
from .plan import plan_command
from .pixels import Pixels
from .prompts import Prompts
from .text import TinyTextEncoder
from .vae import VAE, VAEReconstruction
from .videomae import VideoMAE
from .vjepa import VJEPA
from .vit import ViT
from .writers import EmbeddingWriter, VideoWriter


@hookimpl
def patchworld_register_tokenizers():
    return [Pixels, VAE]


@hookimpl
def patchworld_register_backbones():
    return [ViT, DiT]


@hookimpl
def patchworld_register_objectives():
    return [VideoMAE, VJEPA, Flow, DDPM, VAEReconstruction,
            ActionConditioned]


@hookimpl
def patchworld_register_decoders():
    return [VideoWriter, EmbeddingWriter]


@hookimpl
def patchworld_register_conditioners():
    return [TinyTextEncoder, MiniLM]


@hookimpl
def patchworld_register_datamodules():
    return [SyntheticWorld, VideoFolder, Prompts, LatentCache,
            ActionWorld]


@hookimpl
def patchworld_register_prompt_expanders():
    return [StyleExpander]


@hookimpl
def patchworld_register_captioners():
    return [ProbeCaptioner]


@hookimpl
def patchworld_register_recipe_dirs():
    return [str(files("patchworld_recipes"))]


@hookimpl
def patchworld_register_commands():
    return {"export": export_command, "adherence": adherence, "judge": judge, "compare": compare_command,
            "physics": physics_command, "cache": cache_command,
            "recaption": recaption,
            "plan": plan_command}
