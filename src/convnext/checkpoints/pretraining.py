"""FCMAE checkpoints in the forms they come in, made into plain ConvNeXt V2 state dicts.

- The official sparse pre-training code saves MinkowskiEngine layouts: depthwise kernels (k², C),
  convolution kernels (k², in, out), biases and GRN parameters (1, C), and the norms and linear layers
  one module deeper (`.ln.`, `.linear.`). `from_minkowski` makes them dense; `to_minkowski` is its
  inverse (for the round-trip test, and for resuming the official code from our weights).
- A whole FCMAE state dict has the encoder under `encoder.` next to the decoder, projection,
  prediction and mask token: `encoder_state` keeps the encoder.
- The released `convnextv2_*_fcmae.pt` files are dense and encoder-only: no final `norm`, no `head`
  (`ENCODER_ONLY_FRESH`), which are the only tensors a fine-tuning run may start without.

Kernel index order (MinkowskiEngine's kernel region, as the official FCMAE checkpoints store it):
k = i_h + k_size * i_w, so after reshaping to (k, k) the axes are (w, h) and a transpose gives
PyTorch's (h, w).
"""
import math
import re

import torch

StateDict = dict[str, torch.Tensor]
ENCODER_ONLY_FRESH = ("norm.weight", "norm.bias", "head.weight", "head.bias")
NOT_ENCODER = re.compile(r"^(decoder\.|proj\.|pred\.|mask_token$)")
# Our (dense) names of the tensors the sparse encoder holds in MinkowskiEngine modules.
SPARSE_CONV = re.compile(r"^(downsample_layers\.[1-9]\.1|stages\.\d+\.\d+\.dwconv)\.(weight|bias)$")
SPARSE_NORM = re.compile(r"^(downsample_layers\.[1-9]\.0|stages\.\d+\.\d+\.norm)\.(weight|bias)$")
SPARSE_LINEAR = re.compile(r"^(stages\.\d+\.\d+\.pwconv[12])\.(weight|bias)$")


def is_minkowski(state: StateDict) -> bool:
    return any(k.endswith(".kernel") or ".ln." in k or ".linear." in k for k in state)


def _dense_kernel(kernel: torch.Tensor) -> torch.Tensor:
    size = math.isqrt(kernel.shape[0])
    if kernel.ndim == 2:  # depthwise (k², C) -> (C, 1, k, k)
        return kernel.permute(1, 0).reshape(kernel.shape[1], 1, size, size).transpose(3, 2)
    # (k², in, out) -> (out, in, k, k)
    return kernel.permute(2, 1, 0).reshape(kernel.shape[2], kernel.shape[1], size, size).transpose(3, 2)


def from_minkowski(state: StateDict) -> StateDict:
    """MinkowskiEngine layouts -> dense PyTorch layouts and the official dense names."""
    out = {}
    for key, tensor in state.items():
        if key.endswith(".kernel"):
            key, tensor = key[: -len("kernel")] + "weight", _dense_kernel(tensor)
        key = key.replace(".ln.", ".").replace(".linear.", ".")
        if key.endswith(".bias") and tensor.ndim == 2 and tensor.shape[0] == 1:
            tensor = tensor.reshape(-1)
        out[key] = tensor.contiguous()
    return out


def to_minkowski(state: StateDict) -> StateDict:
    """Dense encoder tensors (official names) -> the layouts the sparse pre-training code saves."""
    out = {}
    for key, tensor in state.items():
        prefix = "encoder." if key.startswith("encoder.") else ""
        name = key[len(prefix):]
        if SPARSE_CONV.match(name) and name.endswith("weight"):
            size = tensor.shape[-1]
            if tensor.shape[1] == 1 and ".dwconv." in name:  # (C, 1, k, k) -> (k², C)
                tensor = tensor.transpose(3, 2).reshape(tensor.shape[0], size * size).permute(1, 0)
            else:  # (out, in, k, k) -> (k², in, out)
                tensor = tensor.transpose(3, 2).reshape(tensor.shape[0], tensor.shape[1], size * size).permute(2, 1, 0)
            name = name[: -len("weight")] + "kernel"
        elif SPARSE_CONV.match(name):
            tensor = tensor.reshape(1, -1)
        elif m := SPARSE_NORM.match(name):
            name = f"{m[1]}.ln.{m[2]}"
        elif m := SPARSE_LINEAR.match(name):
            name = f"{m[1]}.linear.{m[2]}"
        elif ".grn." in name:
            tensor = tensor.reshape(1, -1)
        out[prefix + name] = tensor.contiguous()
    return out


def encoder_state(state: StateDict) -> StateDict:
    """A ConvNeXt V2 state dict in official dense names from any FCMAE checkpoint; others unchanged.

    Sparse layouts are made dense, a whole FCMAE's encoder is taken out of it, and GRN parameters
    saved as (1, C) get the (1, 1, 1, C) shape of the official dense model.
    """
    if is_minkowski(state):
        state = from_minkowski(state)
    if any(k.startswith("encoder.") for k in state) and all(
            k.startswith("encoder.") or NOT_ENCODER.match(k) for k in state):
        state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    return {k: v.reshape(1, 1, 1, -1) if ".grn." in k and v.ndim == 2 else v for k, v in state.items()}


def is_encoder_only(state: StateDict) -> bool:
    """A V2 encoder without its final norm and head (the released FCMAE files)."""
    return (any(".grn." in k for k in state) and "downsample_layers.0.0.weight" in state
            and not any(k in state for k in ENCODER_ONLY_FRESH))
