"""Training recipes as data: the paper's ImageNet recipe, its fine-tuning recipe, and a small-data preset.

Every field can be overridden from the command line (`--lr`, `--epochs`, ...). Learning rates are given
at `lr_base_batch` and scaled linearly to the effective batch (batch x processes x accumulation).
"""
from dataclasses import asdict, dataclass, fields, replace


@dataclass(frozen=True)
class Recipe:
    model: str = "convnext_tiny"
    epochs: int = 300
    batch_size: int = 128  # per process
    lr: float = 4e-3  # at lr_base_batch, scaled linearly to the effective batch
    lr_base_batch: int = 4096
    min_lr: float = 1e-6  # cosine floor
    warmup_epochs: float = 20
    weight_decay: float = 0.05  # never on biases, norms, layer scale or GRN
    layer_decay: float | None = None  # layer-wise lr decay (fine-tuning); None: off
    label_smoothing: float = 0.1
    mixup: float = 0.8  # MixUp alpha; 0 disables
    cutmix: float = 1.0  # CutMix alpha; 0 disables (with both on, each batch picks one at random)
    randaugment: int | None = 9  # RandAugment magnitude (2 ops); None disables
    reprob: float = 0.25  # random erasing probability
    hflip: float = 0.5
    min_crop_scale: float = 0.08  # RandomResizedCrop keeps at least this share of the image
    drop_path: float = 0.1
    layer_scale: float = 1e-6
    head_init_scale: float = 1.0
    ema_decay: float | None = 0.9999  # None: no EMA
    clip_grad: float | None = None  # max gradient norm
    accum_steps: int = 1
    input_size: int | None = 224  # None: fit the data (small images stay small)
    crop_pct: float = 0.875  # eval: resize to input_size / crop_pct, then centre-crop

    def update(self, **overrides) -> "Recipe":
        names = {f.name for f in fields(self)}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"unknown recipe field(s): {', '.join(sorted(unknown))}")
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict:
        return asdict(self)


RECIPES = {
    # Paper Table 5: ImageNet-1K from scratch, 300 epochs at batch 4096 (drop path T 0.1 / S 0.4 / B, L 0.5).
    "in1k": Recipe(),
    # Paper Table 6: fine-tuning, lr 5e-5 at batch 512, 30 epochs, no warm-up, layer decay, no mixing.
    "finetune": Recipe(epochs=30, lr=5e-5, lr_base_batch=512, warmup_epochs=0, weight_decay=1e-8,
                       layer_decay=0.8, head_init_scale=0.001, mixup=0.0, cutmix=0.0, drop_path=0.2,
                       ema_decay=None),
    # Small data on a CPU (the built-in digits): a few minutes, light augmentation, no flips.
    "small": Recipe(model="convnext_atto", epochs=40, batch_size=64, lr=4e-3, lr_base_batch=64, warmup_epochs=2,
                    label_smoothing=0.1, mixup=0.0, cutmix=0.0, randaugment=None, reprob=0.0, hflip=0.0,
                    min_crop_scale=0.7, drop_path=0.0, ema_decay=None, input_size=None, crop_pct=1.0),
}
