"""Bad input to every command: one `convnext CMD: error:` line, exit status 2, no traceback, nothing
half-written."""
import pytest
import torch
from PIL import Image

import convnext
from convnext.cli import main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Named inputs, good and bad, in one folder the bad commands must leave as they found it."""
    root = tmp_path_factory.mktemp("inputs")
    model = convnext.create_model("convnext_test", num_classes=3)
    convnext.save_pretrained(model, root / "run")
    convnext.write_checkpoint(model, root / "test.pth", "official")
    convnext.write_checkpoint(convnext.create_model("convnext_atto", num_classes=3), root / "atto.pth", "official")
    (root / "empty.pth").write_bytes(b"")
    (root / "truncated.pth").write_bytes((root / "test.pth").read_bytes()[:500])
    (root / "notes.txt").write_text("not a checkpoint\n")
    (root / "no_weights").mkdir()
    Image.new("RGB", (40, 40), (10, 200, 30)).save(root / "image.png")
    (root / "fake.png").write_text("not an image")
    (root / "folder.pth").mkdir()
    return root


CASES = {  # id: arguments, with {root} for the inputs and {out} for a destination that must stay absent
    "list-input-size": "list --input-size 0",
    "convert-missing": "convert {root}/nothing.pth {out} --to ours",
    "convert-folder-for-file": "convert {root}/no_weights {out} --to ours",
    "convert-empty": "convert {root}/empty.pth {out} --to ours",
    "convert-truncated": "convert {root}/truncated.pth {out} --to ours",
    "convert-not-checkpoint": "convert {root}/notes.txt {out} --to ours",
    "convert-other-model": "convert {root}/atto.pth {out} --to ours --model convnext_test",
    "convert-file-for-folder": "convert {root}/test.pth {root}/notes.txt --to hf",
    "convert-folder-for-file-dest": "convert {root}/test.pth {root}/folder.pth --to torchvision",
    "convert-unwritable": "convert {root}/test.pth {root}/notes.txt/sub.pth --to timm",
    "convert-num-classes": "convert {root}/test.pth {out} --to ours --num-classes 0",
    "train-epochs": "train --epochs -1 --output-dir {out}",
    "train-lr": "train --lr 0 --output-dir {out}",
    "train-drop-path": "train --drop-path 1.5 --output-dir {out}",
    "train-warmup": "train --epochs 2 --warmup-epochs 3 --output-dir {out}",
    "train-input-size": "train --input-size 8 --output-dir {out}",
    "train-missing-data": "train --data {root}/nothing --output-dir {out}",
    "train-file-for-data": "train --data {root}/notes.txt --output-dir {out}",
    "train-empty-weights": "train --model convnext_test --weights {root}/empty.pth --output-dir {out}",
    "train-other-model": "train --model convnext_test --weights {root}/atto.pth --output-dir {out}",
    "train-unknown-model": "train --model convnext_tinny --output-dir {out}",
    "train-unwritable": "train --model convnext_test --max-steps 1 --output-dir {root}/notes.txt/run",
    "eval-missing": "eval --weights {root}/nothing.pth --output-dir {out}",
    "eval-not-checkpoint": "eval --weights {root}/notes.txt --output-dir {out}",
    "eval-truncated": "eval --weights {root}/truncated.pth --output-dir {out}",
    "eval-batch-size": "eval --weights {root}/run --batch-size 0 --output-dir {out}",
    "eval-input-size": "eval --weights {root}/run --input-size 16 --output-dir {out}",
    "eval-crop": "eval --weights {root}/run --crop-pct 1.5 --output-dir {out}",
    "eval-missing-data": "eval --weights {root}/run --data {root}/nothing --output-dir {out}",
    "predict-missing-weights": "predict --weights {root}/nothing.pth {root}/image.png",
    "predict-folder-weights": "predict --weights {root}/no_weights {root}/image.png",
    "predict-non-image": "predict --weights {root}/run {root}/fake.png",
    "predict-missing-image": "predict --weights {root}/run {root}/nothing.png",
    "predict-top-k": "predict --weights {root}/run --top-k 0 {root}/image.png",
    "predict-other-model": "predict --weights {root}/atto.pth --model convnext_test {root}/image.png",
    "roadmap-step": "roadmap --steps 99",
    "roadmap-epochs": "roadmap --train --epochs 0 --output-dir {out}",
    "roadmap-missing-data": "roadmap --train --steps 13 --data {root}/nothing --output-dir {out}",
    "export-missing": "export --weights {root}/nothing.pth --format onnx --output {out}",
    "export-format": "export --weights {root}/run --format tflite --output {out}",
    "export-empty": "export --weights {root}/empty.pth --format onnx --output {out}",
    "export-unwritable": "export --weights {root}/run --format onnx --output {root}/notes.txt/m.onnx",
    "export-folder-output": "export --weights {root}/run --format torchscript --output {root}/folder.pth",
    "pretrain-v1-model": "pretrain --model convnext_test --epochs 1 --output-dir {out}",
    "pretrain-input-size": "pretrain --model convnextv2_test --input-size 80 --epochs 1 --output-dir {out}",
    "pretrain-mask-ratio": "pretrain --mask-ratio 1.0 --output-dir {out}",
    "pretrain-recipe": "pretrain --recipe small --output-dir {out}",
    "serve-no-model": "serve",
    "serve-missing-weights": "serve --weights {root}/nothing.pth",
    "serve-port": "serve --weights {root}/run --port 70000",
    "serve-batch-size": "serve --weights {root}/run --max-batch-size 0",
    "serve-delay": "serve --weights {root}/run --max-batch-delay-ms -1",
    "serve-upload": "serve --weights {root}/run --max-upload-mb 0",
    "serve-cam-stage": "serve --weights {root}/run --cam-stage 4",
    "serve-host": "serve --weights {root}/run --host 203.0.113.7",
    "detect-missing-data": "detect train --data {root}/nothing --output-dir {out}",
    "detect-image-folder": "detect train --data {root} --output-dir {out}",
    "segment-missing-data": "segment train --data {root}/nothing --output-dir {out}",
    "detect-eval-classifier": "detect eval --weights {root}/run",
    "segment-predict-not-image": "segment predict --weights {root}/run {root}/fake.png --output {out}",
    "detect-schedule": "detect train --schedule linear --output-dir {out}",
    "pretrain-missing-data": "pretrain --data {root}/nothing --output-dir {out}",
    "pretrain-empty-folder": "pretrain --data {root}/no_weights --output-dir {out}",
    "pretrain-resume-not-a-run": "pretrain --resume {root}/no_weights",
    "bench-model": "bench --model convnext_tinny --peers none",
    "bench-batch": "bench --model convnext_test --batch-size 0",
    "bench-input-size": "bench --model convnext_test --input-size 8 --peers none --rounds 1 --iters 1",
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_one_error_line(case, files, tmp_path, capsys):
    before = sorted(p.relative_to(files) for p in files.rglob("*"))
    out = tmp_path / "out"
    argv = CASES[case].format(root=files, out=out).split()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, err
    assert len(errors) == 1 and errors[0].startswith(f"convnext {argv[0]}: error: "), err
    assert "Traceback" not in err
    assert not out.exists(), "a failed command left its destination behind"
    assert sorted(p.relative_to(files) for p in files.rglob("*")) == before, "a failed command wrote beside its inputs"
    assert torch.get_default_dtype() == torch.float32
