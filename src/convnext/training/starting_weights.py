"""Where a run's network starts from, for every task: `--weights` (a checkpoint in any format) or
`--pretrained` (published weights, a tag or the default); otherwise its own initialisation.

A `--weights` file is read once (`read_starting_weights`) and that one reading gives the data its
normalisation and the network its tensors."""
from torch import nn

from ..checkpoints.files import Checkpoint, open_checkpoint
from ..checkpoints.weights import load_weights, preprocessing_of


def read_starting_weights(run) -> Checkpoint | None:
    return open_checkpoint(run.weights) if run.weights else None


def load_starting_weights(network: nn.Module, run, model_name: str, checkpoint: Checkpoint | None) -> None:
    """Load into `network` (a classifier; a new head keeps its own init when the class count differs)."""
    if checkpoint is not None:
        load_weights(network, checkpoint, reset_head=True)
    elif run.pretrained:
        from ..checkpoints.hub import load_pretrained_weights

        load_pretrained_weights(network, model_name, None if run.pretrained == "default" else run.pretrained)


def starting_normalisation(checkpoint: Checkpoint | None) -> tuple | None:
    """(mean, std) of the --weights the run starts from, if they carry their own (a CLIP-normalised
    fine-tune, say): fine-tuning feeds the network images normalised as it was trained on."""
    if checkpoint is None:
        return None
    config = preprocessing_of(checkpoint)
    return (tuple(config["mean"]), tuple(config["std"])) if "mean" in config and len(config["mean"]) == 3 else None
