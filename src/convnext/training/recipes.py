"""Training recipes as data, one class per task: the fields every task's training shares (`Recipe`),
and what only classification, FCMAE pre-training, detection or segmentation has. Each command's flags
are its task's fields, so another task's flag is an error rather than silently ignored.

Every field can be overridden from the command line (`--lr`, `--epochs`, ...). Learning rates are given
at `lr_base_batch` and scaled linearly to the effective batch (batch x processes x accumulation).
"""
from dataclasses import asdict, dataclass, field, fields, replace

from ..models.convnext import NORMS, PATCH_SIZES, STEMS
from ..runtime.ranges import COUNT, NON_NEGATIVE, POSITIVE, PROBABILITY, SHARE, Choice, Range
from .optim import OPTIMIZERS, SCHEDULES

MAGNITUDE = Range(int, low=0, high=30)  # torchvision's RandAugment has 31 magnitude bins
DROP_RATE = Range(float, low=0, high=1, high_open=True)
DECAY = Range(float, low=0, high=1, low_open=True, high_open=True)
CHOICE_OF_STEM, CHOICE_OF_PATCH, CHOICE_OF_NORM = Choice(STEMS), Choice(PATCH_SIZES), Choice(NORMS)


def option(default, help: str, valid: Range | None = None):
    """A recipe field: its default, the help its flag shows, and the range of valid values."""
    return field(default=default, metadata={"help": help, **({"range": valid} if valid else {})})


@dataclass(frozen=True)
class Recipe:
    """What every task's training has: the model, the optimizer and its schedule, the batch, flips."""
    model: str = option("convnext_tiny", "model name (any registered, roadmap steps included)")
    epochs: int = option(300, "training epochs", COUNT)
    batch_size: int = option(128, "images per process per step", COUNT)
    lr: float = option(4e-3, "peak learning rate at lr_base_batch, scaled linearly to the effective batch", POSITIVE)
    lr_base_batch: int = option(4096, "the batch size --lr is given for", COUNT)
    min_lr: float = option(1e-6, "learning rate at the end of the cosine", NON_NEGATIVE)
    warmup_epochs: float = option(20, "linear warm-up, per iteration", NON_NEGATIVE)
    schedule: str = option("cosine", "lr after warm-up: cosine, step (x0.1 at 27/36 and 33/36: detection 3x) "
                                     "or poly (power 1: segmentation)")
    optimizer: str = option("adamw", "adamw, or sgd (momentum 0.9: the classic ResNet recipe)")
    weight_decay: float = option(0.05, "never on biases, norms, layer scale or GRN", NON_NEGATIVE)
    beta2: float = option(0.999, "AdamW's second-moment decay (FCMAE: 0.95)", DECAY)
    layer_decay: float | None = option(None, "layer-wise lr decay (fine-tuning); None: off", SHARE)
    clip_grad: float | None = option(None, "max gradient norm", POSITIVE)
    accum_steps: int = option(1, "gradient accumulation steps", COUNT)
    ema_decay: float | None = option(0.9999, "None: no EMA", DECAY)
    drop_path: float = option(0.1, "stochastic depth rate at the last block", DROP_RATE)
    input_size: int | None = option(224, "None: fit the data (small images stay small)", COUNT)
    hflip: float = option(0.5, "horizontal flip probability", PROBABILITY)

    def __post_init__(self):
        """Refuse a value outside its field's range (and a warm-up longer than the run) at once."""
        for f in fields(self):
            if "range" in f.metadata:
                f.metadata["range"].check(f.name, getattr(self, f.name))
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be ≤ epochs ({self.epochs}), got {self.warmup_epochs}")

    def update(self, **overrides) -> "Recipe":
        names = {f.name for f in fields(self)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown recipe field(s) for {type(self).__name__}: {', '.join(sorted(unknown))}")
        overrides = {k: v for k, v in overrides.items() if v is not None}
        epochs = overrides.get("epochs", self.epochs)
        if "warmup_epochs" not in overrides and self.warmup_epochs > epochs:
            # A run shorter than the preset's warm-up keeps the warm-up's share of the schedule.
            overrides["warmup_epochs"] = self.warmup_epochs * epochs / self.epochs
        return replace(self, **overrides)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_saved(cls, saved: dict) -> "Recipe":
        """A recipe from a run's config.json. Runs written before the recipes were split per task hold
        every task's fields; those of other tasks are dropped (they never acted on this run)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


@dataclass(frozen=True)
class ClassifyRecipe(Recipe):
    """Supervised classification (`convnext train`, the roadmap): the paper's augmentation and regularisation."""
    label_smoothing: float = option(0.1, "label smoothing", PROBABILITY)
    mixup: float = option(0.8, "MixUp alpha; 0 disables", NON_NEGATIVE)
    cutmix: float = option(
        1.0, "CutMix alpha; 0 disables (with both on, each batch picks one at random)", NON_NEGATIVE)
    randaugment: int | None = option(9, "RandAugment magnitude (2 ops); None disables", MAGNITUDE)
    reprob: float = option(0.25, "random erasing probability", PROBABILITY)
    min_crop_scale: float = option(0.08, "RandomResizedCrop keeps at least this share of the image", SHARE)
    layer_scale: float | None = option(None, "layer scale init value; None: the model's own (1e-6 in ConvNeXt V1 "
                                             "and isotropic, none in V2 and before the roadmap's last step); 0: none",
                                       NON_NEGATIVE)
    head_init_scale: float = option(1.0, "head weight scale at init (0.001 to fine-tune)", POSITIVE)
    crop_pct: float = option(0.875, "eval: resize to input_size / crop_pct, then centre-crop", SHARE)
    stem: str | None = option(None, "the stem: patch (the paper's) or overlap (two 3x3 convolutions); None: the "
                                    "model's own", CHOICE_OF_STEM)
    patch_size: int | None = option(None, "the stem's stride: 4 (the paper's), or 2 or 1 for small inputs; None: the "
                                          "model's own", CHOICE_OF_PATCH)
    norm: str | None = option(None, "the body's norm: layer (the paper's) or batch; None: the model's own", CHOICE_OF_NORM)


@dataclass(frozen=True)
class PretrainRecipe(Recipe):
    """FCMAE pre-training (`convnext pretrain`): crops and flips only, and the mask."""
    min_crop_scale: float = option(0.2, "RandomResizedCrop keeps at least this share of the image", SHARE)
    crop_pct: float = option(0.875, "eval: resize to input_size / crop_pct, then centre-crop", SHARE)
    mask_ratio: float = option(0.6, "share of 32-pixel patches masked", DROP_RATE)
    # The official main_pretrain.py augments with crops and flips only (not fields: nothing to set).
    randaugment = None
    reprob = 0.0


@dataclass(frozen=True)
class DetectRecipe(Recipe):
    """Detection and instance segmentation (`convnext detect train`): Mask/Faster R-CNN's sizes."""
    rois_per_image: int = option(512, "RoIs sampled per image for the box head", COUNT)
    proposals: int = option(1000, "RPN proposals kept per image after NMS (official 1000; "
                                  "2x as many enter NMS in training)", COUNT)
    head_width: int | None = option(None, "FPN channels (official 256); None: official", COUNT)


@dataclass(frozen=True)
class SegmentRecipe(Recipe):
    """Semantic segmentation (`convnext segment train`): UperNet's width and the scale jitter."""
    scale_jitter: float = option(2.0, "each training image is resized by a random ratio in [1/j, j] before "
                                      "the crop (official 2: 0.5-2)", Range(float, low=1))
    head_width: int | None = option(None, "UperNet channels (official 512); None: official", COUNT)


RECIPES = {
    # Paper Table 5: ImageNet-1K from scratch, 300 epochs at batch 4096 (drop path T 0.1 / S 0.4 / B, L 0.5).
    "in1k": ClassifyRecipe(),
    # Paper Table 6: fine-tuning, lr 5e-5 at batch 512, 30 epochs, no warm-up, layer decay, no mixing.
    "finetune": ClassifyRecipe(epochs=30, lr=5e-5, lr_base_batch=512, warmup_epochs=0, weight_decay=1e-8,
                       layer_decay=0.8, head_init_scale=0.001, mixup=0.0, cutmix=0.0, drop_path=0.2,
                       ema_decay=None),
    # Small data on a CPU (the built-in digits): a minute, light augmentation, no flips. 20 epochs of batch
    # 128 (lr 8e-3) reach what 40 of batch 64 did (98.6-99.2% over seeds 0-2 against 98.6-98.9%) in under
    # half the time, which an AVX2-only CPU needs for a demo within two minutes; 16 epochs fell to 97.5%.
    "small": ClassifyRecipe(model="convnext_atto", epochs=20, batch_size=128, lr=4e-3, lr_base_batch=64,
                            warmup_epochs=2, label_smoothing=0.1, mixup=0.0, cutmix=0.0, randaugment=None,
                            reprob=0.0, hflip=0.0, min_crop_scale=0.7, drop_path=0.0, ema_decay=None,
                            input_size=None, crop_pct=1.0),
}
# The roadmap's one recipe for every step: the small preset as it was measured there (40 epochs of batch
# 64) at a quarter of its rate. At 4e-3 the step with a single BatchNorm per block (11, fewer norms)
# diverged while the others trained; the paper's own rate is far lower still (4e-3 at batch 4096, 6e-5
# at our batch of 64). docs/roadmap.md has the runs.
RECIPES["roadmap"] = replace(RECIPES["small"], lr=1e-3, epochs=40, batch_size=64)

# The roadmap study's two recipes (paper §2.1): step 0 trains as ResNets were trained, every later step
# with the modernised recipe, so that step 1's gain is measured as the paper's is. Scaled to the
# built-in scenes (64², 16,000 images, 5 epochs, batch 64: two CPU cores, training/roadmap_study.py):
# SGD's rate is torchvision's 0.1 at batch 256 scaled linearly (0.025 at 64), AdamW's the paper's 4e-3
# at 4096 scaled by the square root of the batch ratio, as is usual for Adam (5e-4 at 64, written as
# 4e-3 at 512 scaled linearly); the warm-up is the paper's share of the run (20 of 300 epochs), EMA
# and crops are shortened to the run; the crop keeps half the image at least (the class is the
# largest shape: a 0.08 crop would cut it out).
ROADMAP_RECIPES = {
    "classic": ClassifyRecipe(  # SGD with momentum, crop and flip only (torchvision's ResNet recipe)
        optimizer="sgd", epochs=5, batch_size=64, lr=0.1, lr_base_batch=256, min_lr=0.0, warmup_epochs=0,
        weight_decay=1e-4, label_smoothing=0.0, mixup=0.0, cutmix=0.0, randaugment=None, reprob=0.0,
        drop_path=0.0, ema_decay=None, layer_scale=0.0, hflip=0.5, min_crop_scale=0.5, input_size=64,
        crop_pct=1.0),
    "modern": ClassifyRecipe(  # AdamW, warm-up + cosine, mixup/cutmix, RandAugment, erasing, smoothing, drop path, EMA
        optimizer="adamw", epochs=5, batch_size=64, lr=4e-3, lr_base_batch=512, min_lr=1e-6, warmup_epochs=0.33,
        weight_decay=0.05, label_smoothing=0.1, mixup=0.8, cutmix=1.0, randaugment=9, reprob=0.25,
        drop_path=0.1, ema_decay=0.999, layer_scale=None, hflip=0.5, min_crop_scale=0.5, input_size=64,
        crop_pct=1.0),
}

# FCMAE pre-training (V2 paper Table 8 and the official main_pretrain.py): AdamW (0.9, 0.95), weight
# decay 0.05, lr 1.5e-4 x batch / 256, 40 warm-up epochs, cosine to 0, random resized crop 0.2-1 and
# flips, mask ratio 0.6, no label tricks, no drop path, no EMA. 800 epochs (the code's default; the
# released models had 1600).
PRETRAIN_RECIPES = {
    "fcmae": PretrainRecipe(model="convnextv2_atto", epochs=800, batch_size=64, lr=1.5e-4, lr_base_batch=256,
                             min_lr=0.0, warmup_epochs=40, weight_decay=0.05, beta2=0.95, hflip=0.5,
                             min_crop_scale=0.2, drop_path=0.0, ema_decay=None, input_size=224, mask_ratio=0.6),
}
# The built-in digits on a CPU: upsampled to 96² (3 x 3 patches of 32), no flips (digits are not
# symmetric), a higher rate and a short warm-up for a run of minutes.
PRETRAIN_RECIPES["fcmae_small"] = replace(PRETRAIN_RECIPES["fcmae"], epochs=30, lr=1.5e-3, warmup_epochs=3,
                                          hflip=0.0, input_size=96)

# Dense prediction. The official configs (the ConvNeXt repository's object_detection/ and
# semantic_segmentation/ folders): Mask R-CNN 3x on COCO with
# ConvNeXt-T (36 epochs, lr 1e-4 at batch 16, x0.1 at 27 and 33, 500-iteration warm-up (0.07 epoch of
# COCO), layer-wise decay 0.95, drop path 0.4, 800-pixel short side) and UperNet on ADE20K (160k
# iterations at batch 16 = 127 epochs of 20k images, poly, 1500-iteration warm-up, stage-wise 0.9,
# 512 crops). The small presets train on the built-in shapes in minutes on a CPU.
# What both official downstream configs share: fine-tuning from ImageNet weights with AdamW at lr 1e-4
# for batch 16, flips only, no EMA; and what both small presets share: ConvNeXt-atto from scratch, 128².
DOWNSTREAM = dict(model="convnext_tiny", batch_size=2, lr=1e-4, lr_base_batch=16, min_lr=0.0, weight_decay=0.05,
                  hflip=0.5, drop_path=0.4, ema_decay=None)
SMALL_DOWNSTREAM = dict(model="convnext_atto", warmup_epochs=0.5, layer_decay=None, drop_path=0.0, input_size=128)
DETECT_RECIPES = {
    "coco_3x": DetectRecipe(**DOWNSTREAM, epochs=36, warmup_epochs=0.07, layer_decay=0.95, input_size=800,
                            schedule="step"),
}
DETECT_RECIPES["shapes"] = replace(DETECT_RECIPES["coco_3x"], **SMALL_DOWNSTREAM, epochs=10, batch_size=4, lr=1.2e-3,
                                   lr_base_batch=4, schedule="cosine", rois_per_image=64, head_width=64, proposals=250)
SEGMENT_RECIPES = {
    "ade20k_160k": SegmentRecipe(**DOWNSTREAM, epochs=127, warmup_epochs=1.2, layer_decay=0.9, input_size=512,
                                 schedule="poly"),
}
SEGMENT_RECIPES["shapes"] = replace(SEGMENT_RECIPES["ade20k_160k"], **SMALL_DOWNSTREAM, epochs=24, batch_size=8,
                                    lr=1e-3, lr_base_batch=8, head_width=64, scale_jitter=1.0)

# Stochastic depth of the official downstream configs by model size (detection: Mask R-CNN T, Cascade
# Mask R-CNN S/B/L/XL; segmentation: UperNet). A size never trained downstream keeps the recipe's rate.
DOWNSTREAM_DROP_PATH = {
    DetectRecipe: {"tiny": 0.4, "small": 0.6, "base": 0.7, "large": 0.7, "xlarge": 0.8},
    SegmentRecipe: {"tiny": 0.4, "small": 0.3, "base": 0.4, "large": 0.4, "xlarge": 0.4, "huge": 0.4},
}


def with_official_drop_path(recipe: Recipe) -> Recipe:
    """The recipe with the official downstream drop-path rate for its model's size, where there is one."""
    table = DOWNSTREAM_DROP_PATH.get(type(recipe), {})
    size = recipe.model.rsplit("_", 1)[-1]
    return recipe.update(drop_path=table[size]) if size in table else recipe
