"""What a run leaves for people: metrics.csv, TensorBoard events, and PNG plots."""
import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402

METRICS_FILE = "metrics.csv"
COLUMNS = ["epoch", "step", "lr", "train_loss", "val_loss", "val_top1", "val_top5", "epoch_s"]
LOSS_COLUMNS = ["epoch", "step", "lr", "train_loss", "val_loss", "epoch_s"]  # pre-training: no accuracy


class RunLog:
    """Appends one row per epoch to metrics.csv and TensorBoard; rebuilds the plots from the CSV."""

    def __init__(self, run_dir: Path, columns: list[str] = COLUMNS):
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir, self.columns = run_dir, columns
        self.csv_path = run_dir / METRICS_FILE
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def epoch(self, row: dict) -> None:
        new = not self.csv_path.exists()
        with self.csv_path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
        for key in self.columns[2:]:
            self.writer.add_scalar(key, row[key], row["step"])
        self.writer.flush()

    def truncate(self, epochs_done: int) -> None:
        """Drop rows past the checkpoint a resumed run restarts from."""
        if self.csv_path.exists():
            rows = [r for r in read_metrics(self.csv_path) if int(r["epoch"]) <= epochs_done]
            with self.csv_path.open("w", newline="") as f:
                writer = csv.DictWriter(f, self.columns)
                writer.writeheader()
                writer.writerows(rows)

    def close(self) -> None:
        self.writer.close()


def read_metrics(path: Path) -> list[dict]:
    with Path(path).open() as f:
        return list(csv.DictReader(f))


def plot_curves(metrics_csv: Path, destination: Path) -> None:
    rows = read_metrics(metrics_csv)
    epochs = [int(r["epoch"]) for r in rows]
    accuracy = bool(rows) and "val_top1" in rows[0]
    figure, axes = plt.subplots(1, 2 if accuracy else 1, figsize=(10 if accuracy else 5, 4), squeeze=False)
    loss_ax = axes[0][0]
    loss_ax.plot(epochs, [float(r["train_loss"]) for r in rows], label="train")
    loss_ax.plot(epochs, [float(r["val_loss"]) for r in rows], label="val")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="Loss")
    loss_ax.legend()
    if not accuracy:  # pre-training
        figure.tight_layout()
        figure.savefig(destination, dpi=100)
        plt.close(figure)
        return
    acc_ax = axes[0][1]
    acc_ax.plot(epochs, [100 * float(r["val_top1"]) for r in rows], label="top-1")
    acc_ax.plot(epochs, [100 * float(r["val_top5"]) for r in rows], label="top-5")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Validation accuracy")
    acc_ax.legend()
    figure.tight_layout()
    figure.savefig(destination, dpi=100)
    plt.close(figure)


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
    figure.savefig(destination, dpi=100)
    plt.close(figure)


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
    figure.savefig(destination, dpi=100)
    plt.close(figure)
