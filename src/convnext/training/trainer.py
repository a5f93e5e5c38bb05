"""The training loop: recipe -> run directory with metrics, plots, checkpoints and final weights.

    convnext train                                   # ConvNeXt-atto on the built-in digits
    convnext train --data ~/pets --model convnext_tiny --pretrained --recipe finetune
    torchrun --nproc_per_node=8 -m convnext.cli train --data /imagenet --recipe in1k --model convnext_tiny
"""
import contextlib
import json
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from torchvision.transforms import v2
from tqdm import tqdm

from ..checkpoints.weights import load_weights, save_pretrained
from ..runtime import autotune
from ..runtime.precision import amp_dtype
from ..models.registry import create_model, model_options
from . import distributed, reporting, run_state
from .data import DataBundle, EpochSampler, build_data
from .evaluation import evaluate
from .optim import build_optimizer, lr_schedule
from .recipes import Recipe

CONFIG_FILE = "config.json"


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss, say); the last good checkpoint is kept."""


class Interrupted(Exception):
    """Stopped by SIGINT/SIGTERM after saving; the message says how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclass
class RunConfig:
    """Everything that defines a run besides the recipe; saved in config.json so --resume needs nothing else."""
    data: str = "digits"
    output_dir: str | None = None
    seed: int = 0
    workers: int = 0
    device: str | None = None
    amp: str | None = None  # "bf16" or "fp16" autocast where the device has the hardware; None: float32
    channels_last: bool = False
    compile: bool = False
    grad_checkpointing: bool = False
    deterministic: bool = False
    save_every: int | None = None  # also checkpoint every N optimizer steps
    keep_checkpoints: int = 2
    val_split: float | None = None
    on_bad_image: str = "error"
    weights: str | None = None  # start from a checkpoint in any format
    pretrained: str | None = None  # start from published weights ("default" or a tag)
    subset: int | None = None  # use at most this many train and val images (quick runs)
    max_steps: int | None = None  # stop this invocation after N optimizer steps in all (not kept on resume)
    task: str = "classify"  # or "fcmae" (convnext pretrain): which trainer resumes the run
    recipe: dict = field(default_factory=dict)


@contextlib.contextmanager
def stop_requests():
    """Turn SIGINT/SIGTERM into a list the loop checks between steps (installed before any set-up,
    so a signal during start-up is not lost either); the previous handlers come back afterwards."""
    seen: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: seen.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _build_model(recipe: Recipe, run: RunConfig, data: DataBundle) -> torch.nn.Module:
    options = model_options(recipe.model)
    wanted = {"num_classes": len(data.class_names), "in_chans": data.in_chans, "drop_path_rate": recipe.drop_path,
              "layer_scale_init_value": recipe.layer_scale, "head_init_scale": recipe.head_init_scale}
    model = create_model(recipe.model, **{k: v for k, v in wanted.items() if k in options})
    # A new head keeps the model's own init, already scaled by head_init_scale (0.001 to fine-tune).
    if run.weights:
        load_weights(model, run.weights, reset_head=True)
    elif run.pretrained:
        from ..checkpoints.hub import load_pretrained_weights

        load_pretrained_weights(model, recipe.model, None if run.pretrained == "default" else run.pretrained)
    model.class_names = data.class_names
    model.data_config = {"mean": data.mean, "std": data.std, "input_size": data.input_size,
                         "crop_pct": recipe.crop_pct}
    return model


def _mixer(recipe: Recipe, num_classes: int):
    choices = [m for alpha, m in ((recipe.mixup, v2.MixUp), (recipe.cutmix, v2.CutMix)) if alpha > 0]
    alphas = [a for a in (recipe.mixup, recipe.cutmix) if a > 0]
    if not choices:
        return None
    return v2.RandomChoice([m(alpha=a, num_classes=num_classes) for m, a in zip(choices, alphas)])


class Trainer:
    """Supervised classification; the loop, checkpoints, signals and DDP are shared with pre-training
    (`pretrainer.Pretrainer` overrides what differs: data, model, loss, validation, what is kept)."""

    task = "classify"
    columns = reporting.COLUMNS  # metrics.csv
    collate = None  # the DataLoader's default: stacked tensors

    def __init__(self, recipe: Recipe, run: RunConfig, run_dir: Path, context: distributed.Context):
        self.recipe, self.run, self.run_dir, self.ctx = recipe, run, run_dir, context
        torch.manual_seed(run.seed)
        if run.deterministic:
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.benchmark = False
        self.data = self.build_data()
        self.num_classes = len(self.data.class_names)
        self.model = self.build_model().to(context.device)
        self.check_input_size(self.data.input_size)
        if run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if run.grad_checkpointing:
            self.model.set_grad_checkpointing(True)

        self.effective_batch = recipe.batch_size * context.world_size * recipe.accum_steps
        self.lr = recipe.lr * self.effective_batch / recipe.lr_base_batch
        self.sampler = EpochSampler(len(self.data.train), True, run.seed, context.rank, context.world_size)
        self.loader = DataLoader(self.data.train, recipe.batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=run.workers, generator=torch.Generator().manual_seed(run.seed),
                                 collate_fn=self.collate)
        val_sampler = EpochSampler(len(self.data.val), False, run.seed, context.rank, context.world_size)
        self.val_loader = DataLoader(self.data.val, self.val_batch_size(), sampler=val_sampler, num_workers=run.workers,
                                     collate_fn=self.collate)
        self.steps_per_epoch = len(self.loader) // recipe.accum_steps
        if self.steps_per_epoch == 0:
            raise TrainingError(f"{len(self.data.train)} training images are fewer than one effective batch "
                                f"({self.effective_batch}); lower --batch-size")
        total = self.steps_per_epoch * recipe.epochs
        self.optimizer = self.build_optimizer()
        self.scheduler = lr_schedule(self.optimizer, total, round(recipe.warmup_epochs * self.steps_per_epoch),
                                     recipe.min_lr / self.lr, recipe.schedule)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
                    if recipe.ema_decay else None)
        self.autocast = amp_dtype(run.amp, context.device)  # None, with one line said, without the hardware
        self.scaler = torch.amp.GradScaler(context.device.type, enabled=self.autocast == torch.float16)
        self.mixer = _mixer(recipe, self.num_classes)
        self.network = self.distribute(self.model) if context.distributed else self.model
        if run.compile:
            self.network = torch.compile(self.network)
        self.epoch, self.step_in_epoch, self.global_step, self.best_top1 = 0, 0, 0, float("-inf")  # best score so far
        self.last_metrics = None  # (model, EMA) metrics of the last completed epoch
        self.loss_sum, self.loss_count = 0.0, 0  # this epoch's training loss so far

    # --- what differs between tasks ----------------------------------------------------------------
    def build_data(self) -> DataBundle:
        run = self.run
        return build_data(run.data, self.recipe, run.seed, run.val_split, run.on_bad_image, run.subset)

    def build_model(self) -> torch.nn.Module:
        return _build_model(self.recipe, self.run, self.data)

    def val_batch_size(self) -> int:
        return self.recipe.batch_size

    def build_optimizer(self) -> torch.optim.Optimizer:
        recipe = self.recipe
        return build_optimizer(self.model, self.lr, recipe.weight_decay, recipe.layer_decay, recipe.beta2)

    def distribute(self, model: torch.nn.Module) -> torch.nn.Module:
        return DistributedDataParallel(model)

    def prepare(self, batch) -> tuple:
        """A loader batch -> (inputs, targets) on the device, as `loss` takes them."""
        images, labels = batch
        images, labels = images.to(self.ctx.device), labels.to(self.ctx.device)
        if self.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.mixer is not None:
            images, labels = self.mixer(images, labels)
        return images, labels

    def check_input_size(self, size: int) -> None:
        if size < self.model.min_input_size:
            raise TrainingError(f"--input-size must be ≥ {self.model.min_input_size} for {self.recipe.model}, "
                                f"got {size}")

    def data_note(self) -> str:
        return f"{len(self.data.train)} train / {len(self.data.val)} val images, {self.num_classes} classes"

    def score(self, metrics: dict) -> float:
        """Higher is better: picks the best checkpoint (and the EMA over the model)."""
        return metrics["top1"]

    def row(self, metrics: dict) -> dict:
        return {"val_loss": metrics["loss"], "val_top1": metrics["top1"], "val_top5": metrics["top5"]}

    def describe(self, metrics: dict) -> str:
        return f"val_loss {metrics['loss']:.4f}  top1 {100 * metrics['top1']:.2f}%  top5 {100 * metrics['top5']:.2f}%"

    def after_epoch(self) -> None:
        """Per-epoch pictures beyond the curves (pre-training's reconstructions)."""

    def finish(self, wall_s: float) -> dict:
        """Write what the run leaves (weights, plots, summary.json) and return the summary."""
        model, metrics, which = self.final_model()
        summary = {"test_top1": metrics["top1"], "test_top5": metrics["top5"], "test_loss": metrics["loss"],
                   "epochs": self.epoch, "steps": self.global_step, "wall_s": wall_s,
                   "run_dir": str(self.run_dir), "model": self.recipe.model, "weights_from": which,
                   "effective_batch": self.effective_batch, "lr": self.lr}
        if self.ctx.is_main:
            save_pretrained(model, self.run_dir)
            reporting.plot_confusion(metrics["confusion"], self.data.class_names, self.run_dir / "confusion.png")
        return summary

    # --- checkpoints -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None, "rng": run_state.rng_state(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "best_top1": self.best_top1, "loss_sum": self.loss_sum, "loss_count": self.loss_count,
            "kernels": autotune.choices(),  # a resumed run computes with the same kernels: bit-identical
        }

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        run_state.set_rng_state(state["rng"])
        autotune.pin(state.get("kernels", {}))
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step, self.best_top1 = state["global_step"], state["best_top1"]
        self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]

    def save(self, best: bool = False) -> None:
        if self.ctx.is_main:
            run_state.save(self.state(), self.run_dir, self.global_step, self.run.keep_checkpoints, best)

    # --- the loop --------------------------------------------------------------------------------
    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.ctx.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            logits = self.network(images)
        return F.cross_entropy(logits.float(), labels, label_smoothing=self.recipe.label_smoothing)

    def train_epoch(self, stop: list[int], progress: bool) -> float:
        recipe, accum = self.recipe, self.recipe.accum_steps
        self.network.train()
        self.data.train.epoch = self.epoch
        self.sampler.set_epoch(self.epoch, start=self.step_in_epoch * accum * recipe.batch_size)
        batches = iter(self.loader)
        if self.step_in_epoch == 0:
            self.loss_sum, self.loss_count = 0.0, 0  # kept in checkpoints: a resumed epoch reports the same mean
        bar = tqdm(total=self.steps_per_epoch, initial=self.step_in_epoch, disable=not progress, leave=False,
                   desc=f"epoch {self.epoch + 1}/{recipe.epochs}", unit="step", mininterval=1.0)
        while self.step_in_epoch < self.steps_per_epoch:
            for micro in range(accum):
                images, labels = self.prepare(next(batches))
                sync = micro == accum - 1 or not self.ctx.distributed
                with self.network.no_sync() if not sync else contextlib.nullcontext():
                    loss = self.loss(images, labels)
                    self.scaler.scale(loss / accum).backward()
                if distributed.broadcast_flag(not torch.isfinite(loss).item(), self.ctx):
                    raise TrainingError(f"non-finite loss at step {self.global_step + 1} (epoch {self.epoch + 1}); "
                                        f"stopped, keeping the last good checkpoint in {self.run_dir}")
                self.loss_sum, self.loss_count = self.loss_sum + loss.item(), self.loss_count + 1
            if recipe.clip_grad:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.scheduler.step()
            if self.ema:
                self.ema.update_parameters(self.model)
            self.step_in_epoch += 1
            self.global_step += 1
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            if self.run.save_every and self.global_step % self.run.save_every == 0:
                self.save()
            if distributed.broadcast_flag(bool(stop), self.ctx) or self.global_step == self.run.max_steps:
                break
        bar.close()
        return self.loss_sum / max(1, self.loss_count)

    def validate(self) -> tuple[dict, dict | None]:
        kwargs = dict(context=self.ctx, channels_last=self.run.channels_last, autocast_dtype=self.autocast)
        metrics = evaluate(self.model, self.val_loader, self.num_classes, **kwargs)
        ema_metrics = evaluate(self.ema.module, self.val_loader, self.num_classes, **kwargs) if self.ema else None
        return metrics, ema_metrics

    def fit(self, log, say, stop: list[int]) -> dict:
        start = time.time()
        while self.epoch < self.recipe.epochs:
            epoch_start = time.time()
            train_loss = self.train_epoch(stop, progress=self.ctx.is_main)
            if stop or (self.step_in_epoch < self.steps_per_epoch):  # interrupted, or max_steps mid-epoch
                self.save()
                self.last_metrics = None
                if stop:
                    name = signal.Signals(stop[0]).name
                    raise Interrupted(f"stopped by {name} at epoch {self.epoch + 1}, step {self.global_step}; "
                                      f"checkpoint saved. Resume with: {COMMAND[self.task]} --resume {self.run_dir}",
                                      stop[0])
                break
            metrics, ema_metrics = self.last_metrics = self.validate()
            chosen = ema_metrics if ema_metrics and self.score(ema_metrics) > self.score(metrics) else metrics
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            best = self.score(chosen) > self.best_top1
            self.best_top1 = max(self.best_top1, self.score(chosen))
            row = {"epoch": self.epoch, "step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                   "train_loss": train_loss, **self.row(chosen), "epoch_s": time.time() - epoch_start}
            if self.ctx.is_main:
                log.epoch(row)
                ema_note = f"  (EMA {100 * ema_metrics['top1']:.2f}%)" if ema_metrics else ""
                say(f"epoch {self.epoch}/{self.recipe.epochs}  train_loss {train_loss:.4f}  "
                    f"{self.describe(chosen)}{ema_note}  lr {row['lr']:.2e}  {row['epoch_s']:.1f}s")
                self.after_epoch()
            self.save(best=best)
            if self.global_step == self.run.max_steps:
                break
        return {"wall_s": time.time() - start}

    def final_model(self) -> tuple[torch.nn.Module, dict, str]:
        """The weights to ship: the EMA when it validates better, else the model."""
        metrics, ema_metrics = self.last_metrics or self.validate()
        if ema_metrics and self.score(ema_metrics) > self.score(metrics):
            ema = self.ema.module
            ema.class_names, ema.data_config = self.model.class_names, self.model.data_config
            ema.model_name, ema.model_overrides = self.model.model_name, self.model.model_overrides
            return ema, ema_metrics, "ema"
        return self.model, metrics, "model"


def prepare_run_dir(recipe: Recipe, run: RunConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(run.output_dir or f"runs/{recipe.model}-{stamp}")


def train(recipe: Recipe, run: RunConfig, say=print, resume_dir: Path | None = None,
          trainer_class: type[Trainer] = Trainer) -> dict:
    """Train one run; returns the summary (test_top1, test_top5, epochs, wall_s, run_dir, ...)."""
    context = distributed.setup(run.device)
    deterministic_before = torch.are_deterministic_algorithms_enabled()  # --deterministic is per run
    with contextlib.ExitStack() as cleanup:
        stop = cleanup.enter_context(stop_requests())
        cleanup.callback(distributed.teardown)
        cleanup.callback(torch.use_deterministic_algorithms, deterministic_before)
        return _train(recipe, run, say, resume_dir, context, stop, trainer_class)


def _train(recipe: Recipe, run: RunConfig, say, resume_dir: Path | None, context: distributed.Context,
           stop: list[int], trainer_class: type[Trainer]) -> dict:
    run_dir = resume_dir or prepare_run_dir(recipe, run)
    if context.distributed and resume_dir is None and run.output_dir is None:
        raise TrainingError("with torchrun, pass --output-dir so every process writes to the same run")
    run = RunConfig(**{**asdict(run), "recipe": recipe.as_dict(), "output_dir": str(run_dir),
                       "task": trainer_class.task})
    trainer = trainer_class(recipe, run, run_dir, context)
    state = run_state.load_latest(run_dir) if resume_dir else None
    if state:
        trainer.restore(state)
    log = None
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / CONFIG_FILE).write_text(json.dumps(asdict(run), indent=2))
        log = reporting.RunLog(run_dir, trainer.columns)
        log.truncate(trainer.epoch)
        where = f"resumed at epoch {trainer.epoch + 1}, step {trainer.global_step}" if state else "started"
        say(f"{recipe.model}: {where}; {trainer.data_note()}, input {trainer.data.input_size}px, "
            f"lr {recipe.lr:g} at batch {recipe.lr_base_batch} -> {trainer.lr:.3g} for effective batch "
            f"{trainer.effective_batch} ({recipe.batch_size} x {context.world_size} process(es) x "
            f"{recipe.accum_steps} accumulation); run dir {run_dir}")
        if trainer.data.skipped:
            say(f"skipped {len(trainer.data.skipped)} unreadable image(s), e.g. {trainer.data.skipped[0]}")
    timing = trainer.fit(log, say, stop)
    summary = trainer.finish(timing["wall_s"])
    if context.is_main:
        if (run_dir / reporting.METRICS_FILE).exists():
            reporting.plot_curves(run_dir / reporting.METRICS_FILE, run_dir / "curves.png")
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        log.close()
    return summary


COMMAND = {"classify": "convnext train", "fcmae": "convnext pretrain", "detect": "convnext detect train",
           "segment": "convnext segment train"}


def resume(run_dir: str | Path, say=print, max_steps: int | None = None,
           trainer_class: type[Trainer] = Trainer) -> dict:
    """Continue a run from its newest checkpoint, with the config it was started with."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise TrainingError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    saved = json.loads((run_dir / CONFIG_FILE).read_text())
    task = saved.get("task", "classify")
    if task != trainer_class.task:
        raise TrainingError(f"{run_dir} is a {COMMAND.get(task, task)} run: resume it with "
                            f"{COMMAND.get(task, task)} --resume {run_dir}")
    recipe = Recipe(**saved.pop("recipe"))
    saved["max_steps"] = max_steps
    return train(recipe, RunConfig(**saved), say=say, resume_dir=run_dir, trainer_class=trainer_class)
