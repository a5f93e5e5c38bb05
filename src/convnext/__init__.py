"""ConvNeXt V1/V2 and isotropic models faithful to the papers, with the ResNet-50 -> ConvNeXt roadmap.

    >>> import convnext
    >>> model = convnext.create_model("convnext_tiny", num_classes=10)
"""
from . import roadmap, variants  # noqa: F401  (register the model family and the roadmap steps)
from .backbone import ConvNeXtBackbone
from .checkpoint_io import read_checkpoint, write_checkpoint
from .convert import CheckpointError, detect_format
from .counting import count_macs, count_params
from .inference import optimize_for_inference
from .isotropic import ConvNeXtIsotropic
from .model import ConvNeXt, ConvNeXtV2
from .registry import create_model, list_models
from .weights import load_pretrained, load_weights, save_pretrained

__all__ = [
    "ConvNeXt", "ConvNeXtV2", "ConvNeXtIsotropic", "ConvNeXtBackbone",
    "create_model", "list_models", "count_params", "count_macs",
    "load_weights", "load_pretrained", "save_pretrained", "read_checkpoint", "write_checkpoint",
    "detect_format", "CheckpointError", "optimize_for_inference",
]
