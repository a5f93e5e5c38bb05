"""ONNX Runtime, OpenVINO and ExecuTorch as backends: the same outputs as PyTorch (within
backends.TOLERANCE) for V1, V2 and isotropic models, through predict, eval, serve, bench and export, and
one-line errors. (LiteRT's converter lives in its own environment: tests/test_edge_export.py.)"""
import json

import pytest
import torch
from PIL import Image

import convnext
from convnext.cli import main
from convnext.deploy.backends import BACKENDS, TOLERANCE, on_backend, require
from convnext.deploy.predictor import Predictor
from helpers import max_abs_diff, randomised


def installed(backend: str) -> bool:
    if backend == "pytorch":
        return True
    try:
        require(backend)
        return True
    except ValueError:
        return False


AVAILABLE = [backend for backend in BACKENDS if installed(backend)]


def test_the_dev_environment_has_every_engine_but_litert_s_converter():
    assert set(BACKENDS) - set(AVAILABLE) == {"litert"}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])  # ExecuTorch, LiteRT: tests/test_edge_export.py
@pytest.mark.parametrize("name", ["convnext_test", "convnextv2_test", "convnext_isotropic_test"])
def test_each_backend_computes_pytorchs_logits(backend, name):
    model = randomised(name, num_classes=7).eval()
    engine = on_backend(model, backend, size=64)
    for batch in (1, 3):  # a dynamic batch
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            assert max_abs_diff(engine(x), model(x)) < TOLERANCE
    assert engine.num_classes == 7 and engine.backend == backend


@pytest.fixture
def run_dir(tmp_path):
    model = randomised("convnext_test", num_classes=3)
    model.class_names = ["ant", "bee", "cat"]
    model.data_config = {"input_size": 64}
    convnext.save_pretrained(model, tmp_path / "w")
    for i, colour in enumerate([(120, 30, 200), (10, 200, 40)]):
        Image.new("RGB", (70, 80), colour).save(tmp_path / f"{i}.png")
    return tmp_path


def test_predict_and_eval_give_the_same_answers_on_every_backend(run_dir, capsys):
    answers = {}
    for backend in AVAILABLE:
        assert main(["predict", "--weights", str(run_dir / "w"), "--backend", backend, str(run_dir / "0.png"),
                     str(run_dir / "1.png"), "--json", "--top-k", "3"]) == 0
        answers[backend] = [t["probability"] for r in json.loads(capsys.readouterr().out) for t in r["top"]]
    for backend in AVAILABLE:
        assert answers[backend] == pytest.approx(answers["pytorch"], abs=1e-5)
    folder = run_dir / "data"
    for name in ("ant", "bee", "cat"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (64, 64), (hash(name) % 255, 90, 30)).save(folder / name / "a.png")
    losses = {}
    for backend in AVAILABLE:
        assert main(["eval", "--weights", str(run_dir / "w"), "--data", str(folder), "--backend", backend, "--json",
                     "--output-dir", str(run_dir / f"eval-{backend}")]) == 0
        losses[backend] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["test_loss"]
    for backend in AVAILABLE:
        assert losses[backend] == pytest.approx(losses["pytorch"], abs=1e-4)


def test_grad_cam_is_pytorchs_alone_and_says_so(run_dir, capsys):
    assert main(["predict", "--weights", str(run_dir / "w"), "--backend", "openvino", "--cam", str(run_dir / "cam"),
                 str(run_dir / "0.png")]) == 2
    assert "--cam needs the pytorch backend" in capsys.readouterr().err
    predictor = Predictor(convnext.load_pretrained(run_dir / "w"), backend="onnxruntime")
    with pytest.raises(ValueError, match="need gradients"):
        predictor.cams(torch.zeros(1, 3, 64, 64))
    from starlette.testclient import TestClient

    from convnext.deploy.serving.app import Settings, create_app

    with TestClient(create_app(predictor, Settings(), "convnext_test")) as client:  # heat maps refused with a 4xx
        assert client.get("/v1/model").json()["heat_maps"] is False
        image = (run_dir / "0.png").read_bytes()
        answer = client.post("/v1/predict", content=image, headers={"content-type": "image/png"})
        assert answer.status_code == 200 and len(answer.json()["top"]) == 3
        refused = client.post("/v1/predict?cam=1", content=image, headers={"content-type": "image/png"})
        assert refused.status_code == 422 and "heat maps need gradients" in refused.json()["error"]


def test_openvino_export_is_checked_and_runs_on_its_own(run_dir, capsys):
    output = run_dir / "ir" / "model.xml"
    assert main(["export", "--weights", str(run_dir / "w"), "--format", "openvino", "--output", str(output),
                 "--dynamic-batch"]) == 0
    assert output.is_file() and output.with_suffix(".bin").is_file() and "ok" in capsys.readouterr().out
    assert sorted(p.name for p in output.parent.iterdir()) == ["model.bin", "model.xml", "model.xml.json"]
    assert main(["predict", "--weights", str(output), str(run_dir / "0.png"), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out)[0]["top"]
    assert main(["predict", "--weights", str(run_dir / "w"), str(run_dir / "0.png"), "--json"]) == 0
    eager = json.loads(capsys.readouterr().out)[0]["top"]
    assert [t["class"] for t in exported] == [t["class"] for t in eager]
    assert [t["probability"] for t in exported] == pytest.approx([t["probability"] for t in eager], abs=1e-5)
    assert main(["export", "--weights", str(run_dir / "w"), "--format", "openvino", "--output",
                 str(run_dir / "model.ir")]) == 2
    assert "NAME.xml" in capsys.readouterr().err
    assert main(["predict", "--weights", str(output), "--backend", "onnxruntime", str(run_dir / "0.png")]) == 2
    assert "openvino file: it runs with --backend openvino, not onnxruntime" in capsys.readouterr().err


def test_bench_times_both_engines(tmp_path):
    from convnext.deploy import bench

    report = bench.run(bench.BenchConfig(model="convnext_test", batch=2, size=64, peers=(), rounds=1, iters=1,
                                         train=False, memory=False, grad_checkpointing=False, int8=True),
                       say=lambda text: None)
    names = [r["name"] for r in report["results"]]
    assert {"convnext onnxruntime", "convnext openvino", "convnext onnxruntime int8", "convnext openvino int8",
            "convnext openvino int8 qdq"} <= set(names)


def test_bench_takes_the_backends_to_time(tmp_path, capsys):
    common = ["bench", "--model", "convnext_test", "--input-size", "64", "--batch-size", "2", "--peers", "none",
              "--rounds", "1", "--iters", "1", "--no-train", "--no-memory", "--no-grad-checkpointing"]
    for backends, expected in ((["--backend", "openvino"], {"convnext openvino"}), (["--backend", "pytorch"], set()),
                               (["--no-onnx"], set())):
        assert main(common + backends + ["--json", str(tmp_path / "b.json")]) == 0
        names = {r["name"] for r in json.loads((tmp_path / "b.json").read_text())["results"]}
        assert {"convnext reference", "convnext accelerated", "convnext optimized"} <= names
        assert {n for n in names if "onnxruntime" in n or "openvino" in n} == expected
    capsys.readouterr()


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """convnext_test trained 2 epochs on the digits, for the INT8 tests; read only."""
    path = tmp_path_factory.mktemp("int8") / "run"
    assert main(["train", "--model", "convnext_test", "--epochs", "2", "--output-dir", str(path)]) == 0
    return path


def test_int8_export_calibrates_on_the_users_images_and_keeps_the_answers(digits_run, tmp_path, capsys):
    output = tmp_path / "m.int8.onnx"
    assert main(["export", "--weights", str(digits_run), "--format", "onnx", "--int8", "--calibration-data",
                 "digits", "--calibration-images", "200", "--output", str(output)]) == 0
    said = capsys.readouterr().out
    agreement = float(said.split("top-1 as float32 on ")[1].split("%")[0])
    assert agreement >= 95 and json.loads((tmp_path / "m.int8.onnx.json").read_text())["int8"] is True
    import onnx

    ops = {node.op_type for node in onnx.load(str(output)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "LayerNormalization" in ops  # LayerNorm stays float
    Image.new("L", (8, 8), 90).save(tmp_path / "digit.png")
    assert main(["predict", "--weights", str(output), str(tmp_path / "digit.png"), "--json"]) == 0
    on_ort = json.loads(capsys.readouterr().out)[0]["top"]
    assert len(on_ort) == 5
    # OpenVINO reads the same INT8 ONNX file
    assert main(["predict", "--weights", str(output), "--backend", "openvino", str(tmp_path / "digit.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["top"][0]["class"] == on_ort[0]["class"]
    scores = {}
    for weights in (digits_run, output):  # the whole digits test split, float32 and INT8
        assert main(["eval", "--weights", str(weights), "--json", "--output-dir", str(tmp_path / f"eval-{weights.name}")]) == 0
        scores[weights.name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores[output.name]["images"] == scores["run"]["images"] == 360
    assert abs(scores[output.name]["test_top1"] - scores["run"]["test_top1"]) <= 0.05
    assert main(["export", "--weights", str(digits_run), "--format", "onnx", "--int8", "--calibration-data",
                 "digits", "--calibration-images", "4", "--output", str(tmp_path / "few.onnx")]) == 2
    assert "at least 16 images" in capsys.readouterr().err and not (tmp_path / "few.onnx").exists()


def test_int8_calibrates_on_training_images_apart_from_the_evaluated_ones(digits_run, tmp_path):
    from convnext.training.data import build_eval_data

    model = convnext.load_pretrained(digits_run)
    assert len(build_eval_data("digits", model, split="train").dataset) == 1437  # the 80% it trained on
    assert len(build_eval_data("digits", model).dataset) == 360  # the test split, for eval
    for part, count in (("train", 3), ("val", 1)):
        for name in ("0", "1"):
            (tmp_path / part / name).mkdir(parents=True)
            for i in range(count):
                Image.new("L", (8, 8), 40 * i).save(tmp_path / part / name / f"{i}.png")
    assert len(build_eval_data(str(tmp_path), model, split="train").dataset) == 6
    assert len(build_eval_data(str(tmp_path), model).dataset) == 2


def test_int8_for_openvino_is_quantized_by_nncf_and_keeps_the_answers(digits_run, tmp_path, capsys):
    output = tmp_path / "m.int8.xml"
    assert main(["export", "--weights", str(digits_run), "--format", "openvino", "--int8", "--calibration-data",
                 "digits", "--calibration-images", "200", "--output", str(output)]) == 0
    agreement = float(capsys.readouterr().out.split("top-1 as float32 on ")[1].split("%")[0])
    assert agreement >= 95 and output.with_suffix(".bin").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left beside it
    import openvino

    ops = openvino.Core().read_model(str(output)).get_ordered_ops()
    assert any(op.get_type_name() == "FakeQuantize" for op in ops)  # int8 products
    head = [op for op in ops if op.get_type_name() == "MatMul"][-1]  # the classifier head stays float
    assert all(inp.get_source_output().get_node().get_type_name() != "FakeQuantize" for inp in head.inputs())
    scores = {}
    for weights in (digits_run, output):  # the whole digits test split, float32 and INT8 (OpenVINO)
        assert main(["eval", "--weights", str(weights), "--backend", "openvino" if weights == output else "pytorch",
                     "--json", "--output-dir", str(tmp_path / f"eval-{weights.name}")]) == 0
        scores[weights.name] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scores[output.name]["images"] == 360
    assert abs(scores[output.name]["test_top1"] - scores["run"]["test_top1"]) <= 0.05
    # served as it is (what `convnext serve --weights m.int8.xml` runs), with the answer predict gives
    from starlette.testclient import TestClient

    from convnext.deploy.export import load_exported
    from convnext.deploy.serving.app import Settings, create_app

    Image.new("L", (8, 8), 90).save(tmp_path / "digit.png")
    assert main(["predict", "--weights", str(output), str(tmp_path / "digit.png"), "--json"]) == 0
    predicted = json.loads(capsys.readouterr().out)[0]["top"]
    predictor = Predictor(load_exported(output))
    assert predictor.backend == "openvino" and not predictor.heat_maps
    with TestClient(create_app(predictor, Settings(), "convnext_test")) as client:
        answer = client.post("/v1/predict", content=(tmp_path / "digit.png").read_bytes(),
                             headers={"content-type": "image/png"})
        assert answer.status_code == 200
        assert [t["class"] for t in answer.json()["top"]] == [t["class"] for t in predicted]


def test_a_missing_engine_or_unfit_calibration_data_is_one_line(run_dir, capsys, monkeypatch):
    import importlib
    import sys

    openvino = importlib.import_module("openvino")

    monkeypatch.setitem(sys.modules, "openvino", None)  # as if not installed
    assert main(["predict", "--weights", str(run_dir / "w"), "--backend", "openvino", str(run_dir / "0.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install 'convnext[openvino]'" in err
    # an RGB model calibrated on the grey digits
    assert main(["export", "--weights", str(run_dir / "w"), "--format", "onnx", "--int8", "--calibration-data",
                 "digits", "--output", str(run_dir / "rgb.int8.onnx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "3-channel images" in err and not (run_dir / "rgb.int8.onnx").exists()
    assert main(["export", "--weights", str(run_dir / "w"), "--format", "torchscript", "--int8", "--calibration-data",
                 "digits", "--output", str(run_dir / "m.pt")]) == 2
    assert "--int8 is offered for --format onnx, openvino, executorch, tflite, not torchscript" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "openvino", openvino)  # installed again, but not NNCF
    monkeypatch.setitem(sys.modules, "nncf", None)
    assert main(["export", "--weights", str(run_dir / "w"), "--format", "openvino", "--int8", "--calibration-data",
                 "digits", "--output", str(run_dir / "m.xml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NNCF: pip install 'convnext[openvino]'" in err


def test_nothing_is_left_in_the_temporary_folder(run_dir, tmp_path, monkeypatch, capsys):
    """The engines' exports (ONNX Runtime's model, bench's INT8 files) go when the engine has read them:
    a server restarted daily must not fill the disk with models."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    folder = run_dir / "data"
    for name in ("ant", "bee", "cat"):
        (folder / name).mkdir(parents=True)
        Image.new("RGB", (64, 64), (hash(name) % 255, 90, 30)).save(folder / name / "a.png")
    commands = [
        ["predict", "--weights", str(run_dir / "w"), "--backend", "onnxruntime", str(run_dir / "0.png")],
        ["eval", "--weights", str(run_dir / "w"), "--backend", "onnxruntime", "--data", str(folder),
         "--output-dir", str(run_dir / "eval")],
        ["bench", "--model", "convnext_test", "--input-size", "64", "--batch-size", "2", "--peers", "none",
         "--rounds", "1", "--iters", "1", "--no-train", "--no-memory", "--int8"],
    ]
    for command in commands:
        assert main(command) == 0, command
        assert sorted(p.name for p in scratch.iterdir()) == [], command
    served = Predictor(convnext.load_pretrained(run_dir / "w"), backend="onnxruntime")  # what serve runs
    assert served.model.backend == "onnxruntime" and not list(scratch.iterdir())
    capsys.readouterr()
