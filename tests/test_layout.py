"""The package's layering: import-linter's contracts in pyproject.toml hold, and they catch an upward import."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(root: Path) -> subprocess.CompletedProcess:
    if not LINT.exists():
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=300)


def test_contracts_are_kept():
    done = lint(ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "Contracts: 4 kept, 0 broken." in done.stdout


@pytest.mark.parametrize("module, line, contract", [
    # a definition below reaching up for a command: the shape every past cycle had
    ("model/info.py", "    from onnxviz.render import painting\n", "role folders import only the folders below them"),
    ("run/session.py", "    import tensorflow\n", "render, atlas and what they stand on run without TensorFlow"),
    ("picture/tiling.py", "    from onnxviz import cli\n", "the library never imports the command line"),
    # a type the engines share reaching up for the orchestrator (the atlas's old cycle)
    ("atlas/state.py", "    from onnxviz.atlas.pipeline import build_atlas\n",
     "atlas modules import only those below them"),
])
def test_an_upward_import_breaks_a_contract(tmp_path, module, line, contract):
    shutil.copytree(ROOT / "onnxviz", tmp_path / "onnxviz", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    path = tmp_path / "onnxviz" / module
    path.write_text(path.read_text() + "\n\ndef _added():\n" + line + "    return None\n")
    done = lint(tmp_path)
    assert done.returncode == 1
    assert f"{contract} BROKEN" in done.stdout
