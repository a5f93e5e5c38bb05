"""Every tool that takes a PyTorch model takes ours: tracing (with and without gradients, with its default
sanity checks), torch.export, torch.compile(fullgraph=True) and OpenVINO's conversion, on V1, V2 and
isotropic models, as trained (the reference and accelerated) and folded, with the reference's outputs."""
import warnings

import numpy as np
import openvino as ov
import pytest
import torch

from convnext.accelerate import accelerate
from convnext.deploy.inference import optimize_for_inference
from helpers import max_abs_diff, randomised

NAMES = ["convnext_test", "convnextv2_test", "convnext_isotropic_test"]
TOLERANCE = 1e-5  # float32, other summation orders; the logits are O(1)


@pytest.fixture(params=[(name, form) for name in NAMES for form in ("eval", "accelerated", "folded")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def case(request):
    name, form = request.param
    model = randomised(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
    made = {"eval": lambda: model, "accelerated": lambda: accelerate(model), "folded": lambda: optimize_for_inference(model)}
    return made[form](), x, reference


@pytest.mark.parametrize("grad", [True, False], ids=["grad", "no_grad"])
def test_jit_trace_with_its_checks(case, grad):
    model, x, reference = case
    with torch.set_grad_enabled(grad), warnings.catch_warnings():
        warnings.simplefilter("error", torch.jit.TracerWarning)  # a shape check turned constant, a diverging graph
        warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit is deprecated in favour of export
        traced = torch.jit.trace(model, x)  # check_trace=True: traces twice and compares the graphs
    with torch.no_grad():
        assert max_abs_diff(traced(x), reference) < TOLERANCE
        assert max_abs_diff(traced(torch.cat([x, x])), torch.cat([reference, reference])) < TOLERANCE


def test_torch_export(case):
    model, x, reference = case
    program = torch.export.export(model, (x,))
    with torch.no_grad():
        assert max_abs_diff(program.module()(x), reference) < TOLERANCE


def test_compile_fullgraph_with_and_without_gradients(case):
    model, x, reference = case
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")  # graph capture and autograd, no codegen
    with torch.no_grad():
        assert max_abs_diff(compiled(x), reference) < TOLERANCE
    if any(p.requires_grad for p in model.parameters()):  # the folded copy is inference-only
        compiled(x).sum().backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_openvino_converts_the_module(case):
    model, x, reference = case
    converted = ov.convert_model(model, example_input=x)  # traces with gradients on, as its docs show
    compiled = ov.compile_model(converted, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})  # not bf16 on AVX512-BF16
    out = torch.from_numpy(np.asarray(compiled(x.numpy())[0]))
    assert max_abs_diff(out, reference) < TOLERANCE
