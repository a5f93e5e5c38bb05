"""Where a run's network starts from, for every task: `--weights` (a checkpoint in any format) or
`--pretrained` (published weights, a tag or the default); otherwise its own initialisation."""
from torch import nn

from ..checkpoints.weights import load_weights, preprocessing_of


def load_starting_weights(network: nn.Module, run, model_name: str) -> None:
    """Load into `network` (a classifier; a new head keeps its own init when the class count differs)."""
    if run.weights:
        load_weights(network, run.weights, reset_head=True)
    elif run.pretrained:
        from ..checkpoints.hub import load_pretrained_weights

        load_pretrained_weights(network, model_name, None if run.pretrained == "default" else run.pretrained)


def starting_normalisation(run) -> tuple | None:
    """(mean, std) of the --weights the run starts from, if they carry their own (a CLIP-normalised
    fine-tune, say): fine-tuning feeds the network images normalised as it was trained on."""
    if not run.weights:
        return None
    config = preprocessing_of(run.weights)
    return (tuple(config["mean"]), tuple(config["std"])) if "mean" in config and len(config["mean"]) == 3 else None
