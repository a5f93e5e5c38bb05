"""The package layout holds: imports run only downward through the layers, and nothing imports in a circle.

runtime -> models -> accelerate | checkpoints -> training | deploy -> commands, cli (docs/architecture.md). Read from the `ast`
of every module, lazy imports inside functions included, so a new upward import fails here.
"""
import ast
from pathlib import Path

import pytest

import convnext

PACKAGE = Path(convnext.__file__).parent
RANK = {"runtime": 0, "models": 1, "accelerate": 2, "checkpoints": 2, "training": 3, "deploy": 3, "commands": 4, "cli": 4}
API = 5  # the top-level __init__ may import from any layer


def module_name(path: Path) -> str:
    parts = ["convnext", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The convnext modules `name` imports, relative imports resolved."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            target = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            found.add(target)
            found |= {f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES}
    return {m for m in found if m == "convnext" or m.startswith("convnext.")} - {name}


def layer(name: str) -> tuple[str, int]:
    parts = name.split(".")
    if len(parts) == 1 or (len(parts) == 2 and parts[1] not in RANK):
        return "api", API
    return parts[1], RANK[parts[1]]


GRAPH = {name: imports(name) for name in MODULES}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_run_downward(name):
    home, rank = layer(name)
    upward = [target for target in GRAPH[name]
              if layer(target)[0] != home and layer(target)[1] >= rank]
    assert not upward, f"{name} ({home}) imports {upward} from the same level or above"


def test_no_import_cycles():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name, path):
        state[name] = 1
        for target in sorted(GRAPH[name] & MODULES.keys()):
            if state.get(target) == 1:
                cycle = path[path.index(target):] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(MODULES):
        if name not in state:
            visit(name, [name])


def test_every_layer_says_what_it_is_for():
    for package in ("runtime", "models", "checkpoints", "training", "deploy"):
        doc = ast.get_docstring(ast.parse((PACKAGE / package / "__init__.py").read_text()))
        assert doc and "import" in doc, f"convnext.{package} needs a docstring saying what it may import"


def test_the_checker_sees_an_upward_import():
    """The test above would fail on the cycle that used to be here: registry -> hub -> weights -> registry."""
    GRAPH["convnext.models.registry"].add("convnext.checkpoints.hub")
    try:
        with pytest.raises(AssertionError, match="imports"):
            test_imports_run_downward("convnext.models.registry")
        with pytest.raises(pytest.fail.Exception, match="import cycle"):
            test_no_import_cycles()
    finally:
        GRAPH["convnext.models.registry"].discard("convnext.checkpoints.hub")


def test_public_api_is_unchanged_by_the_move():
    """The API of release 0.1 is all still there (FCMAE, the dense-prediction models and the accelerate transform have joined it since)."""
    assert set(convnext.__all__) == {
        "ConvNeXt", "ConvNeXtV2", "ConvNeXtIsotropic", "ConvNeXtBackbone", "create_model", "list_models",
        "count_params", "count_macs", "load_weights", "load_pretrained", "save_pretrained", "read_checkpoint",
        "write_checkpoint", "detect_format", "CheckpointError", "optimize_for_inference", "FCMAE",
        "ConvNeXtFPN", "maskrcnn_convnext", "fasterrcnn_convnext", "UperNet", "upernet_convnext", "load_dense",
        "save_dense", "accelerate", "unaccelerate"}
