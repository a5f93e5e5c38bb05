"""Parameter names of the four ConvNeXt checkpoint formats, as tables of rules over our names.

Our names are the official ones (facebookresearch/ConvNeXt and ConvNeXt-V2), so "official" needs no
rules. Each rule maps one of our keys to the peer's key and, where the peer stores the tensor in
another shape, says which shape. The peers' names come from their own code: timm's and torchvision's
convnext.py, and transformers' ConvNeXt and ConvNeXt V2 conversion scripts.
"""
import re
from dataclasses import dataclass
from typing import Callable

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Rule:
    pattern: str  # regex, full match over our key
    target: str | Callable[[re.Match], str]  # the peer's key: a re.sub template or a function of the match
    shape: Callable[[Shape], Shape] | None = None  # the peer's shape given ours, when it differs

    def apply(self, key: str) -> str | None:
        match = re.fullmatch(self.pattern, key)
        if match is None:
            return None
        return self.target(match) if callable(self.target) else match.expand(self.target)


def as_1x1_conv(shape: Shape) -> Shape:  # Linear (out, in) -> 1x1 conv (out, in, 1, 1)
    return (*shape, 1, 1)


def flat(shape: Shape) -> Shape:  # GRN (1, 1, 1, C) -> (C,)
    return (shape[-1],)


def channel_first(shape: Shape) -> Shape:  # layer scale (C,) -> (C, 1, 1)
    return (*shape, 1, 1)


BLOCK = r"stages\.(\d)\.(\d+)"  # stages.<stage>.<block>


def timm_rules(conv_mlp: bool) -> list[Rule]:
    """timm `convnext.py`; the small timm variants (atto..nano) use 1x1 convs for the MLP (`conv_mlp`)."""
    mlp_shape = as_1x1_conv if conv_mlp else None
    return [
        Rule(r"downsample_layers\.0\.(\d)\.(weight|bias)", r"stem.\1.\2"),
        Rule(r"downsample_layers\.(\d)\.(\d)\.(weight|bias)", r"stages.\1.downsample.\2.\3"),
        Rule(BLOCK + r"\.dwconv\.(weight|bias)", r"stages.\1.blocks.\2.conv_dw.\3"),
        Rule(BLOCK + r"\.norm\.(weight|bias)", r"stages.\1.blocks.\2.norm.\3"),
        Rule(BLOCK + r"\.pwconv1\.weight", r"stages.\1.blocks.\2.mlp.fc1.weight", mlp_shape),
        Rule(BLOCK + r"\.pwconv1\.bias", r"stages.\1.blocks.\2.mlp.fc1.bias"),
        Rule(BLOCK + r"\.pwconv2\.weight", r"stages.\1.blocks.\2.mlp.fc2.weight", mlp_shape),
        Rule(BLOCK + r"\.pwconv2\.bias", r"stages.\1.blocks.\2.mlp.fc2.bias"),
        Rule(BLOCK + r"\.gamma", r"stages.\1.blocks.\2.gamma"),
        Rule(BLOCK + r"\.grn\.gamma", r"stages.\1.blocks.\2.mlp.grn.weight", flat),
        Rule(BLOCK + r"\.grn\.beta", r"stages.\1.blocks.\2.mlp.grn.bias", flat),
        Rule(r"norm\.(weight|bias)", r"head.norm.\1"),
        Rule(r"head\.(weight|bias)", r"head.fc.\1"),
    ]


def _features(stage: str) -> str:  # torchvision keeps stages at the odd indices of `features`
    return f"features.{2 * int(stage) + 1}"


TORCHVISION_RULES = [
    Rule(r"downsample_layers\.0\.(\d)\.(weight|bias)", r"features.0.\1.\2"),
    Rule(r"downsample_layers\.(\d)\.(\d)\.(weight|bias)", lambda m: f"features.{2 * int(m[1])}.{m[2]}.{m[3]}"),
    Rule(BLOCK + r"\.dwconv\.(weight|bias)", lambda m: f"{_features(m[1])}.{m[2]}.block.0.{m[3]}"),
    Rule(BLOCK + r"\.norm\.(weight|bias)", lambda m: f"{_features(m[1])}.{m[2]}.block.2.{m[3]}"),
    Rule(BLOCK + r"\.pwconv1\.(weight|bias)", lambda m: f"{_features(m[1])}.{m[2]}.block.3.{m[3]}"),
    Rule(BLOCK + r"\.pwconv2\.(weight|bias)", lambda m: f"{_features(m[1])}.{m[2]}.block.5.{m[3]}"),
    Rule(BLOCK + r"\.gamma", lambda m: f"{_features(m[1])}.{m[2]}.layer_scale", channel_first),
    Rule(r"norm\.(weight|bias)", r"classifier.0.\1"),
    Rule(r"head\.(weight|bias)", r"classifier.2.\1"),
]


_TV_BN = {"norm1": "bn1", "norm2": "bn2", "norm3": "bn3"}
RESNET_TORCHVISION_RULES = [  # the roadmap's ResNet steps (0 and 1) <-> torchvision.models.resnet50/101/152
    Rule(r"downsample_layers\.0\.0\.(.+)", r"conv1.\1"),
    Rule(r"downsample_layers\.0\.1\.(.+)", r"bn1.\1"),
    Rule(BLOCK + r"\.(conv[123])\.(.+)", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.{m[3]}.{m[4]}"),
    Rule(BLOCK + r"\.(norm[123])\.(.+)", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.{_TV_BN[m[3]]}.{m[4]}"),
    Rule(BLOCK + r"\.shortcut\.([01])\.(.+)", lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.{m[3]}.{m[4]}"),
    Rule(r"head\.(weight|bias)", r"fc.\1"),
]


def hf_rules(prefix: str) -> list[Rule]:
    """transformers `ConvNext*`/`ConvNextV2*`: prefix "convnext" or "convnextv2"."""
    layer = prefix + r".encoder.stages.\1.layers.\2"
    return [
        Rule(r"downsample_layers\.0\.0\.(weight|bias)", prefix + r".embeddings.patch_embeddings.\1"),
        Rule(r"downsample_layers\.0\.1\.(weight|bias)", prefix + r".embeddings.layernorm.\1"),
        Rule(r"downsample_layers\.(\d)\.(\d)\.(weight|bias)", prefix + r".encoder.stages.\1.downsampling_layer.\2.\3"),
        Rule(BLOCK + r"\.dwconv\.(weight|bias)", layer + r".dwconv.\3"),
        Rule(BLOCK + r"\.norm\.(weight|bias)", layer + r".layernorm.\3"),
        Rule(BLOCK + r"\.pwconv1\.(weight|bias)", layer + r".pwconv1.\3"),
        Rule(BLOCK + r"\.pwconv2\.(weight|bias)", layer + r".pwconv2.\3"),
        Rule(BLOCK + r"\.gamma", layer + r".layer_scale_parameter"),
        Rule(BLOCK + r"\.grn\.gamma", layer + r".grn.weight"),
        Rule(BLOCK + r"\.grn\.beta", layer + r".grn.bias"),
        Rule(r"norm\.(weight|bias)", prefix + r".layernorm.\1"),
        Rule(r"head\.(weight|bias)", r"classifier.\1"),
    ]


def hf_upernet_rules() -> list[Rule]:
    """transformers `UperNetForSemanticSegmentation` on a ConvNext(V2) backbone (`openmmlab/upernet-convnext-*`):
    the backbone keys as transformers' ConvNext under `backbone.`, the per-stage norms as
    `hidden_states_norms.stageN`, and the heads under the names our `UperNet` already uses."""
    backbone = [Rule(r"backbone\." + rule.pattern, rule.target) for rule in hf_rules("backbone")
                if not rule.pattern.startswith(("norm", "head"))]
    return [*backbone,
            Rule(r"backbone\.norm(\d)\.(weight|bias)", lambda m: f"backbone.hidden_states_norms.stage{int(m[1]) + 1}.{m[2]}"),
            Rule(r"((decode_head|auxiliary_head)\..+)", r"\1")]


# Which networks each peer's models hold: ConvNeXt V1 ("convnext"), V2, isotropic, or a bottleneck
# ResNet (the roadmap's first steps). The official format is our own names, so it holds every model.
PEER_LAYOUTS = {
    "timm": ("convnext", "convnextv2", "resnet"),  # timm's ResNet keys are torchvision's
    "torchvision": ("convnext", "resnet"),
    "hf": ("convnext", "convnextv2"),
    "hf-upernet": ("convnext", "convnextv2"),  # UperNet segmentation models on these backbones
}

# A key that only one format has, to tell formats apart (checked in this order).
MARKERS = {
    "hf-upernet": re.compile(r"^backbone\.embeddings\.patch_embeddings\."),
    "hf": re.compile(r"^(convnext|convnextv2)\.embeddings\."),
    "torchvision": re.compile(r"^(features\.0\.0\.weight|conv1\.weight)$"),
    "timm": re.compile(r"^stem\.0\.weight$"),
    "official": re.compile(r"^(downsample_layers\.0\.0\.weight|stem\.weight)$"),
}
CHECKPOINT_FORMATS = tuple(MARKERS)
