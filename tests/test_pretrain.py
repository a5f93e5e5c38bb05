"""`convnext pretrain`: runs on the digits, ImageFolder and flat folders, resumes bit-identically, and its
run directory fine-tunes with `convnext train --weights`."""
import json

import pytest
import torch
from PIL import Image

from convnext.checkpoints.weights import load_pretrained
from convnext.cli import main
from convnext.training import run_state
from convnext.training.reporting import read_metrics

QUICK = ["--model", "convnextv2_test", "--input-size", "64", "--batch-size", "16", "--subset", "96"]


def test_pretraining_run_leaves_everything_and_fine_tunes(tmp_path, capsys):
    run_dir = tmp_path / "pre"
    assert main(["pretrain", *QUICK, "--epochs", "2", "--output-dir", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 2 and summary["mask_ratio"] == 0.6 and summary["val_loss"] > 0
    kept = ("config.json", "metrics.csv", "curves.png", "reconstructions.png", "model.safetensors", "summary.json")
    for name in kept:
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").iterdir())
    rows = read_metrics(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val_top1" not in rows[0]
    assert json.loads((run_dir / "config.json").read_text())["task"] == "fcmae"
    encoder = load_pretrained(run_dir)
    assert encoder.model_name == "convnextv2_test" and encoder.in_chans == 1
    # Fine-tuning from the run: every encoder tensor loaded (one step at a negligible rate barely moves
    # them), a fresh 10-class head.
    tuned = tmp_path / "tuned"
    assert main(["train", "--weights", str(run_dir), "--epochs", "1", "--max-steps", "1",
                 "--lr", "1e-9", "--subset", "96", "--batch-size", "16", "--output-dir", str(tuned)]) == 0
    assert "holds convnextv2_test" in capsys.readouterr().out  # the model is the one the weights hold
    step = run_state.load_latest(tuned)["model"]
    for key, value in encoder.state_dict().items():
        if not key.startswith("head."):
            assert torch.allclose(step[key], value, atol=1e-6), key
    assert step["head.weight"].shape[0] == 10


def test_a_pretraining_run_is_resumed_by_its_own_command(tmp_path, capsys):
    """(Resuming bit for bit, after kills and signals too: tests/test_faults.py.)"""
    assert main(["pretrain", *QUICK, "--epochs", "2", "--output-dir", str(tmp_path / "stopped"), "--max-steps", "1"]) == 0
    assert main(["train", "--resume", str(tmp_path / "stopped")]) == 2
    assert "convnext pretrain --resume" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["flat", "imagefolder"])
def test_pretraining_reads_unlabelled_folders(tmp_path, layout):
    root = tmp_path / "images"
    for i in range(12):
        folder = root / (f"class{i % 2}" if layout == "imagefolder" else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (70, 80), (20 * i, 100, 200 - 10 * i)).save(folder / f"{i}.png")
    run_dir = tmp_path / "run"
    assert main(["pretrain", "--data", str(root), "--model", "convnextv2_test", "--input-size", "64", "--batch-size",
                 "4", "--epochs", "1", "--output-dir", str(run_dir)]) == 0
    assert load_pretrained(run_dir).in_chans == 3


def test_pretraining_refuses_sizes_off_the_patch_grid(capsys):
    assert main(["pretrain", *QUICK[:2], "--input-size", "80", "--epochs", "1"]) == 2
    assert "multiple of 32" in capsys.readouterr().err


def test_pretraining_under_torchrun(tmp_path):
    """DDP (gloo, 2 processes) runs the same loop (signals: tests/test_faults.py)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "convnext.cli",
           "pretrain", *QUICK, "--batch-size", "8", "--max-steps", "3", "--output-dir", str(tmp_path / "ddp")]
    result = subprocess.run(ddp, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "(8 x 2 process(es)" in result.stdout and (tmp_path / "ddp" / "checkpoints").is_dir()


def test_pretraining_under_bf16_autocast(tmp_path, capsys):
    """--amp bf16 (where the CPU has no bf16 hardware: one line, float32) and --grad-checkpointing train."""
    run_dir = tmp_path / "bf16"
    assert main(["pretrain", *QUICK, "--epochs", "1", "--max-steps", "3", "--amp", "bf16", "--grad-checkpointing",
                 "--output-dir", str(run_dir), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and torch.isfinite(torch.tensor(summary["val_loss"]))
    assert json.loads((run_dir / "config.json").read_text())["amp"] == "bf16"
