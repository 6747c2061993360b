"""The first-party patchworld plugin, registered through the same ``patchworld`` entry-point group
(and the same hooks) as any third-party plugin."""
from importlib.resources import files

from patchworld import hookimpl
from patchworld.evaluation.compare import compare_command
from patchworld.data import SyntheticWorld, VideoFolder
from patchworld.data.actions import ActionWorld
from patchworld.evaluation.physics import physics_command

from .action_conditioned import ActionConditioned
from .adapters import LoRA
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
def patchworld_register_components():
    return [
        Pixels, VAE,  # tokenizers
        ViT, DiT,  # backbones
        VideoMAE, VJEPA, Flow, DDPM, VAEReconstruction, ActionConditioned,  # objectives
        VideoWriter, EmbeddingWriter,  # decoders
        TinyTextEncoder, MiniLM,  # conditioners
        SyntheticWorld, VideoFolder, Prompts, LatentCache, ActionWorld,  # datamodules
        StyleExpander,  # prompt expanders
        ProbeCaptioner,  # captioners
        LoRA,  # adapters
    ]


@hookimpl
def patchworld_register_recipe_dirs():
    return [str(files("patchworld_recipes"))]


@hookimpl
def patchworld_register_commands():
    return {"export": export_command, "adherence": adherence, "judge": judge, "compare": compare_command,
            "physics": physics_command, "cache": cache_command,
            "recaption": recaption,
            "plan": plan_command}
