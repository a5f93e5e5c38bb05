"""Convert a ConvNeXt checkpoint between formats: ours, official, timm, torchvision, hf, hf-upernet.

    convnext convert convnext_tiny_1k_224_ema.pth out/ --to ours
    convnext convert runs/my-run timm_weights.safetensors --to timm
    convnext convert hf_dir/ official.pth --to official --model convnext_tiny
    convnext convert in22k.pth ft/ --to ours --num-classes 10 --reset-head
    convnext convert runs/my-run hf_dir/ --to hf           # from_pretrained and pipeline() load it
    convnext convert runs/my-run timm_dir --to timm        # timm.create_model("local-dir:timm_dir", pretrained=True)
    convnext convert upernet-convnext-tiny/ upernet/ --to ours  # transformers' UperNet-ConvNeXt, for convnext segment

The source format and the variant are read off the tensors (a published model before a roadmap
step); every tensor must be used and filled, or the conversion fails naming the keys. A format with no
such model is refused in one line. The destination is written atomically.
"""
import argparse

from ..runtime.atomic import atomic_file
from ..checkpoints.convert import CHECKPOINT_FORMATS
from ..checkpoints.dense import DENSE_FORMAT, dense_state, is_upernet, load_dense, save_dense
from ..checkpoints.files import open_checkpoint, write_checkpoint
from ..checkpoints.weights import load_weights, save_pretrained
from ..runtime.ranges import COUNT

TARGETS = ("ours", *CHECKPOINT_FORMATS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="weights file or folder, any format")
    parser.add_argument("destination", help="folder (ours, hf; timm without a file suffix, for timm's "
                                            "local-dir: loader) or file (official, torchvision, timm .pth/.safetensors)")
    parser.add_argument("--to", required=True, choices=TARGETS, help="format to write")
    parser.add_argument("--from", dest="source_format", default="auto", choices=("auto", *CHECKPOINT_FORMATS),
                        help="source format (default: detected from the keys)")
    parser.add_argument("--model", default=None,
                        help="model name or family (convnext, convnextv2, isotropic, roadmap); default: the "
                             "model our files name, else inferred")
    parser.add_argument("--num-classes", type=COUNT.parse, default=None, help="build the model with this many classes")
    parser.add_argument("--reset-head", action="store_true", help="keep a freshly initialised head (fine-tuning)")


def convert_dense(args: argparse.Namespace, checkpoint) -> int:
    """Segmentation and detection models: ours, official (our names in one file) or hf-upernet."""
    import safetensors.torch
    import torch

    model = load_dense(checkpoint)
    if args.to == "ours":
        save_dense(model, args.destination)
    elif args.to in ("official", "hf-upernet"):
        state = dense_state(model, args.to)
        with atomic_file(args.destination) as tmp:
            if str(args.destination).endswith(".safetensors"):
                safetensors.torch.save_file(state, tmp, metadata={"format": "pt"})
            else:
                torch.save(state, tmp)
    else:
        raise ValueError(f"a {type(model).__name__} converts to ours, official or hf-upernet, not {args.to}")
    print(f"converted {args.source} -> {args.destination} ({args.to}): {type(model).__name__} on "
          f"{model.model_name}, {len(model.state_dict())} tensors")
    return 0


def run(args: argparse.Namespace) -> int:
    checkpoint = open_checkpoint(args.source)  # read once, whatever it turns out to hold
    if checkpoint.config.get("format") == DENSE_FORMAT or is_upernet(checkpoint.state):
        return convert_dense(args, checkpoint)
    if args.to == "hf-upernet":
        raise ValueError("hf-upernet holds UperNet segmentation models; this checkpoint is a classifier")
    overrides = {} if args.num_classes is None else {"num_classes": args.num_classes}
    model = load_weights(args.model, checkpoint, format=args.source_format, reset_head=args.reset_head, **overrides)
    class_names = getattr(model, "class_names", None)
    if args.to == "ours":
        save_pretrained(model, args.destination, class_names)
    else:
        write_checkpoint(model, args.destination, args.to, class_names)
    print(f"converted {args.source} -> {args.destination} ({args.to}): {model.model_name}, "
          f"{model.num_classes} classes, {len(model.state_dict())} tensors")
    return 0
