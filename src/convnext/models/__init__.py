"""The networks: ConvNeXt V1 and V2, isotropic ConvNeXt, the ResNet -> ConvNeXt roadmap, their layers,
the registry of every name, and parameter and MAC counting. The reference and nothing else: each
block runs its own submodules in the paper's order; nothing here knows the machine (speed is the
accelerate layer's transform, above).

May import the runtime layer below it, never the accelerate, checkpoint, training or deployment code
above it. The registry builds models; loading weights into them is the
checkpoints layer's job, and `convnext.create_model(..., pretrained=True)` composes the two.
"""
from . import roadmap, variants  # noqa: F401  (register the model family and the roadmap steps)
