"""FCMAE pre-training (`convnext pretrain`): a masked autoencoder's data (labels unused, flat folders
too), model, loss and validation (reconstruction loss under fixed masks). The run leaves
`reconstructions.png` (original, masked input, reconstruction; refreshed every epoch) and the encoder's
weights in our format, so it is a `--weights` path for `convnext train`.
"""
from pathlib import Path

import torch
from torch import nn

from ...checkpoints.weights import save_pretrained
from ...models.fcmae import FCMAE
from .. import distributed, reporting
from ..data import DataBundle, build_data
from ..recipes import PretrainRecipe
from ..starting_weights import starting_normalisation
from .base import Task, TrainingError, build_network

RECONSTRUCTIONS_FILE = "reconstructions.png"
SHOWN = 6  # validation images in the reconstruction figure


class Pretraining(Task):
    name = "fcmae"
    command = "convnext pretrain"
    recipe_class = PretrainRecipe
    columns = reporting.LOSS_COLUMNS

    def build_data(self) -> DataBundle:
        run = self.run
        return build_data(run.data, self.recipe, run.seed, run.val_split, run.on_bad_image, run.subset,
                          unlabelled=True, columns=(run.image_column, run.label_column),
                          normalisation=starting_normalisation(self.starting))

    def start_network(self) -> nn.Module:
        """The encoder (a starting checkpoint's head and final norm are not used)."""
        return build_network(self.recipe, ("drop_path",), in_chans=self.data.in_chans)

    def build_model(self, encoder: nn.Module) -> FCMAE:
        data = self.data
        mae = FCMAE(encoder, mask_ratio=self.recipe.mask_ratio, in_chans=data.in_chans)
        mae.encoder.data_config = {"mean": data.mean, "std": data.std, "input_size": data.input_size,
                                   "crop_pct": self.recipe.crop_pct}
        return mae

    def check_input_size(self, model: FCMAE, size: int) -> None:
        if size % model.patch_size:
            raise TrainingError(f"--input-size must be a multiple of {model.patch_size} for FCMAE (its "
                                f"patch and the encoder's stride), got {size}")

    def optimizer(self, model: nn.Module, lr: float) -> torch.optim.Optimizer:
        if self.recipe.layer_decay is not None:  # its groups are the classifier's names, not the autoencoder's
            raise TrainingError(f"--layer-decay {self.recipe.layer_decay:g}: layer-wise lr decay is for fine-tuning; "
                                "FCMAE pre-training trains every layer at one rate (V2 paper, Table 8)")
        return super().optimizer(model, lr)

    def data_note(self) -> str:
        return (f"{len(self.data.train)} train / {len(self.data.val)} val images (labels unused), "
                f"mask ratio {self.recipe.mask_ratio:g}")

    def loss(self, network: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss, _, _ = network(images)
        return loss

    @torch.no_grad()
    def validate(self, mae: FCMAE, loader, autocast) -> dict:
        """Reconstruction loss on the validation images, with masks drawn from a fixed seed (the same
        every epoch, and without touching the training RNG), weighted by batch size."""
        mae.eval()
        device = self.ctx.device
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.run.seed + 1)
            for images, _ in loader:
                images = images.to(device)
                with torch.autocast(device.type, dtype=autocast, enabled=autocast is not None):
                    loss, _, _ = mae(images)
                sums += torch.tensor([loss.item() * len(images), len(images)], dtype=torch.float64, device=device)
        sums = distributed.all_sum(sums, self.ctx).cpu()
        return {"loss": sums[0].item() / max(1.0, sums[1].item())}

    def score(self, metrics: dict) -> float:
        return -metrics["loss"]

    def row(self, metrics: dict) -> dict:
        return {"val_loss": metrics["loss"]}

    def describe(self, metrics: dict) -> str:
        return f"val_loss {metrics['loss']:.4f}"

    def summary(self, metrics: dict) -> dict:
        return {"val_loss": metrics["loss"], "mask_ratio": self.recipe.mask_ratio}

    def after_epoch(self, mae: FCMAE, run_dir: Path) -> None:
        reporting.plot_reconstructions(self.reconstructions(mae), run_dir / RECONSTRUCTIONS_FILE)

    def save_outputs(self, mae: FCMAE, run_dir: Path, metrics: dict) -> None:
        save_pretrained(mae.encoder, run_dir)
        self.after_epoch(mae, run_dir)

    @torch.no_grad()
    def reconstructions(self, mae: FCMAE) -> dict[str, torch.Tensor]:
        """The first validation images: original, masked input, and the reconstruction (predicted
        patches where masked, the input where visible), in [0, 1]."""
        mae.eval()
        val = self.data.val
        images = torch.stack([val[i][0] for i in range(min(SHOWN, len(val)))]).to(self.ctx.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.run.seed + 2)
            _, pred, mask = mae(images)
        pred = torch.einsum("ncl->nlc", pred.flatten(2)).float()  # (N, p*p*C, h, w) -> (N, L, p*p*C)
        if mae.norm_pix_loss:  # predictions are per-patch normalised: give them the patch's own statistics
            target = mae.patchify(images)
            pred = pred * (target.var(dim=-1, keepdim=True) + 1e-6) ** 0.5 + target.mean(dim=-1, keepdim=True)
        keep = mae.keep_map(mask, (images.shape[2] // 32, images.shape[3] // 32), images.shape[-2:])
        mean = torch.tensor(self.data.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.data.std, device=images.device).view(1, -1, 1, 1)
        restore = lambda x: x * std + mean  # noqa: E731  (normalised -> [0, 1])
        reconstruction = mae.unpatchify(pred, height=images.shape[2]) * (1 - keep) + images * keep
        masked = restore(images) * keep + 0.5 * (1 - keep)  # masked patches grey
        return {"original": restore(images), "masked": masked, "reconstruction": restore(reconstruction)}
