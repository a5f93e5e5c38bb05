"""ExecuTorch programs (.pte) lowered to XNNPACK, float32 or PT2E INT8, and their runner.

    convnext export --weights runs/my-run --format executorch --output model.pte
    convnext export --weights runs/my-run --format executorch --int8 --calibration-data ~/photos --output m.int8.pte

XNNPACK takes only constant weights: a weight computed in the graph (a reshaped kernel, a product with
layer scale, as a fused block computes them) would leave its convolution in portable kernels, a hundred
times slower (pytorch/executorch#22078). So the reference model is exported with its norms and layer
scale folded exactly first, and the program constant-folded (`constant_prop_pass`) before lowering;
`write` reports what XNNPACK left outside and warns if a convolution or matrix product is among them.
For INT8 the float program is folded *before* quantizing: folded after, the quantized weights turn back
into float32 constants. The programs take batch 1, as a
device runs them; the runner feeds a batch image by image.
"""
from pathlib import Path

import torch
from torch import nn

from ..inference import optimize_for_inference

# Operators a ConvNeXt's speed lives in: a program that leaves one outside XNNPACK is slow.
HEAVY = ("aten_convolution_default", "aten_linear_default", "aten_addmm_default", "aten_mm_default")


def _lower(program: torch.export.ExportedProgram):
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])


def _folded_program(model: nn.Module, x: torch.Tensor) -> torch.export.ExportedProgram:
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    folded = optimize_for_inference(model.eval(), channels_last=False, accelerated=False)  # exact folds
    with torch.no_grad():
        return constant_prop_pass(torch.export.export(folded, (x[:1],)))


def delegation(edge) -> dict:
    """What XNNPACK took: pieces (delegated subgraphs) and, per operator left outside, how many."""
    from executorch.devtools.backend_debug import get_delegation_info

    info = get_delegation_info(edge.exported_program().graph_module)
    table = info.get_operator_delegation_dataframe()
    outside = {row.op_type: int(row.occurrences_in_non_delegated_graphs) for row in table.itertuples()
               if row.op_type not in ("Total", "getitem") and row.occurrences_in_non_delegated_graphs}
    return {"pieces": info.num_delegated_subgraphs, "outside": outside}


def _save(edge, path: Path) -> list[str]:
    summary = delegation(edge)
    path.write_bytes(edge.to_executorch().buffer)
    outside = ", ".join(f"{op.removeprefix('aten_').removesuffix('_default')} x{n}"
                        for op, n in summary["outside"].items()) or "none"
    notes = [f"XNNPACK: {summary['pieces']} delegated piece(s); left outside: {outside}"]
    heavy = [op for op in summary["outside"] if op in HEAVY]
    if heavy:
        notes.append(f"warning: {', '.join(heavy)} left outside XNNPACK: this program will be slow")
    return notes


def write(model: nn.Module, path: Path, x: torch.Tensor, dynamic_batch: bool) -> list[str]:
    """The model as a float32 .pte for XNNPACK; returns the delegation summary's lines."""
    return _save(_lower(_folded_program(model, x)), path)


def write_int8(model: nn.Module, batches: list[torch.Tensor], path: Path, size: int) -> list[str]:
    """PT2E INT8 (XNNPACK's quantizer, weights per channel, activations per tensor), calibrated on `batches`."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    x = torch.randn(1, model.in_chans, size, size)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(_folded_program(model, x).module(), quantizer)
    with torch.no_grad():
        for batch in batches:
            prepared(batch)
        quantized = convert_pt2e(prepared)
        return _save(_lower(torch.export.export(quantized, (x,))), path)


def runner(path: Path):
    """images -> logits through ExecuTorch's runtime on PyTorch's thread count, one image at a time (the
    program takes batch 1)."""
    import executorch.kernels.quantized  # noqa: F401  (registers the INT8 programs' out-variant kernels)
    from executorch.extension.pybindings import portable_lib
    from executorch.runtime import Runtime

    portable_lib._unsafe_reset_threadpool(torch.get_num_threads())  # XNNPACK on PyTorch's thread count, as the others

    data = Path(path).read_bytes()  # the program points into these bytes: they live as long as the runner
    program = Runtime.get().load_program(data)
    method = program.load_method("forward")
    return lambda x, _keep=(data, program): torch.cat([method.execute([image[None].contiguous()])[0] for image in x])


def signature(path: Path) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input shape, output shape) of the program's forward, read without running it."""
    from executorch.runtime import Runtime

    data = Path(path).read_bytes()  # the program reads these bytes in place: keep them while it lives
    program = Runtime.get().load_program(data)
    meta = program.metadata("forward")
    shapes = tuple(meta.input_tensor_meta(0).sizes()), tuple(meta.output_tensor_meta(0).sizes())
    del program, data
    return shapes


def version() -> str:
    from importlib.metadata import version as installed

    return installed("executorch")
