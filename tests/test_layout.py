"""The package's shape: inference and analysis never reach into the training engine, and no
module grows past ~400 lines, no function past 80 (docs/research/design.md, "Package layout")."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "clipfuse"
MODULES = sorted(PACKAGE.rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at the top or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("layer", ["inference", "analysis", "build.py", "saved_model.py"])
def test_loading_and_measuring_do_not_import_the_training_engine(layer):
    target = PACKAGE / layer
    paths = sorted(target.rglob("*.py")) if target.is_dir() else [target]
    assert paths
    for path in paths:
        engine = {
            name
            for name in imported_modules(path)
            if name.startswith(("clipfuse.engine", "lightning", "pytorch_lightning"))
        }
        assert not engine, f"{path.relative_to(PACKAGE)} imports {sorted(engine)}"


def test_no_module_is_over_400_lines():
    sizes = {path.relative_to(PACKAGE): len(path.read_text().splitlines()) for path in MODULES}
    assert len(sizes) > 50
    assert not {path: n for path, n in sizes.items() if n > 400}


def test_no_function_is_over_80_lines():
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    long = [
        f"{path.relative_to(PACKAGE)}:{node.name}:{node.end_lineno - node.lineno + 1}"
        for path in MODULES
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, functions) and node.end_lineno - node.lineno + 1 > 80
    ]
    assert not long, long
