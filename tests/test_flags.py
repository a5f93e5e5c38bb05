"""No offered flag crashes: every command runs once with each of its boolean flags (both ways) and each
value of each of its choices, on a tiny model and tiny data (`--max-steps 1`). Each run exits 0, or 2
with one `error:` line that this file expects; never a traceback.

The variants are read off the parser itself, so a flag added later is swept without editing this file.
"""
import argparse
import itertools
import signal

import pytest
from PIL import Image

import convnext
from convnext.cli import build_parser, main
from convnext.deploy.formats import FORMATS
from helpers import randomised

PARSER = build_parser()
COUNTER = itertools.count()


def commands(parser: argparse.ArgumentParser, path: tuple = ()) -> dict[tuple, argparse.ArgumentParser]:
    """Every runnable command by its words: ("train",), ("detect", "train"), ..."""
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found |= commands(sub, (*path, name)) or {(*path, name): sub}
    return found


def variants(parser: argparse.ArgumentParser) -> list[list[str]]:
    """Each boolean flag (both ways where it has a --no- form) and each value of each choice flag."""
    found = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        if isinstance(action, argparse.BooleanOptionalAction):
            found += [[option] for option in action.option_strings]
        elif isinstance(action, argparse._StoreTrueAction):
            found.append([action.option_strings[0]])
        elif action.choices:
            found += [[action.option_strings[0], str(choice)] for choice in action.choices]
    return found


COMMANDS = commands(PARSER)
EXTRA = {("export",): [["--format", fmt] for fmt in FORMATS]}  # a choice that the command checks itself
CASES = [(words, flags) for words, parser in COMMANDS.items() for flags in variants(parser) + EXTRA.get(words, [])]

# The refusals that are right, by (command, flags): a substring of their one line. Anything else exits 0.
REFUSED = {
    ("convert", "--to hf-upernet"): "hf-upernet holds UperNet segmentation models; this checkpoint is a classifier",
    # our file read as another format's names
    ("convert", "--from hf-upernet"): "no rule maps parameter 'head.weight'",
    **{("convert", f"--from {fmt}"): f"{fmt} checkpoint lacks its head or stem" for fmt in ("hf", "torchvision", "timm")},
    # LiteRT's converter has an environment of its own (tests/test_edge_export.py converts there)
    ("export", "--format tflite"): "needs litert-torch: pip install 'convnext[tflite]'",
    **{(command, "--backend litert"): "needs litert-torch" for command in ("eval", "predict", "serve")},
}


@pytest.fixture(scope="module")
def place(tmp_path_factory):
    """Weights, images and dense runs the commands read; each run writes under its own folder."""
    root = tmp_path_factory.mktemp("flags")
    model = randomised("convnext_test", num_classes=3)
    model.class_names, model.data_config = ["ant", "bee", "cat"], {"input_size": 32}
    convnext.save_pretrained(model, root / "w")
    for name in model.class_names:
        (root / "images" / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40, 40), (40 * i, hash(name) % 255, 90)).save(root / "images" / name / f"{i}.png")
    for task in ("detect", "segment"):
        assert main([task, "train", *DENSE, "--output-dir", str(root / task)]) == 0
    return root


TINY_TRAINING = ["--epochs", "1", "--max-steps", "1", "--subset", "16", "--batch-size", "8"]
DENSE = ["--model", "convnext_test", "--input-size", "64", "--epochs", "1", "--max-steps", "1", "--subset", "4",
         "--batch-size", "2"]
BENCH = ["--model", "convnext_test", "--input-size", "32", "--batch-size", "2", "--peers", "none", "--rounds", "1",
         "--iters", "1"]


def base(words: tuple, place, out) -> list[str]:
    """The command at its smallest: what every variant of it adds its flags to."""
    image = str(place / "images" / "ant" / "0.png")
    weights = str(place / "w")
    return {
        ("list",): ["list", "convnext_a*"],
        ("convert",): ["convert", weights, str(out / "converted"), "--to", "ours"],
        ("train",): ["train", "--model", "convnext_test", *TINY_TRAINING, "--input-size", "32", "--output-dir", str(out)],
        ("pretrain",): ["pretrain", "--model", "convnextv2_test", *TINY_TRAINING, "--input-size", "64",
                        "--output-dir", str(out)],
        ("eval",): ["eval", "--weights", weights, "--data", str(place / "images"), "--output-dir", str(out)],
        ("predict",): ["predict", "--weights", weights, image],
        ("roadmap",): ["roadmap", "--regime", "small", "--steps", "0"],
        ("export",): ["export", "--weights", weights, "--format", "onnx", "--output", str(out / "model.onnx")],
        ("bench",): ["bench", *BENCH, "--no-train", "--no-memory", "--backend", "pytorch"],
        ("serve",): ["serve", "--weights", weights, "--port", "0"],
        ("detect", "train"): ["detect", "train", *DENSE, "--proposals", "50", "--rois-per-image", "32",
                              "--output-dir", str(out)],
        ("detect", "eval"): ["detect", "eval", "--weights", str(place / "detect"), "--data", "shapes"],
        ("detect", "predict"): ["detect", "predict", "--weights", str(place / "detect"), image, "--output", str(out)],
        ("segment", "train"): ["segment", "train", *DENSE, "--output-dir", str(out)],
        ("segment", "eval"): ["segment", "eval", "--weights", str(place / "segment"), "--data", "shapes"],
        ("segment", "predict"): ["segment", "predict", "--weights", str(place / "segment"), image, "--output", str(out)],
    }[words]


# What a flag needs beside it to do its work rather than be refused for a missing companion.
COMPANIONS = {
    ("export", "--int8"): lambda place, out: ["--calibration-data", str(place / "images"), "--calibration-images", "16"],
    ("roadmap", "--train"): lambda place, out: ["--data", "digits", "--seeds", "1", "--subset", "16", "--max-steps",
                                                "1", "--batch-size", "8", "--epochs", "1", "--output-dir", str(out)],
    ("bench", "--int8"): lambda place, out: ["--backend", "onnxruntime"],
    **{("export", "--format", fmt): lambda place, out, suffix=suffix: ["--output", str(out / f"model.{suffix}")]
       for fmt, suffix in {"onnx": "onnx", "openvino": "xml", "torchscript": "pt", "exported-program": "pt2",
                           "executorch": "pte", "tflite": "tflite", "coreml": "mlpackage"}.items()},
}


@pytest.mark.parametrize("words,flags", CASES, ids=[" ".join((*w, *f)) for w, f in CASES])
def test_every_offered_flag_runs_or_is_refused_in_one_line(words, flags, place, tmp_path, capsys, monkeypatch):
    import functools

    import torch
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)  # serve: set up, then return
    # uvicorn's logging.config.dictConfig closes every handler there is, pytest's own among them
    monkeypatch.setattr(uvicorn.Config, "configure_logging", lambda self: None)
    # --compile traced by Dynamo as it is, without Inductor's code generation (minutes on a CPU for a
    # detector; tests/test_training.py compiles a training run with Inductor itself).
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    out = tmp_path / f"out{next(COUNTER)}"
    companion = COMPANIONS.get((words[0], *flags)) or COMPANIONS.get((words[0], flags[0]), lambda place, out: [])
    argv = [*base(words, place, out), *flags, *companion(place, out)]
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = main(argv)
    finally:  # serve takes SIGINT and SIGTERM over for uvicorn's graceful exit: the suite's come back
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error:" in line]
    expected = REFUSED.get((" ".join(words), " ".join(flags)))
    if expected:
        assert code == 2 and len(errors) == 1 and expected in errors[0], err[-2000:]
    else:
        assert code == 0, err[-2000:]
    assert "Traceback" not in err
