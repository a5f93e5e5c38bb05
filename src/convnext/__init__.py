"""ConvNeXt V1/V2 and isotropic models faithful to the papers, with the ResNet-50 -> ConvNeXt roadmap.

    >>> import convnext
    >>> model = convnext.create_model("convnext_tiny", num_classes=10)

The package is layered, each layer importing only those below it (docs/architecture.md):
`models` -> `accelerate` and `checkpoints` -> `training` and `deploy` -> `commands` and `cli`.
"""
from .accelerate import accelerate, unaccelerate
from .checkpoints.convert import CheckpointError, detect_format
from .checkpoints.dense import load_dense, save_dense
from .checkpoints.files import read_checkpoint, write_checkpoint
from .checkpoints.hub import create_model
from .checkpoints.weights import load_pretrained, load_weights, save_pretrained
from .deploy.inference import optimize_for_inference
from .models.backbone import ConvNeXtBackbone
from .models.convnext import ConvNeXt, ConvNeXtV2
from .models.counting import count_macs, count_params
from .models.detection import ConvNeXtFPN, fasterrcnn_convnext, maskrcnn_convnext
from .models.fcmae import FCMAE
from .models.isotropic import ConvNeXtIsotropic
from .models.registry import list_models
from .models.upernet import UperNet, upernet_convnext

__all__ = [
    "ConvNeXt", "ConvNeXtV2", "ConvNeXtIsotropic", "ConvNeXtBackbone",
    "create_model", "list_models", "accelerate", "unaccelerate", "count_params", "count_macs",
    "load_weights", "load_pretrained", "save_pretrained", "read_checkpoint", "write_checkpoint",
    "detect_format", "CheckpointError", "optimize_for_inference", "FCMAE",
    "ConvNeXtFPN", "maskrcnn_convnext", "fasterrcnn_convnext", "UperNet", "upernet_convnext", "load_dense", "save_dense",
]
