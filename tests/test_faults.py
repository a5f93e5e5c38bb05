"""Faults a long run meets: kill -9 and signals at random moments of every kind of run, a full disk
during any write of any command, a damaged newest checkpoint. Each ends in one clear line, nothing
half-written stays, and a resumed run ends bit for bit where an uninterrupted one ends."""
import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from convnext.cli import main
from convnext.runtime import atomic
from convnext.training import run_state

import fault_points

REAL_FSYNC = atomic._fsync  # where every write of runtime.atomic ends; the tests fail it on purpose
TRAIN = ["train", "--model", "convnext_test", "--batch-size", "32", "--subset", "64", "--epochs", "2"]


def test_every_kind_of_run_survives_kills_and_signals(tmp_path):
    """kill -9 at a random step and halfway through a checkpoint, SIGTERM and SIGINT at random steps
    (saved, resume command printed, exit 0), and kill -9 between the last checkpoint and the final files
    (with and without --max-steps: a run resumed at its --max-steps takes no further step), for train,
    pretrain, detect train and segment train."""
    outcomes = fault_points.study(fault_points.KINDS, tmp_path, faults=4, seed=0)
    assert len(outcomes) == 2 * len(fault_points.KINDS)
    for outcome in outcomes:
        assert outcome.held, (outcome.kind, outcome.problems, outcome.faults)
        assert not any("not tried" in f for f in outcome.faults), outcome.faults
        if "--max-steps" in outcome.kind:
            assert outcome.faults == ["kill before the final files (--before-final): exit -9"]
        else:
            assert [f.split(" (")[0] for f in outcome.faults][-1] == fault_points.LAST
            assert {f.split(" (")[0] for f in outcome.faults[:-1]} == set(fault_points.FAULTS[:4])


def no_temporaries(folder: Path) -> bool:
    return not list(folder.rglob(".*.tmp"))


def assert_one_line(err: str, *parts: str) -> None:
    assert err.count("\n") == 1, err
    for part in parts:
        assert part in err, (part, err)


def writes_of(argv: list[str], monkeypatch, capsys) -> list[Path]:
    """The files a command writes through runtime.atomic, in order (its output is dropped)."""
    written = []

    def counting(path):
        written.append(Path(path))
        REAL_FSYNC(path)

    monkeypatch.setattr(atomic, "_fsync", counting)
    assert main(argv) == 0
    monkeypatch.setattr(atomic, "_fsync", REAL_FSYNC)
    capsys.readouterr()
    return written


def failing_at(monkeypatch, name: str, error: OSError):
    """The first write of a file called `name` fails (after its bytes are written, at the flush)."""
    def fsync(path):
        if Path(path).name.startswith(f".{name}.") or Path(path).parent.name.startswith(f".{name}."):
            raise error
        REAL_FSYNC(path)

    monkeypatch.setattr(atomic, "_fsync", fsync)


def destination_name(written: Path) -> str:
    """"model.safetensors" for ".model.safetensors.1a2b3c4d.tmp" (or a file inside such a folder)."""
    hidden = written if written.name.endswith(".tmp") else written.parent
    return hidden.name[1:].rsplit(".", 2)[0]


def run_writes(kind: str, tmp_path: Path, monkeypatch, capsys) -> tuple[list[str], dict[str, Path]]:
    """A one-epoch run of `kind` and where it writes: its argv and {file name: folder in the run} (not the
    kernel choices it keeps for the machine, a cache whose failed write costs only the next run's
    measurements, tested in test_speed_paths.py)."""
    argv = fault_points.arguments(kind, tmp_path)
    argv = [*argv[:argv.index("--epochs")], "--epochs", "1", *(["--subset", "32"] if "segment" not in kind else [])]
    everything = tmp_path / f"all-{kind.replace(' ', '-')}"
    written = writes_of([*argv, "--output-dir", str(everything)], monkeypatch, capsys)
    return argv, {destination_name(p): p.parent.relative_to(everything) for p in written
                  if p.name.endswith(".tmp") and p.is_relative_to(everything)}


def test_a_failed_write_anywhere_in_a_run_names_the_file_and_the_resume(tmp_path, monkeypatch, capsys):
    """Every file a run writes, failed in turn with a full disk (every file of `train`; of the other
    kinds, those `train` does not write): one line naming it, the newest intact checkpoint and the
    command that resumes from it; nothing half-written; older checkpoints intact."""
    seen = set()
    for kind in ("train", "pretrain", "segment train"):
        argv, where = run_writes(kind, tmp_path, monkeypatch, capsys)
        if kind == "train":
            expected = {"config.json", "metrics.csv", "model.safetensors", "model.json", "summary.json", "curves.png"}
            assert expected <= set(where) and any(n.startswith("step-") for n in where), where
        names = [name for name in where if name not in seen]
        seen |= set(where)
        assert names, kind
        for name in names:
            run_dir = tmp_path / f"{kind.replace(' ', '-')}-{name}"
            failing_at(monkeypatch, name, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
            assert main([*argv, "--output-dir", str(run_dir)]) == 2, name
            err = capsys.readouterr().err
            assert_one_line(err, f"cannot write {run_dir / where[name] / name}: no space left on device")
            if name == "config.json":
                assert "nothing was saved" in err
            else:
                found = run_state.newest_intact(run_dir)
                intact = f"the newest intact checkpoint is {found[0]}" if found else "no checkpoint was written yet"
                assert intact in err and f"then: convnext {kind} --resume {run_dir}" in err, err
            assert no_temporaries(tmp_path), name
            for checkpoint in run_state.checkpoint_files(run_dir):
                run_state.read(checkpoint)  # every checkpoint on disk reads back whole
        monkeypatch.undo()
        resumed = tmp_path / f"{kind.replace(' ', '-')}-{names[-1]}"  # failed at its last write: resuming finishes it
        assert main([*kind.split(), "--resume", str(resumed)]) == 0
        assert (resumed / "summary.json").is_file()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("trained") / "run"
    assert main([*TRAIN, "--epochs", "1", "--output-dir", str(run_dir)]) == 0
    return run_dir


def other_commands(trained: Path, out: Path) -> dict[str, list[str]]:
    image = out / "seven.png"
    from PIL import Image

    Image.new("L", (32, 32), 128).save(image)
    return {
        "convert": ["convert", str(trained), str(out / "official.pth"), "--to", "official"],
        "export": ["export", "--weights", str(trained), "--format", "torchscript", "--output", str(out / "model.pt")],
        "eval": ["eval", "--weights", str(trained), "--output-dir", str(out / "eval")],
        "predict": ["predict", "--weights", str(trained), str(image), "--cam", str(out / "cams"), "--cam-stage", "1"],
    }


def test_a_failed_write_in_other_commands_is_one_line(trained, tmp_path, monkeypatch, capsys):
    for command, argv in other_commands(trained, tmp_path).items():
        names = {destination_name(p) for p in writes_of(argv, monkeypatch, capsys)}
        assert names, command
        for name in names:
            failing_at(monkeypatch, name, OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
            assert main(argv) == 2, (command, name)
            assert_one_line(capsys.readouterr().err, f"convnext {command}: error: cannot write ",
                            f"{name}: no space left on device")
            assert no_temporaries(tmp_path), (command, name)
        failing_at(monkeypatch, next(iter(names)), PermissionError(errno.EACCES, os.strerror(errno.EACCES)))
        assert main(argv) == 2
        assert "not writable (permission denied)" in capsys.readouterr().err
        monkeypatch.undo()


@pytest.fixture
def small_disk(tmp_path):
    """A real size-limited file system (tmpfs), where the machine lets us mount one (root, as in CI)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("this machine does not allow mounting a tmpfs")

    def resize(size: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)

    yield mount, resize
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_during_training_then_resume(small_disk, trained, tmp_path, capsys):
    """On a tmpfs that holds one checkpoint but not two: the second checkpoint's write fails with the
    line naming the first, which stays intact; with more space the run resumes and finishes."""
    mount, resize = small_disk
    checkpoint_bytes = run_state.checkpoint_files(trained)[0].stat().st_size
    resize(int(1.6 * checkpoint_bytes))
    run_dir = mount / "run"
    assert main([*TRAIN, "--output-dir", str(run_dir)]) == 2
    err = capsys.readouterr().err
    first = run_dir / "checkpoints" / "step-00000002.pth"
    assert_one_line(err, f"cannot write {run_dir}/checkpoints/step-00000004.pth: no space left on device",
                    f"the newest intact checkpoint is {first} (step 2)",
                    f"free some space, then: convnext train --resume {run_dir}")
    assert run_state.read(first)["global_step"] == 2 and no_temporaries(mount)

    # Other libraries' writers on the same full disk: torch.save to a path (which states no cause),
    # safetensors, matplotlib.
    for argv, name in ((["convert", str(trained), str(mount / "official.pth"), "--to", "official"], "official.pth"),
                       (["convert", str(trained), str(mount / "copy"), "--to", "ours"], "copy/model.safetensors"),
                       (["eval", "--weights", str(trained), "--output-dir", str(mount / "eval")], "confusion.png")):
        filler = mount / "filler"
        free = shutil.disk_usage(mount).free
        filler.write_bytes(b"\0" * max(0, free - 4096))
        assert main(argv) == 2, argv
        assert_one_line(capsys.readouterr().err, f"{name}: no space left on device")
        filler.unlink()
        assert no_temporaries(mount)

    resize(8 << 20)
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4


def test_a_damaged_newest_checkpoint_resumes_from_the_previous_one(trained, tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main([*TRAIN, "--save-every", "1", "--output-dir", str(run_dir), "--max-steps", "3"]) == 0
    newest, previous = run_state.checkpoint_files(run_dir)[:2]
    data = bytearray(newest.read_bytes())
    for at in range(len(data) // 3, len(data), 512):  # one flipped byte may fall in the zip's alignment padding
        data[at] ^= 0xFF
    newest.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert f"skipping damaged checkpoint {newest}" in out and "resumed at epoch 2, step 2" in out
    # Every checkpoint damaged: refused, naming the newest; never a silent fresh start.
    for path in run_state.checkpoint_files(run_dir):
        path.write_bytes(path.read_bytes()[:1000])
    assert main(["train", "--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    newest = run_state.checkpoint_files(run_dir)[0]
    assert f"every checkpoint of {run_dir} is damaged (the newest: {newest})" in err and err.count("\n") == 1
