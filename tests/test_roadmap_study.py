"""The roadmap study: the built-in scenes (deterministic, balanced, cached), the small regime ending at
ConvNeXt-atto exactly, the paper's two recipes, and a tiny study that writes its table and resumes."""
import csv
import json
import math

import numpy as np
import pytest
import torch

import convnext
from convnext.cli import main
from convnext.models.roadmap import SMALL
from convnext.runtime.hardware import cpu_model, describe
from convnext.training import scenes
from convnext.training.recipes import ROADMAP_RECIPES
from convnext.training.roadmap_study import bases, interval, paired_change


def test_scenes_are_deterministic_balanced_and_seeded():
    images, labels = scenes.generate(96, seed=5)
    again, same_labels = scenes.generate(96, seed=5)
    assert images.dtype == np.uint8 and images.shape == (96, 64, 64, 3)
    assert images.tobytes() == again.tobytes() and np.array_equal(labels, same_labels)
    assert np.bincount(labels, minlength=24).tolist() == [4] * 24  # every class equally often
    other, _ = scenes.generate(96, seed=6)
    assert other.tobytes() != images.tobytes()
    assert len(scenes.CLASSES) == 24 and images.std() > 20  # 24 classes, not blank pictures


def test_scenes_are_cached_once_and_named_by_size(tmp_path, monkeypatch):
    monkeypatch.setattr(scenes, "TEST_IMAGES", 48)
    train_images, train_labels, test_images, _ = scenes.scenes(72, seed=1, cache=tmp_path)
    assert train_images.shape == (72, 3, 64, 64) and test_images.shape == (48, 3, 64, 64)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"scenes-v{scenes.VERSION}-64-48-1000003.npz", f"scenes-v{scenes.VERSION}-64-72-1.npz"]
    again = scenes.scenes(72, seed=1, cache=tmp_path)
    assert torch.equal(again[0], train_images) and torch.equal(again[1], train_labels)
    assert scenes.parse("scenes") == scenes.DEFAULT_TRAIN_IMAGES and scenes.parse("scenes:500") == 500
    assert scenes.parse("digits") is None
    with pytest.raises(ValueError, match="scenes:N"):
        scenes.parse("scenes:3")


def test_the_small_regime_ends_at_convnext_atto_exactly():
    last = convnext.create_model(SMALL[-1].name, num_classes=24).eval()
    atto = convnext.create_model("convnext_atto", num_classes=24).eval()
    atto.load_state_dict(last.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(last(x), atto(x))
    assert [s.name.split("_", 2)[2] for s in SMALL][8:12] == ["08_kernel5", "08_kernel7", "08_kernel9", "08_kernel11"]


def test_the_two_recipes_are_the_papers():
    classic, modern = ROADMAP_RECIPES["classic"], ROADMAP_RECIPES["modern"]
    assert classic.optimizer == "sgd" and not (classic.mixup or classic.cutmix or classic.reprob or classic.drop_path)
    assert classic.randaugment is None and classic.label_smoothing == 0 and classic.ema_decay is None
    assert modern.optimizer == "adamw" and modern.mixup == 0.8 and modern.cutmix == 1.0 and modern.randaugment == 9
    assert modern.label_smoothing == 0.1 and modern.reprob == 0.25 and modern.drop_path > 0 and modern.ema_decay


def test_intervals_and_bases():
    mean, std, half = interval([1.0, 2.0, 3.0])
    assert (mean, std) == (2.0, 1.0) and half == pytest.approx(4.303 / math.sqrt(3), rel=1e-3)
    base = bases(SMALL)
    assert base[SMALL[0].name] is None and base["roadmap_small_01_enhanced_recipe"] == "roadmap_small_00_resnet"
    # the kernel branches are measured from the step their row changes; the main line continues from kernel 7
    assert base["roadmap_small_08_kernel9"] == "roadmap_small_08_kernel7"
    assert base["roadmap_small_08_kernel5"] == "roadmap_small_07_move_up_dwconv"
    assert base["roadmap_small_09_gelu"] == "roadmap_small_08_kernel7"


def test_paired_changes_cancel_a_seeds_shared_noise():
    # seed 1 is 10 points better for both steps: paired, the change is exactly +1 with no spread
    change, half = paired_change({0: 0.21, 1: 0.31, 2: 0.26}, {0: 0.20, 1: 0.30, 2: 0.25})
    assert change == pytest.approx(1.0) and half == pytest.approx(0.0, abs=1e-9)
    change, half = paired_change({0: 0.22, 1: 0.30}, {0: 0.20, 1: 0.30, 2: 0.5})  # only shared seeds count
    assert change == pytest.approx(1.0) and half > 0


def test_a_tiny_study_writes_its_table_and_resumes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONVNEXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scenes, "TEST_IMAGES", 48)
    out = tmp_path / "study"
    args = ["roadmap", "--train", "--regime", "small", "--data", "scenes", "--steps", "0,1", "--seeds", "2",
            "--train-images", "64", "--epochs", "1", "--batch-size", "32", "--output-dir", str(out)]
    assert main(args) == 0
    header, *rows = (out / "roadmap.csv").read_text().splitlines()
    columns = header.split(",")
    assert {"top1_mean", "top1_std", "top1_ci95", "delta", "delta_ci95", "from_first", "from_first_ci95", "infer_img_s",
            "top1_per_seed"} <= set(columns)
    assert len(rows) == 2 and (out / "roadmap.png").stat().st_size > 0
    # the table names the recipe each step trained with: the study's point is that step 0 trains differently
    assert [r["recipe"] for r in csv.DictReader([header, *rows])] == ["classic", "modern"]
    # step 1's change from step 0 is both its paired change and the whole way so far
    second = dict(zip(columns, next(csv.reader(rows[1:]))))
    assert second["delta"] == second["from_first"] and second["delta_ci95"] == second["from_first_ci95"] != ""
    # a run's minutes are its own epochs' time, whatever invocation ran them
    epoch_s = [float(e["epoch_s"]) for seed in (0, 1) for e in csv.DictReader(
        (out / "roadmap_small_01_enhanced_recipe" / f"seed-{seed}" / "metrics.csv").open())]
    assert float(second["run_minutes"]) == pytest.approx(sum(epoch_s) / 2 / 60, abs=0.006)
    # and every epoch names the machine it was timed on, as the table does for each step
    assert second["machines"] == describe() and describe().startswith(cpu_model())
    # step 0 trains with the classic recipe, step 1 with the modern one, each once per seed
    for step, optimizer in (("roadmap_small_00_resnet", "sgd"), ("roadmap_small_01_enhanced_recipe", "adamw")):
        for seed in (0, 1):
            config = json.loads((out / step / f"seed-{seed}" / "config.json").read_text())
            assert config["recipe"]["optimizer"] == optimizer and config["seed"] == seed
            assert config["val_every"] == config["recipe"]["epochs"]  # validated once, after the last epoch
            assert config["channels_last"]  # the study's default
    finished = {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")}
    assert len(finished) == 4
    capsys.readouterr()
    assert main(args) == 0  # nothing is retrained
    assert {p: p.stat().st_mtime_ns for p in out.rglob("summary.json")} == finished
    assert "roadmap_small_01_enhanced_recipe" in capsys.readouterr().out
    # the record of a finished study (configs, summaries, metrics; no weights) tabulates again
    for weights in out.rglob("*.safetensors"):
        weights.unlink()
    (out / "roadmap.csv").unlink()
    assert main(args) == 0
    again = list(csv.DictReader((out / "roadmap.csv").open()))
    measured_now = {"infer_img_s"}  # timed afresh each time the table is written
    assert [{k: v for k, v in r.items() if k not in measured_now} for r in again] == [
        {k: v for k, v in zip(columns, r) if k not in measured_now} for r in csv.reader(rows)]


def test_a_stop_request_at_the_end_of_a_run_stops_the_study_before_the_next(tmp_path, monkeypatch, capsys):
    """SIGTERM during a run's last evaluation, after the loop's last check: the run finishes, and the
    study stops before the next run instead of losing the request; the same command goes on."""
    import signal

    from convnext.training.tasks import Classification

    monkeypatch.setenv("CONVNEXT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(scenes, "TEST_IMAGES", 48)
    validate, sent = Classification.validate, []

    def validate_then_signal(self, *args, **kwargs):
        if not sent:  # what Python does with a SIGTERM delivered now, without a process-wide signal
            sent.append(signal.getsignal(signal.SIGTERM)(signal.SIGTERM, None))
        return validate(self, *args, **kwargs)

    monkeypatch.setattr(Classification, "validate", validate_then_signal)
    out = tmp_path / "study"
    args = ["roadmap", "--train", "--regime", "small", "--data", "scenes", "--steps", "0,1", "--seeds", "1",
            "--train-images", "64", "--epochs", "1", "--batch-size", "32", "--output-dir", str(out)]
    assert main(args) == 0
    assert "stopped by SIGTERM between runs" in capsys.readouterr().err
    assert (out / "roadmap_small_00_resnet" / "seed-0" / "summary.json").is_file()
    assert not (out / "roadmap_small_01_enhanced_recipe").exists() and not (out / "roadmap.csv").exists()
    assert main(args) == 0 and (out / "roadmap.csv").is_file()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are given back
