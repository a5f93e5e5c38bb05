"""Every path the machine may choose computes the same thing: kernel candidates, bfloat16, batched data.

Speed itself is never asserted here (docs/performance.md and `convnext bench` measure it).
"""
import json
import time
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convnext
from convnext.cli import main
from convnext.accelerate import autotune, kernels
from convnext.runtime import hardware, precision
from convnext.runtime.precision import tf32
from convnext.training.augmentation import BatchedCropFlip, SeededAugmentation, train_transform
from convnext.training.data import build_data
from convnext.training.recipes import RECIPES
from convnext.deploy.peers import PEERS
from helpers import max_abs_diff


@pytest.fixture
def tuner():
    """Kernel choices of the test's own, as each accelerated model has."""
    return autotune.Autotuner()


def key(n: int) -> autotune.Key:
    return autotune.Key("op", "cpu", "float32", None, (n,))


def test_choices_are_measured_once_cached_and_pinned(monkeypatch, tuner):
    calls = []
    candidates = lambda: {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}  # noqa: E731
    x = torch.zeros(1)
    first = tuner.choose(key(1), x, candidates, ("a", "b"))
    assert first in ("a", "b") and len(calls) == 8  # one untimed and three timed calls each
    seconds = tuner.measured()[key(1)]
    assert seconds.keys() == {"a", "b"} and (first == "b") == (seconds["b"] < (1 - tuner.margin) * seconds["a"])
    assert tuner.choose(key(1), x, candidates, ("a", "b")) == first and len(calls) == 8
    saved = tuner.state_dict()
    tuner.reset()
    tuner.load_state_dict(saved)
    assert tuner.choose(key(1), x, candidates, ("a", "b")) == first and len(calls) == 8
    # Nothing is measured where timing means nothing: deterministic mode, meta tensors, tracing.
    torch.use_deterministic_algorithms(True)
    try:
        assert tuner.choose(key(2), x, candidates, ("a", "b")) == "a"
    finally:
        torch.use_deterministic_algorithms(False)
    assert tuner.choose(key(3), torch.zeros(1, device="meta"), candidates, ("a", "b")) == "a"
    assert len(calls) == 8
    tuner.load_state_dict({"version": 1, "choices": [{**key(1).as_dict(), "kernel": "c"}]})
    assert tuner.choose(key(1), x, candidates, ("a", "b")) == "a" and len(calls) == 8  # c is not offered here


def test_the_saved_choices_are_documented_json_and_old_checkpoints_still_load(tuner):
    tuner.load_state_dict({"pointwise ('cpu', 'torch.float32', 'None', 1024, 40, 160, False, True)": "linear",
                           "pointwise_gelu ('cpu', 'torch.float32', 'None', 64, 40, 160, True, False)": "packed",
                           "depthwise_weight_grad ('torch.float32', (16, 40, 8, 8), 7)": "planes",
                           "block_chunks ('torch.float32', 'None', (16, 40, 8, 8), 160)": "4"})
    state = tuner.state_dict()
    assert json.loads(json.dumps(state)) == state and state["version"] == 1
    assert {(c["op"], tuple(c["sizes"]), c["mode"], c["kernel"]) for c in state["choices"]} == {
        ("pointwise", (1024, 40, 160), "training", "linear"), ("pointwise_gelu", (64, 40, 160), "frozen", "packed"),
        ("depthwise_weight_grad", (16, 40, 8, 8, 7), "training", "planes"),
        ("block_chunks", (16, 40, 8, 8, 160), "inference", "4")}
    assert tuner.summary() == "block_chunks 4 1; depthwise_weight_grad planes 1; pointwise linear 1; pointwise_gelu packed 1"


def broken(*args):
    raise RuntimeError("mkldnn_convolution: bf16 path needs the cpu support avx_ne_convert or avx512bw")


@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["float32", "bf16_autocast"])
@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
def test_a_candidate_that_raises_is_left_out_and_the_default_runs(monkeypatch, caplog, amp, grad, tuner):
    """As oneDNN's fused bf16 conv does on an AVX2-only CPU: the model runs and computes the default's result."""
    model = convnext.accelerate(convnext.create_model("convnextv2_test").train(grad), tuner)
    x = torch.randn(4, 3, 64, 64)

    def run():
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            return model(x)

    monkeypatch.setattr(tuner, "enabled", False)
    reference = run()
    monkeypatch.setattr(tuner, "enabled", True)
    monkeypatch.setattr(kernels, "POINTWISE", {"conv": kernels.POINTWISE["conv"], "broken": broken})
    monkeypatch.setattr(kernels, "POINTWISE_GELU", {"conv": kernels.POINTWISE_GELU["conv"], "broken": broken})
    with caplog.at_level("DEBUG", logger="convnext.accelerate.autotune"):
        out = run()
    assert torch.equal(out, reference)
    said = [r.getMessage() for r in caplog.records if "'broken' left out" in r.getMessage()]
    assert said and all("avx512bw" in line for line in said)
    assert len(said) == len({line.split(":")[0] for line in said})  # once per measured shape, not per call
    run()
    assert len([r for r in caplog.records if "'broken' left out" in r.getMessage()]) == len(said)
    assert "broken" not in tuner.choices().values()


def test_the_fused_bf16_kernel_is_no_candidate_where_onednn_lacks_bf16(monkeypatch, tuner):
    monkeypatch.setattr(kernels, "onednn_bf16", lambda: False)
    assert kernels.onednn_runs(torch.float32) and not kernels.onednn_runs(torch.bfloat16)
    model = convnext.accelerate(convnext.create_model("convnext_test").eval(), tuner)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(2, 3, 64, 64))
    assert not any(key.op == "pointwise_gelu" and key.autocast == "bfloat16" and choice == "fused"
                   for key, choice in tuner.choices().items())
    assert all("fused" not in times for key, times in tuner.measured().items() if key.autocast == "bfloat16")


def _agree_in_process_group(rank: int, port: int, folder: str) -> None:
    """Rank r made choice "k<r>" for a shared key; rank 1 also one rank 0 never met."""
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    local = autotune.Autotuner()
    choices = [{**key(1).as_dict(), "kernel": f"k{rank}"}] + ([{**key(2).as_dict(), "kernel": "own"}] if rank else [])
    local.load_state_dict({"version": 1, "choices": choices})
    local.agree()
    with open(f"{folder}/{rank}.json", "w") as f:
        json.dump(local.state_dict(), f)
    dist.destroy_process_group()


def test_under_ddp_every_rank_takes_rank_0s_choices(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_agree_in_process_group, args=(port, str(tmp_path)), nprocs=2)
    chosen = [{autotune.Key.from_dict({k: v for k, v in c.items() if k != "kernel"}): c["kernel"]
               for c in json.loads((tmp_path / f"{rank}.json").read_text())["choices"]} for rank in (0, 1)]
    assert chosen[0] == {key(1): "k0"}
    assert chosen[1] == {key(1): "k0", key(2): "own"}  # rank 0's where it chose; its own elsewhere


def test_a_clearly_faster_candidate_replaces_the_default(tuner):
    x = torch.zeros(1)
    slow_default = {"a": lambda: time.sleep(0.005), "b": lambda: None}
    assert tuner.choose(key(4), x, lambda: slow_default, ("a", "b")) == "b"


def test_off_cpus_the_gemm_is_the_default_and_cudnn_competes_only_in_the_same_precision(tuner):
    weight = torch.zeros(16, 8)
    on_cpu, elsewhere = torch.zeros(2, 8, 4, 4), torch.zeros(2, 8, 4, 4, device="meta")
    assert list(kernels._default_first(kernels.POINTWISE, on_cpu))[0] == "conv"
    assert kernels.pointwise_backend(elsewhere, weight, None, True, tuner) == "linear"  # nothing measured: the default
    with tf32(convolutions=True, matmuls=False):  # PyTorch's defaults
        assert list(kernels._default_first(kernels.POINTWISE, elsewhere)) == ["linear"]
        assert list(kernels._default_first(kernels.POINTWISE, elsewhere.bfloat16())) == ["linear", "conv"]
        assert list(kernels._default_first(kernels.POINTWISE_GELU, elsewhere.bfloat16())) == ["linear", "conv"]
    with tf32(convolutions=False, matmuls=False):
        assert list(kernels._default_first(kernels.POINTWISE, elsewhere)) == ["linear", "conv"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (scripts/gpu_check.sh runs it)")
def test_a_gpu_measures_its_pointwise_kernels(tuner):
    model = convnext.accelerate(convnext.create_model("convnext_test").cuda().train(), tuner)
    x = torch.randn(4, 3, 64, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(x).float().sum().backward()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        model.eval()(x)
    measured = {key: choice for key, choice in tuner.choices().items() if key.device == "cuda"}
    assert any(key.op == "pointwise" and key.mode == "training" for key in measured)
    assert any(key.op == "pointwise_gelu" for key in measured)  # inference shapes
    assert set(measured.values()) <= {"linear", "conv"}


def test_a_training_checkpoint_carries_the_kernel_choices(tmp_path):
    from convnext.training import run_state

    run_dir = tmp_path / "run"
    assert main(["train", "--model", "convnext_test", "--epochs", "1", "--max-steps", "2", "--subset", "200",
                 "--output-dir", str(run_dir)]) == 0
    def choices() -> dict:
        saved = autotune.Autotuner()
        saved.load_state_dict(run_state.load_latest(run_dir)["kernels"])
        return saved.choices()

    saved = choices()
    assert any(key.op == "pointwise" and key.mode == "training" for key in saved)  # training shapes
    assert main(["train", "--resume", str(run_dir), "--max-steps", "3"]) == 0
    assert choices() == saved  # the resumed run computed with them, and measured nothing more


def no_bf16_hardware(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f"}))


def test_amp_without_the_hardware_says_one_line_and_runs_float32(monkeypatch, capsys):
    no_bf16_hardware(monkeypatch)
    assert precision.amp_dtype("bf16", "cpu") is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no bf16 hardware" in err and "running in float32" in err
    monkeypatch.setattr(hardware, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.amp_dtype("bf16", "cpu") == torch.bfloat16 and capsys.readouterr().err == ""


def test_describe_names_the_cpu_and_its_isa(monkeypatch):
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("Some Xeon", frozenset({"avx512f", "avx512_bf16", "amx_tile",
                                                                              "amx_bf16"})))
    assert hardware.describe() == f"Some Xeon, {torch.get_num_threads()} threads, AVX-512 AVX512-BF16 AMX no VNNI"
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("AMD EPYC", frozenset({"avx2", "fma"})))  # a Zen 3
    assert hardware.describe() == f"AMD EPYC, {torch.get_num_threads()} threads, no AVX-512 no VNNI"
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: ("Some Xeon", frozenset({"avx512f", "amx_tile", "amx_int8",
                                                                              "avx512_vnni"})))
    assert hardware.describe() == f"Some Xeon, {torch.get_num_threads()} threads, AVX-512 AMX AVX512-VNNI"


def test_bfloat16_optimized_model_and_its_fallback(monkeypatch):
    model = convnext.create_model("convnextv2_test").eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        fast = convnext.optimize_for_inference(model, dtype=torch.bfloat16)
        out = fast(x)
    if hardware.has_hardware(torch.bfloat16):
        assert next(fast.parameters()).dtype == torch.bfloat16
    assert out.dtype == torch.float32
    assert max_abs_diff(out, reference) < 0.05 * reference.abs().max().item() + 0.02
    no_bf16_hardware(monkeypatch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = convnext.optimize_for_inference(model, dtype=torch.bfloat16)
    assert next(plain.parameters()).dtype == torch.float32
    assert len(caught) == 1 and "no torch.bfloat16 hardware" in str(caught[0].message)


def test_bfloat16_autocast_logits_match_timm_under_the_same_autocast():
    model = convnext.create_model("convnext_atto").eval()
    peer = PEERS["timm"](model).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        ours, theirs = model(x).float(), peer(x).float()
    assert max_abs_diff(ours, theirs) < 0.03 * theirs.abs().max().item() + 0.03


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_take_amp_bf16(tmp_path, capsys, command):
    weights = tmp_path / "run"
    assert main(["train", "--model", "convnext_test", "--epochs", "1", "--max-steps", "3", "--output-dir",
                 str(weights)]) == 0
    capsys.readouterr()
    if command == "eval":
        args = ["eval", "--weights", str(weights), "--json", "--output-dir", str(tmp_path / "eval")]
    else:
        image = tmp_path / "digit.png"
        from PIL import Image
        Image.new("L", (32, 32), 128).save(image)
        args = ["predict", "--weights", str(weights), str(image), "--json"]
    assert main([*args, "--amp", "bf16"]) == 0
    low = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(args) == 0
    full = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    if command == "eval":
        assert abs(low["test_top1"] - full["test_top1"]) <= 0.05
    else:
        assert abs(low[0]["top"][0]["probability"] - full[0]["top"][0]["probability"]) < 0.05


def test_batched_digits_augmentation_equals_the_per_sample_transforms():
    recipe = RECIPES["small"].update(hflip=0.5, min_crop_scale=0.3)
    data = build_data("digits", recipe, seed=3)
    assert isinstance(data.train, BatchedCropFlip)
    per_sample = SeededAugmentation(data.train.images, train_transform(recipe, data.input_size, data.mean, data.std), 3)
    for epoch in (0, 4):
        data.train.epoch = per_sample.epoch = epoch
        indices = list(range(0, 300, 7))
        batched = torch.stack([image for image, _ in data.train.__getitems__(indices)])
        reference = torch.stack([per_sample[i][0] for i in indices])
        assert batched.shape == reference.shape == (len(indices), 1, 32, 32)
        # Equal up to a rounding flip of one uint8 level (1/255 over std 0.5) at a few pixels.
        difference = (batched - reference).abs()
        assert difference.max() <= 2 / 255 / 0.5 + 1e-6 and (difference > 1e-5).float().mean() < 0.01
    labels = [label for _, label in data.train.__getitems__(indices)]
    assert labels == [int(data.train.images.labels[i]) for i in indices]


def test_fresh_runs_on_one_machine_take_the_kernels_it_measured_first(tmp_path, monkeypatch, capsys):
    """The first run here measures and keeps its choices (at its first checkpoint); the next fresh run
    starts from them and ends bit for bit equal, as a run killed before its first checkpoint and
    started again must."""
    import safetensors.torch

    from convnext.accelerate.machine import choices_file

    monkeypatch.setenv("CONVNEXT_CACHE", str(tmp_path / "cache"))
    command = ["train", "--model", "convnext_test", "--epochs", "1", "--subset", "64", "--batch-size", "16"]
    assert main([*command, "--output-dir", str(tmp_path / "first")]) == 0
    kept = json.loads(choices_file(torch.device("cpu")).read_text())
    assert kept["machine"].startswith(hardware.describe()) and kept["choices"]["choices"]
    assert main([*command, "--output-dir", str(tmp_path / "second")]) == 0
    capsys.readouterr()
    first, second = (safetensors.torch.load_file(tmp_path / run / "model.safetensors") for run in ("first", "second"))
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_an_unwritable_kernel_cache_costs_only_the_next_runs_measurements(tmp_path, monkeypatch, capsys):
    (tmp_path / "cache").write_text("a file where the cache folder should be")
    monkeypatch.setenv("CONVNEXT_CACHE", str(tmp_path / "cache"))
    assert main(["train", "--model", "convnext_test", "--epochs", "1", "--max-steps", "2", "--subset", "64",
                 "--batch-size", "16", "--output-dir", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "summary.json").is_file() and "error" not in capsys.readouterr().err
