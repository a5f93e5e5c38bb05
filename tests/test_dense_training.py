"""`convnext detect` and `convnext segment`: train on a small shapes set written as COCO JSON and mask
PNGs, leave a full run directory, resume bit-identically, evaluate and predict from the run, and name
a bad annotation in one line (or skip it)."""
import json
import sys

import pytest
import torch
from PIL import Image

from convnext.cli import main
from convnext.training import run_state
from convnext.training.dense.shapes import write_shapes

TINY = ["--model", "convnext_test", "--batch-size", "4", "--head-width", "32", "--input-size", "64"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes(tmp_path_factory.mktemp("shapes") / "root", size=64, seed=1, splits={"train": 12, "val": 4})


@pytest.mark.parametrize("task,score", [("detect", "box_AP"), ("segment", "mIoU")])
def test_train_eval_predict(task, score, shapes, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([task, "train", "--data", str(shapes), *TINY, "--epochs", "1", "--output-dir", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and 0 <= summary[score] <= 1
    for name in ("config.json", "metrics.csv", "curves.png", "predictions.png", "model.safetensors", "summary.json"):
        assert (run_dir / name).is_file(), name
    assert (run_dir / "checkpoints").is_dir() and (run_dir / "tensorboard").is_dir()
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert ("val_AP50" if task == "detect" else "val_mIoU") in header

    assert main([task, "eval", "--weights", str(run_dir), "--data", str(shapes), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert ("AP" if task == "detect" else "mIoU") in scores
    picture = shapes / "val" / "images" / "000001.png"
    threshold = ["--threshold", "0"] if task == "detect" else []
    assert main([task, "predict", "--weights", str(run_dir), str(picture), "--output", str(tmp_path / "drawn"),
                 "--json", *threshold]) == 0
    result = json.loads(capsys.readouterr().out)[0]
    drawn = Image.open(result["drawn"])
    assert drawn.size == (256, 256) and drawn.mode == "RGB"  # small pictures are drawn enlarged, to be readable
    if task == "detect":
        assert all({"class", "label", "score", "box"} <= set(d) for d in result["detections"])
    else:
        assert sum(result["classes"].values()) == pytest.approx(1.0, abs=1e-3)


def test_a_detection_run_is_resumed_by_its_own_command(shapes, tmp_path, capsys):
    """(Resuming bit for bit, after kills and signals too: tests/test_faults.py.)"""
    args = ["detect", "train", "--data", str(shapes), *TINY, "--epochs", "1"]
    assert main([*args, "--output-dir", str(tmp_path / "stopped"), "--max-steps", "1"]) == 0
    assert main(["segment", "train", "--resume", str(tmp_path / "stopped")]) == 2
    assert "convnext detect train --resume" in capsys.readouterr().err


def broken_copy(shapes, tmp_path, change):
    """The shapes set with its val annotations changed by `change(annotations_dict)`."""
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(shapes, root)
    path = root / "val" / "annotations.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return root


def outside(data):
    data["annotations"][0]["bbox"] = [50, 50, 40, 40]  # in a 64 x 64 image


def unknown_category(data):
    data["annotations"][1]["category_id"] = 42


def missing_image(data):
    data["images"][0]["file_name"] = "nowhere.png"


@pytest.mark.parametrize("change,message", [(outside, "lies outside the 64x64 image"),
                                            (unknown_category, "category_id 42 is not among"),
                                            (missing_image, "nowhere.png): file not found")])
def test_a_bad_annotation_is_one_line_or_skipped(change, message, shapes, tmp_path, capsys):
    root = broken_copy(shapes, tmp_path, change)
    run_dir = tmp_path / "run"
    assert main(["detect", "train", "--data", str(root), *TINY, "--epochs", "1", "--output-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "annotations.json" in err[0] and not run_dir.exists()
    assert main(["detect", "train", "--data", str(root), *TINY, "--epochs", "1", "--max-steps", "1",
                 "--on-bad-sample", "skip", "--output-dir", str(run_dir)]) == 0
    assert "skipped 1" in capsys.readouterr().out


def test_a_mask_of_the_wrong_size_is_named(shapes, tmp_path, capsys):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(shapes, root)
    Image.new("L", (32, 64)).save(root / "train" / "masks" / "000003.png")
    assert main(["segment", "train", "--data", str(root), *TINY, "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "000003.png: mask 000003.png is 32x64, the image 64x64" in err


def test_segmentation_under_torchrun(shapes, tmp_path):
    """DDP (gloo, 2 processes) runs the same loop (signals: tests/test_faults.py)."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "convnext.cli",
           "segment", "train", "--data", str(shapes), *TINY, "--batch-size", "2", "--max-steps", "2",
           "--output-dir", str(tmp_path / "ddp")]
    result = subprocess.run(ddp, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(2 x 2 process(es)" in result.stdout and (tmp_path / "ddp" / "checkpoints").is_dir()


def test_boxes_only_annotations_train_a_faster_rcnn(shapes, tmp_path):
    import shutil

    root = tmp_path / "boxes"
    shutil.copytree(shapes, root)
    for split in ("train", "val"):
        path = root / split / "annotations.json"
        data = json.loads(path.read_text())
        for annotation in data["annotations"]:
            del annotation["segmentation"]
        path.write_text(json.dumps(data))
    run_dir = tmp_path / "run"
    assert main(["detect", "train", "--data", str(root), *TINY, "--epochs", "1", "--max-steps", "1",
                 "--output-dir", str(run_dir)]) == 0
    assert json.loads((run_dir / "model.json").read_text())["builder"] == "fasterrcnn"


def test_the_official_drop_path_follows_the_model_size(shapes, tmp_path):
    run_dir = tmp_path / "run"
    assert main(["segment", "train", "--data", str(shapes), *TINY, "--model", "convnext_small", "--epochs", "1",
                 "--max-steps", "1", "--subset", "4", "--output-dir", str(run_dir)]) == 0
    assert json.loads((run_dir / "config.json").read_text())["recipe"]["drop_path"] == 0.3  # UperNet-S


def test_training_starts_from_classification_weights(shapes, tmp_path):
    import convnext

    classifier = convnext.create_model("convnext_test", num_classes=7)
    with torch.no_grad():
        for p in classifier.parameters():
            p.add_(0.05 * torch.randn_like(p))
    convnext.save_pretrained(classifier, tmp_path / "classifier")
    run_dir = tmp_path / "run"
    assert main(["detect", "train", "--data", str(shapes), *TINY, "--weights", str(tmp_path / "classifier"),
                 "--lr", "1e-12", "--epochs", "1", "--max-steps", "1", "--output-dir", str(run_dir)]) == 0
    state = run_state.load_latest(run_dir)["model"]
    for key, value in classifier.state_dict().items():
        if not key.startswith(("head.", "norm.")):  # the classifier's own head and final norm are not used
            assert torch.allclose(state[f"backbone.body.{key}"], value, atol=1e-6), key


def test_segmentation_validates_images_of_different_sizes(shapes, tmp_path):
    import shutil

    root = tmp_path / "sizes"
    shutil.copytree(shapes, root)
    for folder, mode in (("images", "RGB"), ("masks", "L")):  # one val image (and its mask) of another size
        path = root / "val" / folder / "000002.png"
        Image.open(path).convert(mode).resize((80, 64), Image.NEAREST).save(path)
    assert main(["segment", "train", "--data", str(root), *TINY, "--epochs", "1", "--max-steps", "1",
                 "--output-dir", str(tmp_path / "run")]) == 0


def test_scale_jitter_resizes_training_pairs_only_as_asked():
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from convnext.training.dense.data import segmentation_transforms

    def sizes(jitter):
        transform = segmentation_transforms(True, 64, 0.0, (0, 0, 0), (1, 1, 1), jitter)
        return {type(step).__name__ for step in transform.transforms}, transform

    steps, _ = sizes(1.0)
    assert "RandomResize" not in steps  # jitter 1: a crop of the image at its own scale
    steps, transform = sizes(2.0)
    resize = next(step for step in transform.transforms if isinstance(step, v2.RandomResize))
    assert (resize.min_size, resize.max_size) == (32, 128)  # the official 0.5-2
    image = tv_tensors.Image(torch.rand(3, 64, 64))
    mask = tv_tensors.Mask(torch.randint(0, 4, (64, 64)))
    out_image, out_mask = transform(image, mask)
    assert out_image.shape[-2:] == out_mask.shape[-2:] == (64, 64)
