"""What a run leaves for people: metrics.csv, TensorBoard events, and PNG plots."""
import csv
import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

from ..runtime.atomic import atomic_file, reported_as_write_error, write_text  # noqa: E402

METRICS_FILE = "metrics.csv"
# Each row ends with the epoch's time and the machine it was timed on: a run resumed on another machine
# (a study across sessions) has epochs from both, and a time means nothing without its machine.
TIMING = ["epoch_s", "machine"]
COLUMNS = ["epoch", "step", "lr", "train_loss", "val_loss", "val_top1", "val_top5", *TIMING]
LOSS_COLUMNS = ["epoch", "step", "lr", "train_loss", "val_loss", *TIMING]  # pre-training: no accuracy
DETECTION_COLUMNS = ["epoch", "step", "lr", "train_loss", "val_AP", "val_AP50", "val_AP75", "val_mask_AP", *TIMING]
SEGMENTATION_COLUMNS = ["epoch", "step", "lr", "train_loss", "val_loss", "val_mIoU", "val_mAcc", "val_aAcc", *TIMING]


class RunLog:
    """Appends one row per epoch to metrics.csv and TensorBoard; rebuilds the plots from the CSV."""

    def __init__(self, run_dir: Path, columns: list[str] = COLUMNS):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir, self.columns = run_dir, columns
        self.csv_path = run_dir / METRICS_FILE
        self.events = run_dir / "tensorboard"  # appended to, as TensorBoard does: a failure is named all the same
        with reported_as_write_error(self.events, run_dir):
            self.writer = SummaryWriter(str(self.events))

    def epoch(self, row: dict) -> None:
        rows = read_metrics(self.csv_path) if self.csv_path.exists() else []
        write_csv([*rows, row], self.columns, self.csv_path)  # rewritten whole: a full disk tears no row
        with reported_as_write_error(self.events, self.run_dir):
            for key in self.columns[2:]:
                if isinstance(row.get(key), (int, float)):  # validation scores: only in epochs that validated
                    self.writer.add_scalar(key, row[key], row["step"])
            self.writer.flush()

    def truncate(self, epochs_done: int) -> None:
        """Drop rows past the checkpoint a resumed run restarts from."""
        if self.csv_path.exists():
            rows = [r for r in read_metrics(self.csv_path) if int(r["epoch"]) <= epochs_done]
            write_csv(rows, self.columns, self.csv_path)

    def close(self) -> None:
        self.writer.close()


def write_csv(rows: list[dict], columns: list[str], destination: Path) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(destination, text.getvalue())


def save_figure(figure, destination: Path) -> None:
    """Write a figure atomically (the format from the file's suffix) and free it."""
    with atomic_file(destination) as tmp:
        figure.savefig(tmp, dpi=100, format=Path(destination).suffix.lstrip(".") or "png")
    plt.close(figure)


def read_metrics(path: Path) -> list[dict]:
    with Path(path).open() as f:
        return list(csv.DictReader(f))


def plot_curves(metrics_csv: Path, destination: Path) -> None:
    """Loss curves, and beside them every other validation score (top-1/top-5, AP, mIoU ...) in %."""
    rows = read_metrics(metrics_csv)
    epochs = [int(r["epoch"]) for r in rows]
    scores = [c for c in (rows[0] if rows else {}) if c.startswith("val_") and c != "val_loss"]
    figure, axes = plt.subplots(1, 2 if scores else 1, figsize=(10 if scores else 5, 4), squeeze=False)
    loss_ax = axes[0][0]
    loss_ax.plot(epochs, [float(r["train_loss"]) for r in rows], label="train")
    if any(r.get("val_loss") not in (None, "") for r in rows):
        loss_ax.plot(*_validated(rows, "val_loss"), marker=".", label="val")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    loss_ax.legend()
    if scores:
        score_ax = axes[0][1]
        for column in scores:
            validated_epochs, values = _validated(rows, column)
            score_ax.plot(validated_epochs, [100 * v for v in values], marker=".", label=column.removeprefix("val_"))
        score_ax.set(xlabel="epoch", ylabel="%", title="Validation")
        score_ax.legend()
    figure.tight_layout()
    save_figure(figure, destination)


def _validated(rows: list[dict], column: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of the epochs that validated (`--val-every`)."""
    kept = [r for r in rows if r.get(column) not in (None, "")]
    return [int(r["epoch"]) for r in kept], [float(r[column]) for r in kept]


def plot_confusion(confusion: list[list[int]], class_names: list[str], destination: Path) -> None:
    n = len(class_names)
    figure, ax = plt.subplots(figsize=(max(4, 0.4 * n + 2), max(4, 0.4 * n + 2)))
    ax.imshow(confusion, cmap="Blues")
    if n <= 40:  # beyond that, labels are unreadable anyway
        ax.set_xticks(range(n), class_names, rotation=90)
        ax.set_yticks(range(n), class_names)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    ax.text(j, i, confusion[i][j], ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    figure.tight_layout()
    save_figure(figure, destination)


def plot_reconstructions(rows: dict, destination: Path) -> None:
    """A grid: one row per entry of `rows` (e.g. original / masked input / reconstruction), one column
    per image; tensors are (N, C, H, W) in [0, 1], grey for one channel.
    """
    names = list(rows)
    count = rows[names[0]].shape[0]
    figure, axes = plt.subplots(len(names), count, figsize=(1.6 * count, 1.6 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        for c in range(count):
            image = rows[name][c].clamp(0, 1).permute(1, 2, 0).cpu().numpy()  # (C, H, W) -> (H, W, C)
            ax = axes[r][c]
            ax.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
    figure.tight_layout()
    save_figure(figure, destination)
