"""The ConvNeXt family as data: every published size, plus tiny test variants.

Sizes from the papers (ConvNeXt §3-4 and Table 15; ConvNeXt V2 Table 1); the atto..nano V1 sizes are timm's.
"""
from .convnext import ConvNeXt, ConvNeXtV2
from .isotropic import ConvNeXtIsotropic
from .registry import register_model

SIZES = {  # name: (depths, dims)
    "atto": ((2, 2, 6, 2), (40, 80, 160, 320)),  # V1 3.7M / V2 3.7M params
    "femto": ((2, 2, 6, 2), (48, 96, 192, 384)),  # 5.2M
    "pico": ((2, 2, 6, 2), (64, 128, 256, 512)),  # 9.1M
    "nano": ((2, 2, 8, 2), (80, 160, 320, 640)),  # 15.6M
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),  # 28.6M
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),  # 50.2M
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),  # 88.6M
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),  # 197.8M
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),  # 350.2M
    "huge": ((3, 3, 27, 3), (352, 704, 1408, 2816)),  # V2 only, 660M
    "test": ((1, 1, 2, 1), (8, 16, 24, 32)),  # for fast tests; not a paper model
}
V1_SIZES = ("atto", "femto", "pico", "nano", "tiny", "small", "base", "large", "xlarge", "test")
V2_SIZES = ("atto", "femto", "pico", "nano", "tiny", "base", "large", "huge", "test")

ISOTROPIC = {  # name: (depth, dim, layer scale init); layer scale only on iso-L, as in the paper
    "small": (18, 384, 0.0),  # 22M
    "base": (18, 768, 0.0),  # 87M
    "large": (36, 1024, 1e-6),  # 306M
    "test": (2, 32, 0.0),
}

for size in V1_SIZES:
    depths, dims = SIZES[size]
    register_model(f"convnext_{size}", ConvNeXt, "convnext", depths=depths, dims=dims)
for size in V2_SIZES:
    depths, dims = SIZES[size]
    register_model(f"convnextv2_{size}", ConvNeXtV2, "convnextv2", depths=depths, dims=dims)
for size, (depth, dim, layer_scale) in ISOTROPIC.items():
    register_model(f"convnext_isotropic_{size}", ConvNeXtIsotropic, "isotropic",
                   depth=depth, dim=dim, layer_scale_init_value=layer_scale)
