"""On-device exports: ExecuTorch (.pte, XNNPACK), LiteRT (.tflite) and Core ML (.mlpackage), float32 and
INT8, written by `convnext export`, read back by eval and predict, and refused in one line when wrong.

LiteRT's converter cannot share the dev environment (it pins older typing-extensions): `make test`
builds `.venv-tflite` for it and names its Python in CONVNEXT_TFLITE_PYTHON; the .tflite files then run
here, on the LiteRT runtime that is in dev.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

import convnext
from convnext.cli import main
from convnext.deploy.export import export, export_int8, load_exported
from convnext.deploy.formats import FORMATS, coreml, executorch_pte
from helpers import randomised

FAMILY = ["convnext_test", "convnextv2_test", "convnext_isotropic_test"]
HEAVY = set(executorch_pte.HEAVY)


def small(name: str, classes: int = 3):
    model = randomised(name, num_classes=classes)
    model.class_names = [f"c{i}" for i in range(classes)]
    model.data_config = {"input_size": 64}
    return model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edge")
    convnext.save_pretrained(small("convnext_test"), folder / "w")
    from PIL import Image

    Image.new("RGB", (70, 80), (120, 30, 200)).save(folder / "0.png")
    return folder


@pytest.mark.parametrize("name", FAMILY)
def test_executorch_delegates_every_convolution_and_matrix_product(name, tmp_path):
    model = small(name)
    notes = []
    checks = export(model, tmp_path / "m.pte", "executorch", notes=notes)
    assert max(diff for _, diff in checks) <= 1e-4
    assert notes and notes[0].startswith("XNNPACK:") and not any("warning" in n for n in notes)
    meta = json.loads((tmp_path / "m.pte.json").read_text())
    assert meta["format"] == "executorch" and meta["batch"] == 1 and meta["input_size"] == 64
    # Read the lowered program itself: nothing heavy is left to portable kernels.
    edge = executorch_pte._lower(executorch_pte._folded_program(model, torch.randn(1, 3, 64, 64)))
    summary = executorch_pte.delegation(edge)
    assert summary["pieces"] >= 1 and not HEAVY & set(summary["outside"]), summary
    runnable = load_exported(tmp_path / "m.pte")
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        assert (runnable(x) - model(x)).abs().max() <= 1e-4  # a batch, fed image by image


def test_executorch_int8_is_smaller_and_agrees(tmp_path):
    model = small("convnextv2_test")
    calibration = [torch.randn(8, 3, 64, 64) for _ in range(4)]
    export(model, tmp_path / "f.pte", "executorch")
    notes = export_int8(model, tmp_path / "q.pte", "executorch", calibration)
    assert not any("warning" in n for n in notes)
    # int8 weights stayed int8: 3 of each weight's 4 bytes saved (at least 2, for scales and overhead)
    weights = sum(m.weight.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)))
    assert (tmp_path / "q.pte").stat().st_size < (tmp_path / "f.pte").stat().st_size - 2 * weights
    int8 = load_exported(tmp_path / "q.pte")
    x = torch.cat(calibration[:2])
    with torch.no_grad():
        a, b = model(x), int8(x)
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.98


def test_predict_and_eval_take_a_pte_as_they_take_the_weights(weights, capsys):
    pte = weights / "m.pte"
    assert main(["export", "--weights", str(weights / "w"), "--format", "executorch", "--output", str(pte)]) == 0
    out = capsys.readouterr().out
    assert "XNNPACK:" in out and "ok" in out
    answers = []
    for source in (pte, weights / "w"):
        assert main(["predict", "--weights", str(source), str(weights / "0.png"), "--json"]) == 0
        answers.append(json.loads(capsys.readouterr().out)[0]["top"])
    assert [t["class"] for t in answers[0]] == [t["class"] for t in answers[1]]
    assert [t["probability"] for t in answers[0]] == pytest.approx([t["probability"] for t in answers[1]], abs=1e-5)
    from PIL import Image

    for i in range(3):
        (weights / "eval" / f"c{i}").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (40 * i, 90, 30)).save(weights / "eval" / f"c{i}" / "a.png")
    scores = []
    for source in (pte, weights / "w"):
        assert main(["eval", "--weights", str(source), "--data", str(weights / "eval"), "--json",
                     "--output-dir", str(weights / f"eval-{len(scores)}")]) == 0
        scores.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    assert scores[0]["test_top1"] == scores[1]["test_top1"]
    assert scores[0]["test_loss"] == pytest.approx(scores[1]["test_loss"], abs=1e-4)


def _convert_tflite(args: list[str]) -> subprocess.CompletedProcess:
    python = os.environ.get("CONVNEXT_TFLITE_PYTHON")
    if python is None:
        try:
            import litert_torch  # noqa: F401
            python = sys.executable
        except ImportError:
            if os.environ.get("CI"):  # CI runs `make test`, which builds it: its absence there is a failure
                pytest.fail("CONVNEXT_TFLITE_PYTHON is not set: run the tests with make test")
            pytest.skip("no LiteRT converter: make test builds .venv-tflite and sets CONVNEXT_TFLITE_PYTHON")
    return subprocess.run([python, "-m", "convnext.cli", "export", *args], capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("name", FAMILY)
def test_tflite_float32_runs_here_within_1e4(name, tmp_path):
    model = small(name)
    convnext.save_pretrained(model, tmp_path / "w")
    done = _convert_tflite(["--weights", str(tmp_path / "w"), "--format", "tflite", "--output", str(tmp_path / "m.tflite")])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok" in done.stdout
    runnable = load_exported(tmp_path / "m.tflite")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (runnable(x) - model(x)).abs().max() <= 1e-4


def test_tflite_int8_weights_need_no_calibration_and_agree(tmp_path):
    model = small("convnext_test")
    convnext.save_pretrained(model, tmp_path / "w")
    done = _convert_tflite(["--weights", str(tmp_path / "w"), "--format", "tflite", "--int8",
                            "--output", str(tmp_path / "q.tflite")])
    assert done.returncode == 0, done.stderr[-2000:]
    assert "INT8 weights" in done.stdout
    assert json.loads((tmp_path / "q.tflite.json").read_text())["int8"] is True
    x = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), load_exported(tmp_path / "q.tflite")(x)
    assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.98


def test_coreml_keeps_the_statistics_float32(tmp_path):
    model = small("convnextv2_test")
    notes = []
    export(model, tmp_path / "m.mlpackage", "coreml", notes=notes)
    assert (tmp_path / "m.mlpackage").is_dir() and any("macOS" in n for n in notes)
    counts = coreml.precisions(coreml.load_spec(tmp_path / "m.mlpackage"))
    for op in ("layer_norm", "gelu", "reduce_l2_norm"):  # LayerNorm, GELU and GRN's norm
        assert counts["float32"][op] > 0 and counts["float16"][op] == 0, counts
    assert counts["float16"]["conv"] > 0 and counts["float16"]["linear"] > 0 and counts["float32"]["conv"] == 0
    export(model, tmp_path / "m.mlpackage", "coreml")  # written again over the old package, atomically
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.mlpackage", "m.mlpackage.json"]


def test_formats_are_one_entry_each():
    for name, fmt in FORMATS.items():
        assert fmt.name == name and fmt.suffix.startswith(".") and callable(fmt.write)
        assert (fmt.run is None) == (fmt.tolerance is None)  # what is not run here is not checked here
    suffixes = [f.suffix for f in FORMATS.values()]
    assert len(set(suffixes)) == len(suffixes)


def test_bad_input_is_one_line(weights, tmp_path, capsys, monkeypatch):
    w = str(weights / "w")
    assert main(["export", "--weights", w, "--format", "executorch", "--int8", "--output", str(tmp_path / "q.pte")]) == 2
    assert "give --calibration-data" in capsys.readouterr().err
    assert main(["export", "--weights", w, "--format", "coreml", "--int8", "--output", str(tmp_path / "q.mlpackage")]) == 2
    assert "--int8 is offered for" in capsys.readouterr().err
    assert main(["export", "--weights", w, "--format", "executorch", "--dynamic-batch",
                 "--output", str(tmp_path / "d.pte")]) == 2
    assert "batch 1" in capsys.readouterr().err
    assert main(["export", "--weights", w, "--format", "executorch", "--output", str(tmp_path / "m.onnx")]) == 2
    assert "NAME.pte" in capsys.readouterr().err

    pte = weights / "m.pte"
    if not pte.exists():
        export(convnext.load_pretrained(w), pte, "executorch")
    sidecar = json.loads((weights / "m.pte.json").read_text())
    other = tmp_path / "other.pte"
    other.write_bytes(pte.read_bytes())
    (tmp_path / "other.pte.json").write_text(json.dumps({**sidecar, "num_classes": 10}))  # another model's sidecar
    assert main(["predict", "--weights", str(other), str(weights / "0.png")]) == 2
    assert "not the classifier its sidecar describes" in capsys.readouterr().err
    (tmp_path / "other.pte.json").write_text(json.dumps({**sidecar, "engine_version": "99.0"}))
    assert main(["predict", "--weights", str(other), str(weights / "0.png")]) == 2
    assert "newer than the" in capsys.readouterr().err
    (tmp_path / "other.pte.json").write_text(json.dumps(sidecar))
    other.write_bytes(b"not a program" * 10)
    assert main(["predict", "--weights", str(other), str(weights / "0.png")]) == 2
    assert "cannot read it" in capsys.readouterr().err

    monkeypatch.setattr(type(FORMATS["executorch"]), "installed", lambda self, runtime=False: None)  # not installed
    assert main(["export", "--weights", w, "--format", "executorch", "--output", str(tmp_path / "x.pte")]) == 2
    assert "pip install 'convnext[executorch]'" in capsys.readouterr().err
    assert not (tmp_path / "x.pte").exists()
