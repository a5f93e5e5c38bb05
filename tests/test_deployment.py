"""Inference folding, compile without graph breaks, export round trips, the benchmark, bad input."""
import json

import pytest
import torch

import convnext
from convnext.cli import main
from convnext.deploy.export import export
from convnext.deploy.formats import FORMATS
from convnext.deploy.inference import optimize_for_inference
from helpers import randomised, relative_error

FAMILY = ["convnext_test", "convnextv2_test", "convnext_isotropic_test", "roadmap_r50_00_resnet50"]



@pytest.mark.parametrize("name", FAMILY + ["roadmap_r50_07_move_up_dwconv", "roadmap_r50_13_separate_downsampling"])
def test_folding_keeps_logits(name):
    model = randomised(name)
    fast = optimize_for_inference(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert relative_error(fast(x), model(x)) <= 1e-4
    assert convnext.count_params(fast) < convnext.count_params(model)  # the folded affines are gone
    assert not any(p.requires_grad for p in fast.parameters())
    assert model.training is False and any(p.requires_grad for p in model.parameters())  # original untouched


def test_folds_remove_layer_scale_and_batch_norm():
    fast = optimize_for_inference(randomised("convnext_test"))
    assert all(block.gamma is None and block.norm.weight is None for stage in fast.stages for block in stage)
    resnet = optimize_for_inference(randomised("roadmap_r50_00_resnet50"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in resnet.modules())


@pytest.mark.parametrize("name", FAMILY)
def test_compiles_without_graph_breaks(name):
    model = randomised(name)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
        eager_graph = torch.compile(model, fullgraph=True, backend="eager")(x)  # capture only: cheap
        compiled = optimize_for_inference(model, compile=True)(x)  # Inductor, frozen weights, fullgraph
    assert torch.allclose(eager_graph, reference, rtol=1e-5, atol=1e-6)
    assert relative_error(compiled, reference) <= 1e-4


def test_onnx_dynamic_batch_round_trip(tmp_path):
    model = randomised("convnext_test")
    checks = export(model, tmp_path / "m.onnx", "onnx", dynamic_batch=True)
    assert [batch for batch, _ in checks] == [1, 3] and max(d for _, d in checks) <= 1e-4
    run = FORMATS["onnx"].run(tmp_path / "m.onnx")
    for batch in (1, 3):
        x = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            assert (run(x) - model(x)).abs().max() <= 1e-4
    meta = json.loads((tmp_path / "m.onnx.json").read_text())
    assert meta["num_classes"] == 1000 and meta["input_size"] == 224


@pytest.mark.parametrize("fmt,suffix", [("torchscript", "pt"), ("exported-program", "pt2")])
def test_torchscript_and_exported_program_reload_and_match(fmt, suffix, tmp_path):
    model = randomised("convnextv2_test")
    export(model, tmp_path / f"m.{suffix}", fmt, dynamic_batch=fmt == "exported-program")
    run = FORMATS[fmt].run(tmp_path / f"m.{suffix}")
    x = torch.randn(3 if fmt == "exported-program" else 2, 3, 224, 224)
    with torch.no_grad():
        assert (run(x) - model(x)).abs().max() <= 1e-4


def test_cli_export_and_onnxruntime_predict(tmp_path, capsys):
    from PIL import Image

    model = randomised("convnext_test", num_classes=3)
    model.class_names = ["ant", "bee", "cat"]
    convnext.save_pretrained(model, tmp_path / "w")
    assert main(["export", "--weights", str(tmp_path / "w"), "--format", "onnx", "--output",
                 str(tmp_path / "m.onnx"), "--dynamic-batch", "--optimize"]) == 0
    out = capsys.readouterr().out
    assert out.count("check: batch") == 2 and "ok" in out
    Image.new("RGB", (40, 50), (120, 30, 200)).save(tmp_path / "a.png")
    for backend in ("onnxruntime", "torch"):
        weights = tmp_path / ("m.onnx" if backend == "onnxruntime" else "w")
        assert main(["predict", "--weights", str(weights), "--backend", backend, str(tmp_path / "a.png"),
                     "--json", "--top-k", "3"]) == 0
        result = json.loads(capsys.readouterr().out)[0]["top"]
        assert {t["class"] for t in result} == {"ant", "bee", "cat"}
        if backend == "onnxruntime":
            onnx_probabilities = [t["probability"] for t in result]
    assert [t["probability"] for t in result] == pytest.approx(onnx_probabilities, abs=1e-4)


def test_export_bad_input_gives_one_error_line(tmp_path, capsys):
    convnext.save_pretrained(convnext.create_model("convnext_test"), tmp_path / "w")
    (tmp_path / "file").write_text("")
    cases = [
        (["--weights", str(tmp_path / "w"), "--format", "keras", "--output", str(tmp_path / "m")], "unknown export format"),
        (["--weights", str(tmp_path / "w"), "--format", "onnx", "--output", str(tmp_path / "file" / "m.onnx")],
         "file is not a directory"),
        (["--model", "convnext_tiny", "--weights", str(tmp_path / "w"), "--format", "onnx", "--output",
          str(tmp_path / "m.onnx")], "does not fit convnext_tiny"),
    ]
    for args, message in cases:
        assert main(["export", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "m.onnx").exists()


def test_bench_runs_in_seconds_and_writes_json(tmp_path, capsys):
    assert main(["bench", "--model", "convnext_test", "--input-size", "64", "--batch-size", "4", "--rounds", "1",
                 "--iters", "1", "--no-memory", "--peers", "transformers", "--json", str(tmp_path / "b.json"),
                 "--plot", str(tmp_path / "b.png")]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert names[:4] == ["convnext reference", "convnext accelerated", "convnext accelerated +grad-ckpt",
                         "convnext optimized"] and "transformers" in names
    for row in report["results"]:
        assert row["infer_img_s"] > 0 and row["latency_ms"] > 0 and "infer_vs_best_peer" in row
    assert report["matmul_peak_gflops"] > 0 and report["macs"] == convnext.count_macs(convnext.create_model("convnext_test"), 64)
    assert (tmp_path / "b.png").stat().st_size > 0
    assert "convnext accelerated" in capsys.readouterr().out


def test_bench_measures_training_memory_in_a_fresh_process():
    from convnext.deploy.bench import BenchConfig, cpu_training_memory

    small = cpu_training_memory(BenchConfig(model="convnext_test", batch=2, size=64), "convnext accelerated")
    large = cpu_training_memory(BenchConfig(model="convnext_test", batch=32, size=128), "convnext accelerated")
    assert 0 < small < large
