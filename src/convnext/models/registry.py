"""The model registry: names -> (builder, config). Building (`create_model`) and `list_models` live here."""
import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    builder: Callable[..., nn.Module]  # the class (or function) that builds the model
    config: dict[str, Any] = field(default_factory=dict)  # its arguments for this variant
    family: str = "convnext"  # which checkpoint layout it has: convnext, convnextv2, isotropic, roadmap


_MODELS: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[..., nn.Module], family: str = "convnext", **config: Any) -> None:
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = ModelSpec(builder, config, family)


def get_spec(name: str) -> ModelSpec:
    if name not in _MODELS:
        close = difflib.get_close_matches(name, _MODELS, n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see convnext.list_models()"
        raise ValueError(f"unknown model {name!r}{hint}")
    return _MODELS[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching a glob, in table order: `list_models("convnextv2_*")`."""
    return [name for name in _MODELS if fnmatch.fnmatch(name, pattern)]


def model_options(name: str) -> list[str]:
    """The keyword overrides `create_model(name, ...)` accepts."""
    return list(inspect.signature(get_spec(name).builder).parameters)


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model: `create_model("convnext_tiny", num_classes=10, drop_path_rate=0.1)`.

    Weights are not this layer's business: `convnext.create_model(name, pretrained=True)` (the
    checkpoints layer's `hub.create_model`) builds here and then loads the published weights.
    """
    spec = get_spec(name)
    accepted = model_options(name)
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        raise TypeError(f"{name} got unknown option(s) {', '.join(unknown)}; accepted: {', '.join(accepted)}")
    model = spec.builder(**{**spec.config, **overrides})
    model.model_name, model.model_overrides = name, overrides
    return model
