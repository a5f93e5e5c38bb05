"""The networks: ConvNeXt V1 and V2, isotropic ConvNeXt, the ResNet -> ConvNeXt roadmap, their layers and
fast kernels, the registry of every name, and parameter and MAC counting.

May import the runtime layer below it (the autotuner, precision, the machine), never the checkpoint,
training or deployment code above it. The registry builds models; loading weights into them is the
checkpoints layer's job, and `convnext.create_model(..., pretrained=True)` composes the two.
"""
from . import roadmap, variants  # noqa: F401  (register the model family and the roadmap steps)
