"""The training loop, written once for every task: recipe + task -> run directory with metrics, plots,
checkpoints and what the task leaves (weights, pictures).

    convnext train                                   # ConvNeXt-atto on the built-in digits
    convnext train --data ~/pets --model convnext_tiny --pretrained --recipe finetune
    torchrun --nproc_per_node=8 -m convnext.cli train --data /imagenet --recipe in1k --model convnext_tiny

A task (`training/tasks/`) supplies the data, the model, the loss, the validation score and its
outputs; the loop owns the steps, gradient accumulation, checkpoints and bit-identical resume,
SIGINT/SIGTERM, DDP, EMA, autocast and the process-wide switches (`runtime.process`).
"""
import contextlib
import json
import math
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..accelerate import accelerate, autotuner_of
from ..accelerate import describe as acceleration
from ..accelerate.machine import load_machine_choices, save_machine_choices
from ..checkpoints.files import Checkpoint
from ..models.layers import set_grad_checkpointing
from ..runtime.atomic import WriteError, write_text
from ..runtime.hardware import describe
from ..runtime.precision import amp_dtype
from ..runtime.process import process_settings
from . import distributed, reporting, run_state
from .data import EpochSampler
from .optim import lr_schedule
from .recipes import Recipe
from .starting_weights import load_starting_weights, read_starting_weights
from .tasks import TASKS
from .tasks.base import Task, TrainingError

CONFIG_FILE = "config.json"
# Attributes that describe the trained network (class names, preprocessing, its registry name): an EMA
# copy that ships instead of the model carries them too.
DESCRIPTIONS = ("class_names", "data_config", "model_name", "model_overrides")
# Optimizer steps between the loop's looks at the device: the losses are read (and checked finite), and
# under DDP the ranks agree on stop requests and kernel choices. Anything more often would make the host
# wait for the GPU every step; a checkpoint and an epoch's end look too.
LOG_EVERY = 50


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
    accelerate: bool = True  # the model's blocks computed by the measured kernels (`convnext.accelerate`)
    grad_checkpointing: bool = False
    deterministic: bool = False
    save_every: int | None = None  # also checkpoint every N optimizer steps
    keep_checkpoints: int = 2
    val_every: int = 1  # validate every N epochs, and always after the last
    val_split: float | None = None
    on_bad_image: str = "error"
    weights: str | None = None  # start from a checkpoint in any format
    pretrained: str | None = None  # start from published weights ("default" or a tag)
    subset: int | None = None  # use at most this many train and val images (quick runs)
    image_column: str | None = None  # a `datasets` data set's image and label columns (None: found)
    label_column: str | None = None
    max_steps: int | None = None  # stop this invocation after N optimizer steps in all (not kept on resume)
    task: str = "classify"  # which task (and command) the run is
    recipe: dict = field(default_factory=dict)


@contextlib.contextmanager
def stop_requests():
    """Turn SIGINT/SIGTERM into a list the loop checks between steps (installed before any set-up,
    so a signal during start-up is not lost either); the previous handlers come back afterwards. A
    request that came after the last step (during the final evaluation) is passed on to an enclosing
    `stop_requests` (a study of many runs), which stops before the next run instead of losing it."""
    seen: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: seen.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield seen
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in seen[:1]:
            if callable(previous[signum]) and previous[signum] is not signal.default_int_handler:
                previous[signum](signum, None)


class Loop:
    """One run of one task: built from the recipe, then `fit`, then `finish`."""

    def __init__(self, task: Task, run: RunConfig, run_dir: Path, context: distributed.Context,
                 starting: Checkpoint | None = None):
        recipe = task.recipe
        self.task, self.recipe, self.run, self.run_dir, self.ctx = task, recipe, run, run_dir, context
        torch.manual_seed(run.seed)
        task.starting = starting or read_starting_weights(run)  # one reading for the data and the network
        self.data = task.data = task.build_data()
        network = task.start_network()
        load_starting_weights(network, run, recipe.model, task.starting)
        task.starting = None  # its tensors are the network's now: not held through the run
        self.model = task.build_model(network).to(context.device)
        task.check_input_size(self.model, self.data.input_size)
        if run.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if run.grad_checkpointing and not set_grad_checkpointing(self.model):
            raise TrainingError(f"--grad-checkpointing: {type(self.model).__name__} has no ConvNeXt blocks to recompute")
        self.notes: list[str] = []  # what the transform said: the header line carries it
        # The kernel choices of the run: this machine's from the runs before (so that fresh runs agree),
        # measured where there are none until the first checkpoint, saved in every one.
        self.tuner = autotuner_of(accelerate(self.model, say=self.notes.append)) if run.accelerate else None
        if self.tuner:
            load_machine_choices(self.tuner, context.device)

        self.effective_batch = recipe.batch_size * context.world_size * recipe.accum_steps
        self.lr = recipe.lr * self.effective_batch / recipe.lr_base_batch
        self.sampler = EpochSampler(len(self.data.train), True, run.seed, context.rank, context.world_size)
        self.loader = DataLoader(self.data.train, recipe.batch_size, sampler=self.sampler, drop_last=True,
                                 num_workers=run.workers, generator=torch.Generator().manual_seed(run.seed),
                                 collate_fn=task.collate)
        val_sampler = EpochSampler(len(self.data.val), False, run.seed, context.rank, context.world_size)
        self.val_loader = DataLoader(self.data.val, task.val_batch_size(), sampler=val_sampler,
                                     num_workers=run.workers, collate_fn=task.collate)
        self.steps_per_epoch = len(self.loader) // recipe.accum_steps
        if self.steps_per_epoch == 0:
            raise TrainingError(f"{len(self.data.train)} training images are fewer than one effective batch "
                                f"({self.effective_batch}); lower --batch-size")
        self.optimizer = task.optimizer(self.model, self.lr)
        self.scheduler = lr_schedule(self.optimizer, self.steps_per_epoch * recipe.epochs,
                                     round(recipe.warmup_epochs * self.steps_per_epoch), recipe.min_lr / self.lr,
                                     recipe.schedule)
        self.ema = (AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema_decay), use_buffers=True)
                    if recipe.ema_decay else None)
        if self.ema and self.tuner:  # the copy computes with the run's choices, not a copy of them
            accelerate(self.ema.module, self.tuner)
        self.autocast = task.autocast = amp_dtype(run.amp, context.device)  # None, said, without the hardware
        self.scaler = torch.amp.GradScaler(context.device.type, enabled=self.autocast == torch.float16)
        self.network = task.distribute(self.model) if context.distributed else self.model
        if run.compile:
            self.network = task.compile(self.network)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best_score = float("-inf")  # the task's validation score (higher is better) of the best epoch
        self.last_metrics = None  # (model, EMA) metrics of the last completed epoch
        self.loss_sum, self.loss_count = 0.0, 0  # this epoch's training loss so far (read at each look)
        self.unread: list[tuple[int, torch.Tensor]] = []  # (step, loss) on the device, since the last look
        self.steps_this_process = 0
        # This epoch's seconds in processes before this one (kept in checkpoints: a resumed epoch reports
        # all of its time, not the part after the resume), and when this process's part of it began.
        self.epoch_seconds_before, self.epoch_resumed_at = 0.0, None
        self.kernels_seen = self.tuner.version if self.tuner else 0  # choices measured before the last agreement

    # --- checkpoints -----------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None, "rng": run_state.rng_state(),
            "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
            "best_score": self.best_score, "loss_sum": self.loss_sum, "loss_count": self.loss_count,
            "epoch_seconds": self.epoch_seconds(),
            # a resumed run computes with the same kernels: bit-identical
            "kernels": self.tuner.state_dict() if self.tuner else {},
        }

    def restore(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        if self.ema:
            self.ema.load_state_dict(state["ema"])
        run_state.set_rng_state(state["rng"])
        # Exactly the checkpoint's kernels, whatever this process chose before: the uninterrupted run
        # stopped measuring at its first checkpoint, and so does this one.
        if self.tuner:
            self.tuner.reset()
            self.tuner.load_state_dict(state.get("kernels") or {"version": 1, "choices": []})
            self.tuner.measuring = False
        self.epoch, self.step_in_epoch = state["epoch"], state["step_in_epoch"]
        self.global_step = state["global_step"]
        self.best_score = state.get("best_score", state.get("best_top1"))  # the key's name before 0.3
        self.loss_sum, self.loss_count = state["loss_sum"], state["loss_count"]
        self.epoch_seconds_before = state.get("epoch_seconds", 0.0)  # older checkpoints: only the part after the resume

    def save(self, best: bool = False) -> None:
        self.read_losses()  # a checkpoint never holds weights a non-finite loss trained
        if self.ctx.is_main:
            run_state.save(self.state(), self.run_dir, self.global_step, self.run.keep_checkpoints, best)
        if self.tuner and self.tuner.measuring:  # from here on the run depends on the checkpoint alone
            self.tuner.measuring = False
            if self.ctx.is_main:
                save_machine_choices(self.tuner, self.ctx.device)  # for the next fresh run here

    # --- the loop --------------------------------------------------------------------------------
    def loss(self, inputs, targets) -> torch.Tensor:
        with torch.autocast(self.ctx.device.type, dtype=self.autocast, enabled=self.autocast is not None):
            return self.task.loss(self.network, inputs, targets)

    def agree_on_kernels(self, stop: bool = False) -> bool:
        """Under DDP: whether any rank was asked to stop and, once any rank has measured new kernel
        choices, every rank takes rank 0's, so that all ranks run the same kernels (one all-reduce)."""
        version = self.tuner.version if self.tuner else 0
        stop, new_kernels = distributed.any_of([stop, version != self.kernels_seen], self.ctx)
        if new_kernels and self.ctx.distributed:
            self.tuner.agree()
        self.kernels_seen = version
        return stop

    def read_losses(self) -> None:
        """The look at the device: the losses since the last one, added to the epoch's sum one by one (as
        a step at a time would: a resumed run's sum is the same) and checked finite, naming the first
        step that was not (its weights are not saved; the last good checkpoint stays). Every rank looks
        at the same steps, and stops if any saw a non-finite loss."""
        steps = [step for step, _ in self.unread]
        values = torch.stack([loss for _, loss in self.unread]).tolist() if self.unread else []  # the one sync
        self.unread = []
        bad = next((step for step, value in zip(steps, values) if not math.isfinite(value)), None)
        if distributed.any_of([bad is not None], self.ctx)[0]:
            where = f"step {bad}" if bad is not None else "another process's step"
            raise TrainingError(f"non-finite loss at {where} (epoch {self.epoch + 1}); "
                                f"stopped, keeping the last good checkpoint in {self.run_dir}")
        for value in values:
            self.loss_sum, self.loss_count = self.loss_sum + value, self.loss_count + 1

    def reached_max_steps(self) -> bool:
        """Whether the run has taken its --max-steps: a run resumed at or past them takes no further step
        (and draws nothing), so it ends as the uninterrupted one did after its last."""
        return self.run.max_steps is not None and self.global_step >= self.run.max_steps

    def train_epoch(self, stop: list[int], progress: bool) -> float:
        recipe, accum = self.recipe, self.recipe.accum_steps
        if self.reached_max_steps():
            return self.loss_sum / max(1, self.loss_count)
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
                inputs, targets = self.task.prepare(next(batches))
                sync = micro == accum - 1 or not self.ctx.distributed
                with self.network.no_sync() if not sync else contextlib.nullcontext():
                    loss = self.loss(inputs, targets)
                    self.scaler.scale(loss / accum).backward()
                self.unread.append((self.global_step + 1, loss.detach()))  # read at the next look
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
            self.steps_this_process += 1
            bar.update()
            if self.run.save_every and self.global_step % self.run.save_every == 0:
                self.save()
            # The look: every LOG_EVERY steps and at the epoch's end; under DDP also after this process's
            # first step, when the kernels it measured are agreed on before the ranks compute apart.
            look = (self.global_step % LOG_EVERY == 0 or self.step_in_epoch == self.steps_per_epoch
                    or (self.ctx.distributed and self.steps_this_process == 1))
            if look:
                self.read_losses()
                bar.set_postfix(loss=f"{self.loss_sum / max(1, self.loss_count):.3f}", refresh=False)
            # Alone, a stop request is seen at once; under DDP at a look, by all ranks together.
            if self.ctx.distributed:
                asked = look and self.agree_on_kernels(bool(stop))
            else:
                asked = bool(stop)
            if asked or self.reached_max_steps():
                break
        bar.close()
        self.read_losses()
        return self.loss_sum / max(1, self.loss_count)

    def validate(self) -> tuple[dict, dict | None]:
        with self.rng_set_aside():
            metrics = self.task.validate(self.model, self.val_loader, self.autocast)
            ema_metrics = self.task.validate(self.ema.module, self.val_loader, self.autocast) if self.ema else None
        self.agree_on_kernels()  # validation's shapes too
        return metrics, ema_metrics

    def rng_set_aside(self):
        """For work between training steps: what it draws (each pass over a DataLoader takes a seed from the
        global generator) leaves the training's random stream (drop path, MixUp, proposal sampling) as it
        was, so how often a run validates or draws pictures does not change its weights."""
        device = self.ctx.device
        return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])

    def epoch_seconds(self) -> float:
        """The seconds the current epoch has taken so far, in this process and the ones before it."""
        now = 0.0 if self.epoch_resumed_at is None else time.time() - self.epoch_resumed_at
        return self.epoch_seconds_before + now

    def fit(self, log, say, stop: list[int]) -> dict:
        start = time.time()
        while self.epoch < self.recipe.epochs:
            self.epoch_resumed_at = time.time()
            train_loss = self.train_epoch(stop, progress=self.ctx.is_main)
            if stop or (self.step_in_epoch < self.steps_per_epoch):  # interrupted, or max_steps mid-epoch
                self.save()
                self.last_metrics = None
                if stop:
                    name = signal.Signals(stop[0]).name
                    raise Interrupted(f"stopped by {name} at epoch {self.epoch + 1}, step {self.global_step}; "
                                      f"checkpoint saved. Resume with: {self.task.command} --resume {self.run_dir}",
                                      stop[0])
                break
            self.epoch, self.step_in_epoch = self.epoch + 1, 0
            scores, described, best = {}, "not validated", False
            if self.epoch % self.run.val_every == 0 or self.epoch >= self.recipe.epochs:
                metrics, ema_metrics = self.last_metrics = self.validate()
                chosen = ema_metrics if ema_metrics and self.task.score(ema_metrics) > self.task.score(metrics) else metrics
                best = self.task.score(chosen) > self.best_score
                self.best_score = max(self.best_score, self.task.score(chosen))
                scores = self.task.row(chosen)
                ema_note = f"  (EMA {self.task.describe(ema_metrics)})" if ema_metrics else ""
                described = self.task.describe(chosen) + ema_note
            else:
                self.last_metrics = None  # the weights moved on since the last validation
            row = {"epoch": self.epoch, "step": self.global_step, "lr": self.optimizer.param_groups[0]["lr"],
                   "train_loss": train_loss, **scores, "epoch_s": self.epoch_seconds(),
                   "machine": describe(self.ctx.device)}
            self.epoch_seconds_before, self.epoch_resumed_at = 0.0, None  # the next epoch starts from zero
            if self.ctx.is_main:
                log.epoch(row)
                say(f"epoch {self.epoch}/{self.recipe.epochs}  train_loss {train_loss:.4f}  "
                    f"{described}  lr {row['lr']:.2e}  {row['epoch_s']:.1f}s")
                with self.rng_set_aside():
                    self.task.after_epoch(self.model, self.run_dir)
            self.save(best=best)
            if self.reached_max_steps():
                break
        return {"wall_s": time.time() - start}

    def final_model(self) -> tuple[torch.nn.Module, dict, str]:
        """The weights to ship: the EMA when it validates better, else the model."""
        metrics, ema_metrics = self.last_metrics or self.validate()
        if ema_metrics and self.task.score(ema_metrics) > self.task.score(metrics):
            ema = self.ema.module
            for name in DESCRIPTIONS:
                if hasattr(self.model, name):
                    setattr(ema, name, getattr(self.model, name))
            return ema, ema_metrics, "ema"
        return self.model, metrics, "model"

    def finish(self, wall_s: float) -> dict:
        """Write what the run leaves (the task's weights and pictures) and return the summary."""
        model, metrics, which = self.final_model()
        summary = {**self.task.summary(metrics), "epochs": self.epoch, "steps": self.global_step, "wall_s": wall_s,
                   "run_dir": str(self.run_dir), "model": self.recipe.model, "weights_from": which,
                   "effective_batch": self.effective_batch, "lr": self.lr}
        if self.ctx.is_main:
            self.task.save_outputs(model, self.run_dir, metrics)
        return summary

    def started(self, resumed: bool) -> str:
        recipe, ctx = self.recipe, self.ctx
        where = f"resumed at epoch {self.epoch + 1}, step {self.global_step}" if resumed else "started"
        notes = "".join(f"; {note}" for note in self.notes)
        return (f"{recipe.model}: {where}; {acceleration(self.model)}{notes}; {self.task.data_note()}, "
                f"input {self.data.input_size}px, "
                f"lr {recipe.lr:g} at batch {recipe.lr_base_batch} -> {self.lr:.3g} for effective batch "
                f"{self.effective_batch} ({recipe.batch_size} x {ctx.world_size} process(es) x "
                f"{recipe.accum_steps} accumulation); run dir {self.run_dir}")


def train(task_class: type[Task], recipe: Recipe, run: RunConfig, say=print, resume_dir: Path | None = None,
          starting: Checkpoint | None = None) -> dict:
    """Train one run of a task; returns the summary (the task's scores, epochs, wall_s, run_dir, ...).
    `starting`: `run.weights` already read (by a command that needed its model name first)."""
    context = distributed.setup(run.device)
    run_dir = resume_dir or Path(run.output_dir or f"runs/{recipe.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    with contextlib.ExitStack() as cleanup:
        stop = cleanup.enter_context(stop_requests())
        cleanup.callback(distributed.teardown)
        cleanup.enter_context(process_settings(deterministic=run.deterministic))
        if context.distributed and resume_dir is None and run.output_dir is None:
            raise TrainingError("with torchrun, pass --output-dir so every process writes to the same run")
        try:
            return _train(task_class, recipe, run, say, run_dir, resume_dir is not None, context, stop, starting)
        except WriteError as error:
            raise TrainingError(write_failure(error, task_class, run_dir)) from error


def write_failure(error: WriteError, task_class: type[Task], run_dir: Path) -> str:
    """What a failed write means for the run: which checkpoint is intact, and how to go on from it."""
    fix = "free some space" if error.disk_full else f"make {error.destination.parent} writable"
    if not (run_dir / CONFIG_FILE).is_file():
        return f"{error}; nothing was saved: {fix} (or choose another --output-dir) and start again"
    found = run_state.newest_intact(run_dir)
    newest = (f"the newest intact checkpoint is {found[0]} (step {found[1]['global_step']})" if found
              else "no checkpoint was written yet (resuming starts the run over)")
    return f"{error}; {newest}. To go on, {fix}, then: {task_class.command} --resume {run_dir}"


def _train(task_class: type[Task], recipe: Recipe, run: RunConfig, say, run_dir: Path, resuming: bool,
           context: distributed.Context, stop: list[int], starting: Checkpoint | None) -> dict:
    run = RunConfig(**{**asdict(run), "recipe": recipe.as_dict(), "output_dir": str(run_dir),
                       "task": task_class.name})
    loop = Loop(task_class(recipe, run, context), run, run_dir, context, starting)
    if resuming:
        run_state.remove_temporaries(run_dir)
    state = run_state.load_latest(run_dir, say) if resuming else None
    if state:
        loop.restore(state)
    log = None
    if context.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text(run_dir / CONFIG_FILE, json.dumps(asdict(run), indent=2))
        log = reporting.RunLog(run_dir, task_class.columns)
        log.truncate(loop.epoch)
        say(loop.started(resumed=state is not None))
        if loop.data.skipped:
            say(f"skipped {len(loop.data.skipped)} unreadable image(s), e.g. {loop.data.skipped[0]}")
    timing = loop.fit(log, say, stop)
    summary = loop.finish(timing["wall_s"])
    if context.is_main:
        if (run_dir / reporting.METRICS_FILE).exists():
            reporting.plot_curves(run_dir / reporting.METRICS_FILE, run_dir / "curves.png")
        write_text(run_dir / "summary.json", json.dumps(summary, indent=2))
        log.close()
    return summary


def resume(task_class: type[Task], run_dir: str | Path, say=print, max_steps: int | None = None) -> dict:
    """Continue a run from its newest checkpoint, with the config it was started with."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise TrainingError(f"{run_dir}: not a run directory (no {CONFIG_FILE})")
    saved = json.loads((run_dir / CONFIG_FILE).read_text())
    task = saved.get("task", "classify")
    if task != task_class.name:
        command = TASKS[task].command if task in TASKS else task
        raise TrainingError(f"{run_dir} is a {command} run: resume it with {command} --resume {run_dir}")
    recipe = task_class.recipe_class.from_saved(saved.pop("recipe"))
    saved["max_steps"] = max_steps
    return train(task_class, recipe, RunConfig(**saved), say=say, resume_dir=run_dir)
