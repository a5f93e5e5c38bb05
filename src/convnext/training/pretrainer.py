"""FCMAE pre-training (`convnext pretrain`): the classification trainer's loop, checkpoints, signals,
resume and DDP, with a masked autoencoder's data, model, loss and validation.

The run directory holds what a training run's does (config, metrics.csv, TensorBoard, curves,
checkpoints) plus `reconstructions.png` (original, masked input, reconstruction; refreshed every epoch)
and the encoder's weights in our format, so it is a `--weights` path for `convnext train`.
"""
from pathlib import Path

import torch

from ..checkpoints.weights import load_weights, save_pretrained
from ..models.fcmae import FCMAE
from . import distributed, reporting
from .data import DataBundle, build_data
from .recipes import Recipe
from .trainer import RunConfig, Trainer, TrainingError, resume, train

RECONSTRUCTIONS_FILE = "reconstructions.png"
SHOWN = 6  # validation images in the reconstruction figure


class Pretrainer(Trainer):
    task = "fcmae"
    columns = reporting.LOSS_COLUMNS

    def build_data(self) -> DataBundle:
        run = self.run
        return build_data(run.data, self.recipe, run.seed, run.val_split, run.on_bad_image, run.subset,
                          unlabelled=True)

    def build_model(self) -> FCMAE:
        mae = FCMAE(self.recipe.model, mask_ratio=self.recipe.mask_ratio, in_chans=self.data.in_chans)
        if self.run.weights:  # continue from an encoder (any format; its head and norm are not used)
            load_weights(mae.encoder, self.run.weights, reset_head=True)
        elif self.run.pretrained:  # or from published weights of the same encoder
            from ..checkpoints.hub import load_pretrained_weights

            tag = None if self.run.pretrained == "default" else self.run.pretrained
            load_pretrained_weights(mae.encoder, self.recipe.model, tag)
        mae.encoder.data_config = {"mean": self.data.mean, "std": self.data.std,
                                   "input_size": self.data.input_size, "crop_pct": self.recipe.crop_pct}
        return mae

    def check_input_size(self, size: int) -> None:
        if size % self.model.patch_size:
            raise TrainingError(f"--input-size must be a multiple of {self.model.patch_size} for FCMAE (its "
                                f"patch and the encoder's stride), got {size}")

    def data_note(self) -> str:
        return (f"{len(self.data.train)} train / {len(self.data.val)} val images (labels unused), "
                f"mask ratio {self.recipe.mask_ratio:g}")

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.ctx.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            loss, _, _ = self.network(images)
        return loss

    @torch.no_grad()
    def validate(self) -> tuple[dict, None]:
        """Reconstruction loss on the validation images, with masks drawn from a fixed seed (the same
        every epoch, and without touching the training RNG), weighted by batch size."""
        self.model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=self.ctx.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.run.seed + 1)
            for images, _ in self.val_loader:
                images = images.to(self.ctx.device)
                with torch.autocast(self.ctx.device.type, dtype=self.autocast, enabled=self.autocast is not None):
                    loss, _, _ = self.model(images)
                sums += torch.tensor([loss.item() * len(images), len(images)], dtype=torch.float64,
                                     device=self.ctx.device)
        sums = distributed.all_sum(sums, self.ctx).cpu()
        return {"loss": sums[0].item() / max(1.0, sums[1].item())}, None

    def score(self, metrics: dict) -> float:
        return -metrics["loss"]

    def row(self, metrics: dict) -> dict:
        return {"val_loss": metrics["loss"]}

    def describe(self, metrics: dict) -> str:
        return f"val_loss {metrics['loss']:.4f}"

    def after_epoch(self) -> None:
        reporting.plot_reconstructions(self.reconstructions(), self.run_dir / RECONSTRUCTIONS_FILE)

    @torch.no_grad()
    def reconstructions(self) -> dict[str, torch.Tensor]:
        """The first validation images: original, masked input, and the reconstruction (predicted
        patches where masked, the input where visible), in [0, 1]."""
        mae = self.model.eval()
        images = torch.stack([self.data.val[i][0] for i in range(min(SHOWN, len(self.data.val)))]).to(self.ctx.device)
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

    def finish(self, wall_s: float) -> dict:
        metrics, _ = self.last_metrics or self.validate()
        summary = {"val_loss": metrics["loss"], "epochs": self.epoch, "steps": self.global_step, "wall_s": wall_s,
                   "run_dir": str(self.run_dir), "model": self.recipe.model, "mask_ratio": self.recipe.mask_ratio,
                   "effective_batch": self.effective_batch, "lr": self.lr}
        if self.ctx.is_main:
            save_pretrained(self.model.encoder, self.run_dir)
            self.after_epoch()
        return summary


def pretrain(recipe: Recipe, run: RunConfig, say=print) -> dict:
    """Pre-train one run; returns the summary (val_loss, epochs, steps, wall_s, run_dir, ...)."""
    return train(recipe, run, say=say, trainer_class=Pretrainer)


def resume_pretraining(run_dir: str | Path, say=print, max_steps: int | None = None) -> dict:
    return resume(run_dir, say=say, max_steps=max_steps, trainer_class=Pretrainer)
