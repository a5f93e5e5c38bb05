"""Weights on the Hugging Face Hub, named as timm names them: `hf-hub:ORG/REPO[@REVISION]`.

    convnext.create_model("hf-hub:timm/convnext_atto.d2_in1k")
    convnext.create_model("convnext_atto", pretrained="d2_in1k")            # timm's tag: timm/convnext_atto.d2_in1k
    convnext train --weights hf-hub:facebook/convnextv2-tiny-22k-224 --data ~/flowers

Files come through `huggingface_hub`'s own download and cache, so its settings hold: `HF_HOME` (where
the cache is), `HF_HUB_OFFLINE=1` (the cache only), `HF_TOKEN` or `huggingface-cli login` (gated or
private repositories). A repository is read as the folder it is: timm's (config.json with its
`pretrained_cfg`, model.safetensors or pytorch_model.bin), transformers' (config.json,
preprocessor_config.json and the weights) and ours (`convnext convert --to hf|timm`, `save_pretrained`).
"""
from pathlib import Path

from .convert import CheckpointError

PREFIX = "hf-hub:"
CONFIG_FILES = ("config.json", "preprocessor_config.json", "model.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the first the repository has is fetched


def is_hub_name(reference) -> bool:
    return str(reference).startswith(PREFIX)


def split(reference: str) -> tuple[str, str | None]:
    """"hf-hub:org/repo@rev" -> ("org/repo", "rev"); no revision: None (the default branch)."""
    repo, _, revision = str(reference).removeprefix(PREFIX).partition("@")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise CheckpointError(f"{reference}: a Hub name is hf-hub:ORGANISATION/REPOSITORY[@REVISION]")
    return repo, revision or None


def snapshot(reference: str, revision: str | None = None) -> Path:
    """The local folder holding the repository's config files and weights (downloaded into the Hub
    cache on first use; from the cache alone under HF_HUB_OFFLINE=1)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

    repo, pinned = split(reference)
    revision = revision or pinned

    def fetch(filename: str) -> Path | None:
        try:
            return Path(hf_hub_download(repo, filename, revision=revision))
        except EntryNotFoundError:  # not in the repository, or (offline) not in the cache
            return None

    try:
        for name in CONFIG_FILES:
            fetch(name)
        weights = next((path for path in map(fetch, WEIGHT_FILES) if path is not None), None)
    except (HfHubHTTPError, OSError, ValueError) as error:  # no such repository, no access, a bad revision
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"{reference}: {reason}") from None
    if weights is None:
        raise CheckpointError(f"{reference}: no {' or '.join(WEIGHT_FILES)} in the repository or, offline "
                              f"(HF_HUB_OFFLINE=1), in the Hub cache")
    return weights.parent
