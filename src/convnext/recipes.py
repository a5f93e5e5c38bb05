"""Training recipes as data: the paper's ImageNet recipe, its fine-tuning recipe, and a small-data preset.

Every field can be overridden from the command line (`--lr`, `--epochs`, ...). Learning rates are given
at `lr_base_batch` and scaled linearly to the effective batch (batch x processes x accumulation).
"""
from dataclasses import asdict, dataclass, field, fields, replace


@dataclass(frozen=True)
class Recipe:
    model: str = field(default="convnext_tiny",
                                     metadata={"help": "model name (any registered, roadmap steps included)"})
    epochs: int = field(default=300, metadata={"help": "training epochs"})
    batch_size: int = field(default=128, metadata={"help": "images per process per step"})
    lr: float = field(default=4e-3,
                                     metadata={"help": "peak learning rate at lr_base_batch, scaled linearly to the effective batch"})
    lr_base_batch: int = field(default=4096, metadata={"help": "the batch size --lr is given for"})
    min_lr: float = field(default=1e-6, metadata={"help": "learning rate at the end of the cosine"})
    warmup_epochs: float = field(default=20, metadata={"help": "linear warm-up, per iteration"})
    weight_decay: float = field(default=0.05, metadata={"help": "never on biases, norms, layer scale or GRN"})
    layer_decay: float | None = field(default=None, metadata={"help": "layer-wise lr decay (fine-tuning); None: off"})
    label_smoothing: float = field(default=0.1, metadata={"help": "label smoothing"})
    mixup: float = field(default=0.8, metadata={"help": "MixUp alpha; 0 disables"})
    cutmix: float = field(default=1.0,
                                     metadata={"help": "CutMix alpha; 0 disables (with both on, each batch picks one at random)"})
    randaugment: int | None = field(default=9, metadata={"help": "RandAugment magnitude (2 ops); None disables"})
    reprob: float = field(default=0.25, metadata={"help": "random erasing probability"})
    hflip: float = field(default=0.5, metadata={"help": "horizontal flip probability"})
    min_crop_scale: float = field(default=0.08,
                                     metadata={"help": "RandomResizedCrop keeps at least this share of the image"})
    drop_path: float = field(default=0.1, metadata={"help": "stochastic depth rate at the last block"})
    layer_scale: float = field(default=1e-6, metadata={"help": "layer scale init value (0: none)"})
    head_init_scale: float = field(default=1.0, metadata={"help": "head weight scale at init (0.001 to fine-tune)"})
    ema_decay: float | None = field(default=0.9999, metadata={"help": "None: no EMA"})
    clip_grad: float | None = field(default=None, metadata={"help": "max gradient norm"})
    accum_steps: int = field(default=1, metadata={"help": "gradient accumulation steps"})
    input_size: int | None = field(default=224, metadata={"help": "None: fit the data (small images stay small)"})
    crop_pct: float = field(default=0.875, metadata={"help": "eval: resize to input_size / crop_pct, then centre-crop"})

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
