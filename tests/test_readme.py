"""The README's code runs: every line of its "Use" block, and every command of its command table."""
import re
from pathlib import Path

import pytest
import torch

import convnext
from convnext.checkpoints import hub
from convnext.cli import COMMANDS, main

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_use_block_runs_line_for_line(tmp_path, monkeypatch):
    block = re.search(r"```python\n(.*?)```", section("Use"), re.S)[1]
    assert "convnext.optimize_for_inference(model)" in block and "pretrained=True" in block
    # The two files the block reads, made here: a checkpoint in the working folder, and the published
    # IN-1K file already in the download cache, so `pretrained=True` runs its whole path offline.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CONVNEXT_CACHE", str(tmp_path / "cache"))
    convnext.write_checkpoint(convnext.create_model("convnext_tiny", num_classes=10), "convnext_tiny_22k_224.pth",
                              "official")
    cached = Path(hub.cache_dir()) / hub.pretrained_weights("convnext_tiny").url.rsplit("/", 1)[-1]
    convnext.write_checkpoint(convnext.create_model("convnext_tiny"), cached, "official")
    names: dict = {}
    with torch.no_grad():
        exec(compile(block, "README.md", "exec"), names)
    assert names["logits"].shape == (2, 10) and names["features"].shape == (2, 768)
    assert names["loss"].ndim == 0 and names["pred"].shape == (2, 3072, 7, 7) and names["mask"].shape == (2, 49)
    assert [m.shape[-1] for m in names["maps"]] == [56, 28, 14, 7]
    assert names["model"].class_names[0] == "tench"  # the published model's ImageNet names
    assert names["detector"].roi_heads.box_predictor.cls_score.out_features == 81
    assert names["segmenter"].decode_head.classifier.out_channels == 150
    assert (tmp_path / "out" / "model.safetensors").is_file()
    from convnext.accelerate import describe

    assert describe(names["accelerated"]) == "accelerated (18 of 18 blocks)" and describe(names["model"]) == "reference"
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        reference = names["model"](x)
        assert (names["fast"](x) - reference).abs().max() <= 1e-3
        assert (names["fast_bf16"](x) - reference).abs().max() <= 0.05 * reference.abs().max()


def test_readme_names_are_the_public_api():
    used = set(re.findall(r"convnext\.(\w+)\(", README))
    assert used and used <= set(dir(convnext)), sorted(used - set(dir(convnext)))
    assert set(convnext.__all__) <= set(dir(convnext))


TABLE = re.findall(r"^\| `convnext (\w+)", section("Command line"), re.M)


def test_command_table_lists_every_command():
    assert TABLE and set(TABLE) == set(COMMANDS)


@pytest.mark.parametrize("command", TABLE)
def test_every_command_in_the_table_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        main([command, "--help"])
    assert done.value.code == 0
    assert f"usage: convnext {command}" in capsys.readouterr().out


ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "convnext"
LAYERS = "runtime|models|checkpoints|training|deploy|commands"
# A path of ours: docs/..., src/..., scripts/..., tests/... (not inside a URL or another repository's
# path), or a module of the package by its layer (`commands/common.load_runnable`: the module, then
# the name it defines). <placeholders> stand for any name; a glob must match something.
OUR_PATH = re.compile(r"(?<![\w/.<>*-])((?:docs|src|scripts|tests)/[\w./<>*-]*[\w>/*])")
MODULE_REF = re.compile(rf"`(?:src/convnext/)?((?:{LAYERS})/[\w/]+)(?:\.py)?(?:\.(\w+))?")


def named_files() -> list[Path]:
    return [ROOT / "README.md", ROOT / "Makefile", *ROOT.glob("docs/**/*.md"), *ROOT.glob("scripts/*"),
            *PACKAGE.rglob("*.py")]


def test_every_path_and_module_named_in_readme_docs_and_scripts_exists():
    missing = []
    for file in named_files():
        text = file.read_text()
        for path in OUR_PATH.findall(text):
            if "<" not in path and not any(ROOT.glob(path.rstrip("/."))):
                missing.append(f"{file.relative_to(ROOT)}: {path}")
        for module, name in MODULE_REF.findall(text):
            source = PACKAGE / f"{module}.py"
            if not (source.is_file() or (PACKAGE / module).is_dir()):
                missing.append(f"{file.relative_to(ROOT)}: {module}")
            elif name and source.is_file() and not re.search(rf"^(?:def|class) {name}\b|^{name}\b\s*[:=]",
                                                             source.read_text(), re.M):
                missing.append(f"{file.relative_to(ROOT)}: {module}.{name}")
    assert not missing, missing


def test_the_package_metadata_builds_without_a_warning(tmp_path):
    """`pip install -e .` builds with setuptools: its deprecations (a TOML-table license stops building
    after 2027-02-18) are errors here, and the licence is the SPDX expression."""
    import subprocess
    import sys

    build = ("import sys, setuptools.build_meta as b; "
             "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-W", "error", "-c", build, str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0 and "warning" not in done.stderr.lower(), done.stderr[-2000:]
    metadata = (tmp_path / done.stdout.split()[-1] / "METADATA").read_text()
    assert "License-Expression: MIT" in metadata
