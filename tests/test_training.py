"""The main job: train / eval / predict from the command line, resume, signals, faults, DDP."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import safetensors.torch
import torch
from PIL import Image

import convnext
from convnext.training import run_state
from convnext.cli import main
from convnext.training.tasks import Classification

TINY = ["--model", "convnext_test", "--batch-size", "32"]
ROOT = Path(__file__).resolve().parents[1]


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def weights(run_dir: Path) -> dict:
    return safetensors.torch.load_file(run_dir / "model.safetensors")


def test_one_short_epoch_writes_every_artefact(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--output-dir", str(run_dir), "--json"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert {"test_top1", "test_top5", "epochs", "wall_s", "run_dir"} <= set(summary)
    assert 0 <= summary["test_top1"] <= summary["test_top5"] <= 1 and summary["epochs"] == 1
    assert summary["run_dir"] == str(run_dir)
    for name in ["config.json", "metrics.csv", "curves.png", "confusion.png", "model.safetensors", "model.json",
                 "summary.json", "checkpoints/best.pth"]:
        assert (run_dir / name).is_file(), name
    assert run_state.checkpoint_files(run_dir) and list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["recipe"]["model"] == "convnext_test" and config["data"] == "digits"

    model = convnext.load_pretrained(run_dir)  # a run directory is a weights path
    assert model.class_names == [str(i) for i in range(10)] and model.in_chans == 1

    assert main(["eval", "--weights", str(run_dir), "--output-dir", str(tmp_path / "eval"), "--json"]) == 0
    evaluated = last_json(capsys.readouterr().out)
    assert {"test_top1", "test_top5", "epochs", "wall_s", "run_dir"} <= set(evaluated)
    assert evaluated["test_top1"] == pytest.approx(summary["test_top1"])
    assert (tmp_path / "eval" / "confusion.png").is_file() and len(evaluated["per_class"]) == 10


def test_val_every_validates_every_nth_epoch_and_after_the_last_with_the_same_result(tmp_path, capsys):
    import csv

    # with randomness drawn between batches (drop path, MixUp/CutMix), which validation must not move; the
    # kernels held to the defaults, as each fresh run measures its own (timing decides close races)
    for every in (1, 2):
        assert main(["train", *TINY, "--epochs", "3", "--val-every", str(every), "--drop-path", "0.2", "--mixup", "0.8",
                     "--cutmix", "1.0", "--deterministic", "--output-dir", str(tmp_path / f"every-{every}"),
                     "--json"]) == 0
    summaries = [json.loads((tmp_path / f"every-{n}" / "summary.json").read_text()) for n in (1, 2)]
    assert summaries[0]["test_top1"] == summaries[1]["test_top1"]  # validating changes no weight
    assert weights(tmp_path / "every-1")["head.weight"].equal(weights(tmp_path / "every-2")["head.weight"])
    rows = list(csv.DictReader((tmp_path / "every-2" / "metrics.csv").open()))
    assert [r["val_top1"] != "" for r in rows] == [False, True, True] and all(r["train_loss"] for r in rows)
    assert (tmp_path / "every-2" / "curves.png").stat().st_size > 0


def test_a_resumed_epoch_reports_its_time_before_the_interruption_too(tmp_path, monkeypatch):
    import csv
    import types

    from convnext.training import loop

    readings = iter(range(0, 10**9, 1000))  # the first process's clock: each reading 1000 s after the last
    monkeypatch.setattr(loop, "time", types.SimpleNamespace(time=lambda: float(next(readings))))
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--max-steps", "3", "--output-dir", str(run_dir)]) == 0
    monkeypatch.undo()
    _, interrupted = run_state.newest_intact(run_dir)
    assert interrupted["step_in_epoch"] == 3 and interrupted["epoch_seconds"] >= 1000
    assert main(["train", "--resume", str(run_dir)]) == 0
    (row,) = csv.DictReader((run_dir / "metrics.csv").open())
    assert float(row["epoch_s"]) >= interrupted["epoch_seconds"]  # not only the part after the resume
    assert run_state.newest_intact(run_dir)[1]["epoch_seconds"] == 0  # a finished epoch leaves none over


def test_short_digits_run_reaches_a_sane_accuracy(tmp_path, capsys):
    """The default recipe and model on a small budget; a broken recipe fails here."""
    assert main(["train", "--epochs", "4", "--output-dir", str(tmp_path / "r"), "--json"]) == 0
    assert last_json(capsys.readouterr().out)["test_top1"] >= 0.9


def test_torn_checkpoint_write_leaves_the_old_one_usable(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_state.save({"global_step": 1, "w": torch.ones(3)}, run_dir, step=1, keep=2)

    def torn(obj, file, *args, **kwargs):
        file.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", torn)
    with pytest.raises(OSError):
        run_state.save({"global_step": 2, "w": torch.zeros(3)}, run_dir, step=2, keep=2)
    monkeypatch.undo()
    assert run_state.load_latest(run_dir)["global_step"] == 1
    # A damaged newest file (not written by us) is skipped in favour of the previous one.
    (run_dir / "checkpoints" / "step-00000009.pth").write_bytes(b"garbage")
    assert run_state.load_latest(run_dir)["global_step"] == 1


def test_keeps_the_newest_k_and_the_best(tmp_path):
    for step in range(1, 6):
        run_state.save({"global_step": step}, tmp_path, step=step, keep=2, best=step == 2)
    assert [p.name for p in run_state.checkpoint_files(tmp_path)] == ["step-00000005.pth", "step-00000004.pth"]
    assert torch.load(tmp_path / "checkpoints" / "best.pth", weights_only=True)["global_step"] == 2


def poison_loss(monkeypatch, at_step: int) -> None:
    """The training loss turns NaN at one step (one loss a step: no accumulation)."""
    real = Classification.loss
    calls = []

    def poisoned(self, network, images, labels):
        calls.append(1)
        loss = real(self, network, images, labels)
        return loss * float("nan") if len(calls) == at_step else loss

    monkeypatch.setattr(Classification, "loss", poisoned)


def test_non_finite_loss_stops_naming_the_step(tmp_path, monkeypatch, capsys):
    poison_loss(monkeypatch, at_step=4)
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--save-every", "1", "--output-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "non-finite loss at step 4 (epoch 1)" in err and err.count("\n") == 1
    assert run_state.load_latest(run_dir)["global_step"] == 3


def test_distributed_gloo_matches_one_process(tmp_path):
    """2 processes x batch 16 == 1 process x batch 32, to float32 tolerance."""
    common = ["--model", "convnext_test", "--epochs", "1", "--max-steps", "6", "--drop-path", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = [sys.executable, "-m", "convnext.cli", "train", *common, "--batch-size", "32",
              "--output-dir", str(tmp_path / "one")]
    double = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
              "-m", "convnext.cli", "train", *common, "--batch-size", "16", "--output-dir", str(tmp_path / "two")]
    for command in (single, double):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
    assert "effective batch 32 (16 x 2 process(es)" in result.stdout
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    for key in one:
        assert torch.allclose(one[key], two[key], rtol=1e-4, atol=1e-5), key
    summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two")]
    assert summaries[0]["test_top1"] == pytest.approx(summaries[1]["test_top1"], abs=1 / 360)


def make_folder(root: Path, classes=("cat", "dog"), per_class=6, size=40):
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for j in range(per_class):
            color = (40 * i + 5 * j, 200 - 30 * i, 90)
            Image.new("RGB", (size, size + 8), color).save(root / name / f"{j}.png")
    return root


def test_image_folder_training_and_predict(tmp_path, capsys):
    make_folder(tmp_path / "data" / "train")
    make_folder(tmp_path / "data" / "val", per_class=2)
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--data", str(tmp_path / "data"), "--batch-size", "4", "--epochs", "1",
                 "--output-dir", str(run_dir), "--json"]) == 0
    assert "input 64px" in capsys.readouterr().err  # small images are not blown up to 224 (--json: log on stderr)
    (tmp_path / "notes.txt").write_text("not an image")
    images = [str(tmp_path / "data" / "val" / "cat" / "0.png"), str(tmp_path / "notes.txt")]
    assert main(["predict", "--weights", str(run_dir), *images, "--top-k", "2", "--json"]) == 0
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert len(results) == 1 and {t["class"] for t in results[0]["top"]} == {"cat", "dog"}
    assert sum(t["probability"] for t in results[0]["top"]) == pytest.approx(1.0, abs=1e-5)
    assert "skipped" in captured.err and "notes.txt" in captured.err
    assert main(["predict", "--weights", str(run_dir), str(tmp_path / "data" / "val")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 4


def bad_data_cases(tmp_path):
    cases = {}
    broken = make_folder(tmp_path / "broken")
    (broken / "cat" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cases["broken"] = (["--data", str(broken)], f"{broken / 'cat' / 'bad.png'}: unreadable image")
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    cases["empty"] = (["--data", str(tmp_path / "empty")], "empty dataset")
    make_folder(tmp_path / "stray" / "train")
    make_folder(tmp_path / "stray" / "val", classes=("cat", "emu"))
    cases["stray"] = (["--data", str(tmp_path / "stray")], "class(es) emu in")
    cases["missing"] = (["--data", str(tmp_path / "nowhere")], "no such data folder")
    return cases


def test_bad_data_gives_one_clear_error_line(tmp_path, capsys):
    for name, (args, message) in bad_data_cases(tmp_path).items():
        code = main(["train", *TINY, "--epochs", "1", "--output-dir", str(tmp_path / f"run-{name}"), *args])
        err = capsys.readouterr().err
        assert code == 2 and message in err and err.count("\n") == 1, (name, err)


def test_bad_images_can_be_skipped_and_counted(tmp_path, capsys):
    broken = make_folder(tmp_path / "broken")
    (broken / "cat" / "bad.png").write_bytes(b"not a png")
    assert main(["train", *TINY, "--data", str(broken), "--batch-size", "4", "--epochs", "1",
                 "--on-bad-image", "skip", "--output-dir", str(tmp_path / "run")]) == 0
    assert f"skipped 1 unreadable image(s), e.g. {broken / 'cat' / 'bad.png'}" in capsys.readouterr().out


def test_run_killed_before_its_first_checkpoint_restarts_from_the_beginning(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = [*TINY, "--epochs", "1", "--subset", "64", "--workers", "1", "--output-dir", str(run_dir)]
    assert main(["train", *args, "--max-steps", "1"]) == 0
    for path in run_state.checkpoint_files(run_dir):  # as if killed before any checkpoint was written
        path.unlink()
    assert main(["train", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert out.count("started;") == 2 and "resumed" not in out  # a fresh start, from the saved config
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2  # 64 images, batch 32


def test_compile_channels_last_checkpointing_and_deterministic_modes_train(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--subset", "64", "--compile", "--channels-last",
                 "--grad-checkpointing", "--deterministic", "--output-dir", str(run_dir), "--json"]) == 0
    summary = last_json(capsys.readouterr().out)
    assert summary["steps"] == 2 and 0 <= summary["test_top1"] <= 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["compile"] and config["channels_last"] and config["grad_checkpointing"] and config["deterministic"]
    # --deterministic is the run's: the process's switches are back as they were.
    assert not torch.are_deterministic_algorithms_enabled()


def test_the_loop_reads_the_device_once_per_log_interval(tmp_path, monkeypatch, capsys):
    """No `.item()` per step: the losses are read (and checked) every LOG_EVERY steps and at the
    epoch's end, one sync each; a non-finite loss is still named by its step at the next look."""
    from convnext.training import loop

    monkeypatch.setattr(loop, "LOG_EVERY", 4)
    syncs = []
    for method in ("item", "tolist", "__bool__", "__float__"):
        real = getattr(torch.Tensor, method)

        def counted(self, *args, real=real, method=method):
            if sys._getframe(1).f_code.co_filename.endswith(os.path.join("training", "loop.py")):
                syncs.append(method)
            return real(self, *args)
        monkeypatch.setattr(torch.Tensor, method, counted)
    assert main(["train", *TINY, "--epochs", "1", "--subset", "256", "--batch-size", "32",
                 "--output-dir", str(tmp_path / "run")]) == 0  # 8 steps: looks at steps 4 and 8
    assert syncs == ["tolist", "tolist"]
    poison_loss(monkeypatch, at_step=2)
    capsys.readouterr()
    assert main(["train", *TINY, "--epochs", "1", "--subset", "256", "--batch-size", "32",
                 "--output-dir", str(tmp_path / "poisoned")]) == 2
    err = capsys.readouterr().err
    assert "non-finite loss at step 2 (epoch 1)" in err and err.count("\n") == 1
