"""No recipe field is silently dropped: each one, set away from its preset, reaches the model or the
loop built for one model of each kind (V1, V2, isotropic, a roadmap step of each regime, FCMAE, the
detector, UperNet), or is refused in one line naming the flag and the model."""
import dataclasses

import pytest
import torch
from torchvision.ops import StochasticDepth

from convnext.training import tasks
from convnext.training.distributed import Context
from convnext.training.loop import Loop, RunConfig
from convnext.training.recipes import DETECT_RECIPES, PRETRAIN_RECIPES, RECIPES, SEGMENT_RECIPES
from convnext.training.tasks.base import TrainingError

CPU = Context(device=torch.device("cpu"))

# kind: (task, preset, model, data, subset, batch)
KINDS = {
    "v1": (tasks.Classification, RECIPES["small"], "convnext_test", "digits", 16, 8),
    "v2": (tasks.Classification, RECIPES["small"], "convnextv2_test", "digits", 16, 8),
    "isotropic": (tasks.Classification, RECIPES["small"], "convnext_isotropic_test", "digits", 16, 8),
    "roadmap r50 last step": (tasks.Classification, RECIPES["roadmap"], "roadmap_r50_13_separate_downsampling",
                              "digits", 8, 4),
    "roadmap r200 step": (tasks.Classification, RECIPES["roadmap"], "roadmap_r200_03_patchify_stem", "digits", 8, 4),
    "roadmap small step": (tasks.Classification, RECIPES["roadmap"], "roadmap_small_05_width", "digits", 16, 8),
    "fcmae": (tasks.Pretraining, PRETRAIN_RECIPES["fcmae_small"], "convnextv2_test", "digits", 16, 8),
    "detector": (tasks.Detection, DETECT_RECIPES["shapes"], "convnext_test", "shapes", 4, 2),
    "upernet": (tasks.Segmentation, SEGMENT_RECIPES["shapes"], "convnext_test", "shapes", 4, 2),
}


def transform_text(loop) -> str:
    return repr(loop.data.train.transform)


def drop_rates(loop) -> list[float]:
    return [m.p for m in loop.model.modules() if isinstance(m, StochasticDepth)]


def gammas(loop) -> list[torch.Tensor]:
    return [p for name, p in loop.model.named_parameters() if name.endswith(".gamma") and ".grn." not in name]


def floor(loop) -> float:
    return loop.recipe.min_lr / loop.lr


def lr_factor(loop, step: int) -> float:
    return loop.scheduler.lr_lambdas[0](step)


def stepped(loop):
    """One optimizer step of the loop (for the fields only a step reads)."""
    loop.run.max_steps = 1
    loop.train_epoch([], progress=False)
    return loop


def ema_decay(loop) -> float:
    """The decay the EMA averages with, read off two updates."""
    model, ema = loop.model, loop.ema
    ema.update_parameters(model)  # the first update copies
    before = [p.detach().clone() for p in ema.module.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update_parameters(model)
    new, old, now = next(model.parameters()), before[0], next(ema.module.parameters())
    return ((now - new) / (old - new)).flatten()[0].item()


def smoothing(loop, monkeypatch) -> float:
    import convnext.training.tasks.classification as classification

    seen = {}
    real = classification.F.cross_entropy
    monkeypatch.setattr(classification.F, "cross_entropy", lambda *a, **k: seen.update(k) or real(*a, **k))
    images, labels = loop.task.prepare(next(iter(loop.loader)))
    loop.task.loss(loop.model, images, labels)
    return seen["label_smoothing"]


def clipped(loop, monkeypatch) -> float:
    seen = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, norm, *a, **k: seen.append(norm) or real(params, norm, *a, **k))
    stepped(loop)
    return seen[0]


def backbone_of(model):
    return model.backbone.body if hasattr(model.backbone, "body") else model.backbone


# field: (value set, probe(loop, monkeypatch) -> what the model or loop took, expected from the value)
PROBES = {
    "model": (None, None),  # the kind's own model: every probe below is on it
    # the schedule reaches its floor after 3 epochs, not before (the probed loops otherwise run 2)
    "epochs": (3, lambda loop, mp: (lr_factor(loop, 2 * loop.steps_per_epoch) > floor(loop) + 1e-6,
                                    lr_factor(loop, 3 * loop.steps_per_epoch)), lambda v, loop: (True, floor(loop))),
    "batch_size": (4, lambda loop, mp: loop.loader.batch_size, lambda v, loop: v),
    "lr": (3e-3, lambda loop, mp: max(g["initial_lr"] for g in loop.optimizer.param_groups),
           lambda v, loop: v * loop.effective_batch / loop.recipe.lr_base_batch),
    "lr_base_batch": (2, lambda loop, mp: max(g["initial_lr"] for g in loop.optimizer.param_groups),
                      lambda v, loop: loop.recipe.lr * loop.effective_batch / v),
    "min_lr": (1e-5, lambda loop, mp: loop.lr * lr_factor(loop, loop.steps_per_epoch * loop.recipe.epochs),
               lambda v, loop: v),
    "warmup_epochs": (1.0, lambda loop, mp: (lr_factor(loop, 0), lr_factor(loop, loop.steps_per_epoch - 1)),
                      lambda v, loop: (1 / loop.steps_per_epoch, 1.0)),
    # a quarter of the way: poly's straight line (cosine would be at 0.85 of the way down)
    "schedule": ("poly", lambda loop, mp: lr_factor(loop, loop.steps_per_epoch * loop.recipe.epochs // 4),
                 lambda v, loop: pytest.approx(0.75 + 0.25 * floor(loop))),
    "optimizer": ("sgd", lambda loop, mp: type(loop.optimizer).__name__, lambda v, loop: "SGD"),
    "weight_decay": (0.02, lambda loop, mp: max(g["weight_decay"] for g in loop.optimizer.param_groups), lambda v, loop: v),
    "beta2": (0.9, lambda loop, mp: loop.optimizer.param_groups[0]["betas"][1], lambda v, loop: v),
    "layer_decay": (0.5, lambda loop, mp: len({g["lr_scale"] for g in loop.optimizer.param_groups}) > 1, lambda v, loop: True),
    "clip_grad": (0.7, clipped, lambda v, loop: v),
    "accum_steps": (2, lambda loop, mp: loop.effective_batch, lambda v, loop: v * loop.recipe.batch_size),
    "ema_decay": (0.5, lambda loop, mp: round(ema_decay(loop), 4), lambda v, loop: v),
    "drop_path": (0.3, lambda loop, mp: max(drop_rates(loop)), lambda v, loop: pytest.approx(v)),
    "input_size": (64, lambda loop, mp: loop.data.input_size if not hasattr(loop.model, "transform") else
                   loop.model.transform.min_size[0], lambda v, loop: v),
    "hflip": (0.3, lambda loop, mp: "HorizontalFlip(p=0.3)" in transform_text(loop), lambda v, loop: True),
    "label_smoothing": (0.2, smoothing, lambda v, loop: v),
    "mixup": (0.5, lambda loop, mp: "MixUp(alpha=0.5" in repr(loop.task.mixer), lambda v, loop: True),
    "cutmix": (0.5, lambda loop, mp: "CutMix(alpha=0.5" in repr(loop.task.mixer), lambda v, loop: True),
    "randaugment": (5, lambda loop, mp: "magnitude=5" in transform_text(loop), lambda v, loop: True),
    "reprob": (0.3, lambda loop, mp: "RandomErasing(p=0.3" in transform_text(loop), lambda v, loop: True),
    "min_crop_scale": (0.6, lambda loop, mp: "scale=(0.6, 1.0)" in transform_text(loop), lambda v, loop: True),
    "layer_scale": (0.1, lambda loop, mp: sorted({round(g.min().item(), 6) for g in gammas(loop)}),
                    lambda v, loop: [v]),
    "head_init_scale": (0.001, lambda loop, mp: loop.model.head.weight.std().item() < 0.02 * 0.01, lambda v, loop: True),
    "crop_pct": (0.9, lambda loop, mp: (loop.model.encoder if hasattr(loop.model, "encoder") else loop.model)
                 .data_config["crop_pct"], lambda v, loop: v),
    "mask_ratio": (0.5, lambda loop, mp: loop.model.mask_ratio, lambda v, loop: v),
    "rois_per_image": (32, lambda loop, mp: loop.model.roi_heads.fg_bg_sampler.batch_size_per_image, lambda v, loop: v),
    "proposals": (100, lambda loop, mp: loop.model.rpn._post_nms_top_n["training"], lambda v, loop: v),
    "head_width": (32, lambda loop, mp: loop.model.backbone.out_channels if hasattr(loop.model.backbone, "fpn")
                   else loop.model.decode_head.classifier.in_channels, lambda v, loop: v),
    "stem": ("overlap", lambda loop, mp: type(loop.model.downsample_layers[0][1]).__name__, lambda v, loop: "GELU"),
    "patch_size": (2, lambda loop, mp: loop.model.downsample_layers[0][0].stride, lambda v, loop: (v, v)),
    "norm": ("batch", lambda loop, mp: type(loop.model.stages[0][0].norm).__name__,
             lambda v, loop: "BatchNormChannelsLast"),
    "scale_jitter": (1.5, lambda loop, mp: f"max_size={round(1.5 * loop.recipe.input_size)}," in transform_text(loop),
                     lambda v, loop: True),
}

# Refused, by (kind, field): what the one line says.
REFUSED = {
    ("v2", "layer_scale"): "--layer-scale 0.1: convnextv2_test has no layer scale to set",
    ("roadmap r200 step", "layer_scale"): "roadmap_r200_03_patchify_stem has no layer scale",
    ("roadmap small step", "layer_scale"): "roadmap_small_05_width has no layer scale",
    ("fcmae", "layer_decay"): "--layer-decay 0.5: layer-wise lr decay is for fine-tuning",
    **{(kind, name): f"--{name.replace('_', '-')} {value}: {model} has no {what} option"
       for kind, model in (("isotropic", "convnext_isotropic_test"), ("roadmap r50 last step", "roadmap_r50_13_separate_downsampling"),
                           ("roadmap r200 step", "roadmap_r200_03_patchify_stem"), ("roadmap small step", "roadmap_small_05_width"))
       for name, value, what in (("stem", "overlap", "stem"), ("patch_size", 2, "patch size"), ("norm", "batch", "norm"))},
}
CASES = [(kind, f.name) for kind, (task, preset, *_) in KINDS.items() for f in dataclasses.fields(preset)
         if f.name != "model"]


def test_every_field_of_every_recipe_is_probed():
    names = {f.name for _, preset, *_ in KINDS.values() for f in dataclasses.fields(preset)}
    assert names == set(PROBES)


@pytest.mark.parametrize("kind,field", CASES, ids=[f"{k}-{f}" for k, f in CASES])
def test_a_recipe_field_reaches_the_model_or_loop_or_is_refused(kind, field, tmp_path, monkeypatch):
    task, preset, model, data, subset, batch = KINDS[kind]
    value, probe, expected = PROBES[field]
    overrides = {"model": model, "batch_size": batch, "epochs": 2, "warmup_epochs": 0, field: value}
    if field == "input_size" and data == "digits":
        value = overrides["input_size"] = 64 if task is tasks.Pretraining else 40
    if field == "schedule":
        overrides["epochs"] = 4
    if field in ("mixup", "cutmix"):
        overrides = {**overrides, "mixup": 0.0, "cutmix": 0.0, field: value}
    if field == "ema_decay" and value == preset.ema_decay:
        value = overrides["ema_decay"] = 0.25
    recipe = preset.update(**overrides)
    run = RunConfig(data=data, subset=subset, output_dir=str(tmp_path), recipe=recipe.as_dict())
    refusal = REFUSED.get((kind, field))
    if refusal:
        with pytest.raises(TrainingError) as refused:
            Loop(task(recipe, run, CPU), run, tmp_path, CPU)
        assert refusal in str(refused.value) and len(str(refused.value).splitlines()) == 1
        return
    loop = Loop(task(recipe, run, CPU), run, tmp_path, CPU)
    taken = probe(loop, monkeypatch)
    assert taken == expected(value, loop), (kind, field, taken)
