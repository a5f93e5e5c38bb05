"""Pre-train a ConvNeXt V2 encoder without labels: FCMAE, the V2 paper's masked autoencoder, with dense
masked convolutions (no MinkowskiEngine; any machine).

    convnext pretrain                                            # ConvNeXt V2-atto on the digits at 96², minutes
    convnext pretrain --data ~/photos --recipe fcmae --model convnextv2_tiny --epochs 100
    convnext pretrain --resume runs/convnextv2_atto-20260101-120000
    torchrun --nproc_per_node=8 -m convnext.cli pretrain --data /imagenet/train --recipe fcmae --output-dir runs/p
    convnext train --weights runs/convnextv2_atto-20260101-120000 --data ~/labelled        # then fine-tune

--data is the built-in digits, an ImageFolder tree (labels ignored) or a flat folder of images. Recipes:
fcmae (V2 paper Table 8) and fcmae_small (default). The run directory keeps reconstructions.png
(original, masked input, reconstruction; refreshed each epoch) and the encoder's weights.
"""
import argparse
import json
import sys

from ..training.recipes import PRETRAIN_RECIPES
from ..training.tasks import Pretraining
from . import train as train_command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train_command.add_training_arguments(parser, PRETRAIN_RECIPES, default="fcmae_small")
    train_command.add_source_arguments(parser)


def run(args: argparse.Namespace) -> int:
    say = (lambda text: print(text, file=sys.stderr)) if args.json else print
    recipe = None if args.resume else train_command.recipe_from(args, PRETRAIN_RECIPES)
    summary = train_command.train_or_resume(args, Pretraining, recipe, say)
    say(f"val loss {summary['val_loss']:.4f} after {summary['epochs']} epochs in {summary['wall_s']:.0f}s; run "
        f"written to {summary['run_dir']}. Fine-tune: convnext train --weights {summary['run_dir']}")
    if args.json:
        print(json.dumps(summary))
    return 0
