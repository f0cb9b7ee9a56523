"""engine/ never imports Qt, the app, or training/ (ARCHITECTURE.md): checked statically and by
importing every engine module in a fresh interpreter."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ENGINE = REPO / "engine"
FORBIDDEN = ("PySide6", "PySide2", "PyQt5", "PyQt6", "shiboken6", "training", "app")


def engine_modules() -> list[str]:
    return sorted(
        "engine" if p.name == "__init__.py" else f"engine.{p.stem}" for p in ENGINE.glob("*.py")
    )


def imported_roots(tree: ast.AST) -> set[str]:
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_engine_modules_found():
    mods = engine_modules()
    for required in (
        "engine",
        "engine.frames",
        "engine.sources",
        "engine.sinks",
        "engine.pipeline",
    ):
        assert required in mods


@pytest.mark.parametrize("path", sorted(ENGINE.glob("*.py")), ids=lambda p: p.name)
def test_no_forbidden_imports_in_source(path):
    roots = imported_roots(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    bad = sorted(roots & set(FORBIDDEN))
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"


def test_importing_engine_loads_no_qt_or_training():
    code = f"""
import importlib, json, sys
for name in {engine_modules()!r}:
    importlib.import_module(name)
import engine
for name in ("create_backend", "list_backends"):
    getattr(engine, name, None)  # the lazily loaded names pull in engine.backends
roots = sorted({{m.split(".")[0] for m in sys.modules}} & set({FORBIDDEN!r}))
print(json.dumps(roots))
"""
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing engine loaded {loaded}"


@pytest.mark.parametrize("module", ["training.evaluate", "training.train", "training.export"])
def test_training_commands_without_torch_say_what_to_install(module: str) -> None:
    # An app-only install (no `train` extra) ran `python -m training.evaluate --help` into a
    # traceback ending in "No module named 'torch'".
    code = (
        "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['-m', '--help']; "
        f"sys.orig_argv = [sys.executable, '-m', {module!r}, '--help']; "
        f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert "the training pipeline needs torch, not installed here" in p.stderr
    assert 'pip install -e ".[train]"' in p.stderr
    assert f"Python {sys.executable}" in p.stderr  # which interpreter lacks it
    assert "usage:" not in p.stdout


def test_training_carry_runs_without_torch() -> None:
    # It packs the data with OpenCV alone; the check must not stop it.
    code = (
        "import runpy, sys; sys.modules['torch'] = None; sys.argv = ['-m', '--help']; "
        "sys.orig_argv = [sys.executable, '-m', 'training.carry', '--help']; "
        "runpy.run_module('training.carry', run_name='__main__', alter_sys=True)"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr
    assert "usage:" in p.stdout and "pack" in p.stdout


@pytest.mark.parametrize(
    "path", sorted((REPO / "training").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO))
)
def test_training_imports_neither_the_engine_nor_the_app(path):
    # ARCHITECTURE.md: training stands alone; what it measures of the engine (the unsharp mask,
    # the processing scale, the noise reduction) it has its own copy of, checked by a test.
    roots = imported_roots(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
    bad = sorted(roots & {"engine", "app", "main"})
    assert not bad, f"{path.relative_to(REPO)} imports {bad}"
