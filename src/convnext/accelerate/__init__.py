"""The accelerate layer: the fast ConvNeXt block, its exact kernels and the autotuner that measures
them, applied to a reference model by one visible transform (`accelerate`, undone by `unaccelerate`).

Between the models (the reference, nothing about machines) and training/deployment, which accelerate
by default. May import runtime and models, never checkpoints, training, deploy or commands.
"""
from .autotune import Autotuner
from .transform import accelerate, autotuner_of, describe, unaccelerate

__all__ = ["Autotuner", "accelerate", "autotuner_of", "describe", "unaccelerate"]
