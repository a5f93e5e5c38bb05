"""ConvNeXt V1/V2 and isotropic models faithful to the papers, with the ResNet-50 -> ConvNeXt roadmap.

    >>> import convnext
    >>> model = convnext.create_model("convnext_tiny", num_classes=10)
"""
from . import variants  # noqa: F401  (registers the model family)
from .backbone import ConvNeXtBackbone
from .counting import count_macs, count_params
from .isotropic import ConvNeXtIsotropic
from .model import ConvNeXt, ConvNeXtV2
from .registry import create_model, list_models

__all__ = [
    "ConvNeXt", "ConvNeXtV2", "ConvNeXtIsotropic", "ConvNeXtBackbone",
    "create_model", "list_models", "count_params", "count_macs",
]
