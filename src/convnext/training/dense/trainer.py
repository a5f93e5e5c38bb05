"""Training detectors and segmenters with the classification trainer's loop, checkpoints, signals,
resume and DDP: what differs is the data (lists of images and targets; image + mask pairs), the model,
the losses (the detector's own; cross-entropy + 0.4 auxiliary), the optimizer groups (the official
downstream layer decay) and validation (COCO AP; confusion-matrix mIoU)."""
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

from ...checkpoints.dense import save_dense
from ...checkpoints.weights import load_weights
from ...models.detection import OFFICIAL_ANCHORS, fasterrcnn_convnext, maskrcnn_convnext
from ...models.registry import create_model
from ...models.upernet import segmentation_loss, upernet_convnext
from .. import reporting
from ..optim import build_optimizer, dense_param_groups
from ..trainer import Trainer, resume, train
from .data import DenseData, detection_data, segmentation_data
from .drawing import draw_detections, draw_segmentation, save_grid
from .evaluation import detect, evaluate_detection, evaluate_segmentation, segment
from .shapes import shapes_dataset

PREDICTIONS_FILE = "predictions.png"
SHOWN = 8
BUILT_IN = "shapes"


def data_root(data: str) -> Path:
    return shapes_dataset() if data == BUILT_IN else Path(data)


def num_layers(model_name: str) -> int:
    """The official configs' layer count for lr decay: 3 + stage-3 blocks / 3 (T: 6, S/B/L/XL: 12)."""
    from ...models.registry import get_spec

    return 3 + get_spec(model_name).config["depths"][2] // 3


def anchor_sizes(input_size: int) -> tuple:
    """torchvision's (official) anchors 32-512 for images of ~800 px; x0.75 (24-384) for small images
    (≤ 256 px), whose objects are few pixels wide: on the built-in shapes (boxes 22-49 px at 128²) the
    median box then has an anchor of IoU 0.70 (0.63 at x0.5), and the demo's AP50 rose 75 → 82 at epoch 7."""
    scale = 0.75 if input_size <= 256 else 1.0
    return tuple(int(s * scale) for s in OFFICIAL_ANCHORS)


def train_sizes(size: int) -> int | tuple[int, ...]:
    """Shorter sides drawn per training image: the official 480-800 (step 32) for an 800 recipe, the same
    0.6-1 span below it from 512 up; small inputs train at their size. Evaluation uses the largest."""
    return tuple(range(round(0.6 * size), size + 1, 32)) if size >= 512 else size


def proposals(kept: int) -> dict[str, int]:
    """RPN and output settings for `kept` proposals per image, in the official proportions (train: 2000
    enter NMS, 1000 kept; test: 1000 and 1000; 100 detections per image). Detections matter for speed:
    the mask head runs on every one, so at 100 per image it took most of the shapes' validation time."""
    return {"rpn_pre_nms_top_n_train": 2 * kept, "rpn_post_nms_top_n_train": kept,
            "rpn_pre_nms_top_n_test": kept, "rpn_post_nms_top_n_test": kept,
            "box_detections_per_img": max(1, kept // 10)}


class DenseTrainer(Trainer):
    """What detection and segmentation share: the starting classifier, the optimizer groups, DDP."""

    decay_mode = "layer_wise"

    def classifier(self) -> torch.nn.Module:
        """The classification network the backbone comes from, with --weights/--pretrained loaded."""
        model = create_model(self.recipe.model, drop_path_rate=self.recipe.drop_path)
        if self.run.weights:
            load_weights(model, self.run.weights, reset_head=True)
        elif self.run.pretrained:
            from ...checkpoints.hub import load_pretrained_weights

            load_pretrained_weights(model, self.recipe.model, None if self.run.pretrained == "default" else self.run.pretrained)
        return model

    def check_input_size(self, size: int) -> None:
        if size < 64:
            raise ValueError(f"images must be at least 64 pixels for dense prediction, got {size}")

    def build_optimizer(self) -> torch.optim.Optimizer:
        recipe = self.recipe
        groups = dense_param_groups(self.model, recipe.weight_decay, recipe.layer_decay, num_layers(recipe.model),
                                    self.decay_mode)
        return build_optimizer(self.model, self.lr, recipe.weight_decay, beta2=recipe.beta2, groups=groups)

    def distribute(self, model: torch.nn.Module) -> torch.nn.Module:
        # UperNet's BatchNorms share statistics across processes (SyncBatchNorm runs on GPUs only; on
        # CPUs each process keeps its own); not every head runs every step (no objects: no mask head).
        if self.ctx.device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, find_unused_parameters=True)

    def data_note(self) -> str:
        return f"{len(self.data.train)} train / {len(self.data.val)} val images, {len(self.data.class_names)} classes"

    def after_epoch(self) -> None:
        save_grid(self.pictures(), self.run_dir / PREDICTIONS_FILE)

    def finish(self, wall_s: float) -> dict:
        """The final validation scores in summary.json, the model in our format, the last pictures."""
        metrics, _ = self.last_metrics or self.validate()
        summary = {**self.scores(metrics), "epochs": self.epoch, "steps": self.global_step, "wall_s": wall_s,
                   "run_dir": str(self.run_dir), "model": self.recipe.model, "effective_batch": self.effective_batch,
                   "lr": self.lr}
        if self.ctx.is_main:
            save_dense(self.model, self.run_dir, self.data.class_names)
            self.after_epoch()
        return summary


class DetectionTrainer(DenseTrainer):
    task = "detect"
    columns = reporting.DETECTION_COLUMNS
    collate = staticmethod(lambda batch: tuple(zip(*batch)))

    def build_data(self) -> DenseData:
        run = self.run
        return detection_data(data_root(run.data), run.seed, self.recipe.hflip, run.on_bad_image, run.subset)

    def build_model(self) -> torch.nn.Module:
        recipe, size = self.recipe, self.recipe.input_size or self.data.input_size
        width = {"fpn_channels": recipe.head_width} if recipe.head_width else {}
        builder = maskrcnn_convnext if self.data.has_masks else fasterrcnn_convnext  # boxes-only data: no mask head
        model = builder(self.classifier(), num_classes=len(self.data.class_names) + 1, min_size=train_sizes(size),
                                  max_size=max(size, round(size * 1333 / 800)), anchor_sizes=anchor_sizes(size),
                                  box_batch_size_per_image=recipe.rois_per_image, **proposals(recipe.proposals), **width)
        model.class_names = self.data.class_names
        return model

    def prepare(self, batch) -> tuple:
        images, targets = batch
        device = self.ctx.device
        return ([image.to(device) for image in images],
                [{k: v.to(device) if torch.is_tensor(v) else v for k, v in t.items()} for t in targets])

    def loss(self, images, targets) -> torch.Tensor:
        with torch.autocast(self.ctx.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            losses = self.network(images, targets)
        return sum(loss.float() for loss in losses.values())

    def detect(self, images: list[torch.Tensor]) -> list[dict]:
        return detect(self.model, images, self.ctx.device, self.autocast)

    def validate(self) -> tuple[dict, None]:
        return evaluate_detection(self.model, self.val_loader, self.data.val, self.ctx, self.autocast), None

    def score(self, metrics: dict) -> float:
        return metrics["AP"]

    def row(self, metrics: dict) -> dict:
        return {"val_AP": metrics["AP"], "val_AP50": metrics["AP50"], "val_AP75": metrics["AP75"],
                "val_mask_AP": metrics["mask_AP"]}

    def describe(self, metrics: dict) -> str:
        return (f"box AP {100 * metrics['AP']:.1f}  AP50 {100 * metrics['AP50']:.1f}  "
                f"mask AP {100 * metrics['mask_AP']:.1f}")

    def pictures(self) -> list:
        images = [self.data.val[i][0] for i in range(min(SHOWN, len(self.data.val)))]
        return [draw_detections(image, found, self.data.class_names) for image, found in zip(images, self.detect(images))]

    def scores(self, metrics: dict) -> dict:
        return {"box_AP": metrics["AP"], "box_AP50": metrics["AP50"], "box_AP75": metrics["AP75"],
                "mask_AP": metrics["mask_AP"], "mask_AP50": metrics["mask_AP50"],
                "per_class_box_AP": metrics["coco"]["bbox"]["per_class"]}


class SegmentationTrainer(DenseTrainer):
    task = "segment"
    columns = reporting.SEGMENTATION_COLUMNS
    decay_mode = "stage_wise"

    def build_data(self) -> DenseData:
        run = self.run
        return segmentation_data(data_root(run.data), run.seed, self.recipe.input_size, self.recipe.hflip,
                                 run.on_bad_image, run.subset, self.recipe.scale_jitter)

    def val_batch_size(self) -> int:
        return 1  # validation images keep their own sizes (ADE20K's differ), so they are not stacked

    def build_model(self) -> torch.nn.Module:
        width = {"channels": self.recipe.head_width} if self.recipe.head_width else {}
        model = upernet_convnext(self.classifier(), num_classes=len(self.data.class_names), **width)
        model.class_names = self.data.class_names
        return model

    def prepare(self, batch) -> tuple:
        images, masks = batch
        return images.to(self.ctx.device), masks.to(self.ctx.device)

    def loss(self, images, masks) -> torch.Tensor:
        with torch.autocast(self.ctx.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            out = self.network(images)
        return sum(segmentation_loss({k: v.float() for k, v in out.items()}, masks).values())

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        return segment(self.model, images, self.ctx.device, self.autocast)

    def validate(self) -> tuple[dict, None]:
        return evaluate_segmentation(self.model, self.val_loader, self.data.class_names, self.ctx, self.autocast), None

    def score(self, metrics: dict) -> float:
        return metrics["mIoU"]

    def row(self, metrics: dict) -> dict:
        return {"val_loss": metrics["loss"], "val_mIoU": metrics["mIoU"], "val_mAcc": metrics["mAcc"],
                "val_aAcc": metrics["aAcc"]}

    def describe(self, metrics: dict) -> str:
        return f"val_loss {metrics['loss']:.4f}  mIoU {100 * metrics['mIoU']:.1f}  aAcc {100 * metrics['aAcc']:.1f}"

    def pictures(self) -> list:
        images = [self.data.val[i][0] for i in range(min(SHOWN, len(self.data.val)))]  # sizes may differ
        classes = [self.segment(image[None]).argmax(1)[0] for image in images]
        return [draw_segmentation(image, labels, len(self.data.class_names), self.data.mean, self.data.std)
                for image, labels in zip(images, classes)]

    def scores(self, metrics: dict) -> dict:
        return {"mIoU": metrics["mIoU"], "mAcc": metrics["mAcc"], "aAcc": metrics["aAcc"],
                "per_class_IoU": {c["class"]: c["IoU"] for c in metrics["per_class"]}}


TRAINERS = {"detect": DetectionTrainer, "segment": SegmentationTrainer}


def train_dense(task: str, recipe, run, say=print) -> dict:
    return train(recipe, run, say=say, trainer_class=TRAINERS[task])


def resume_dense(task: str, run_dir, say=print, max_steps: int | None = None) -> dict:
    return resume(run_dir, say=say, max_steps=max_steps, trainer_class=TRAINERS[task])
