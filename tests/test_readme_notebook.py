"""The README's Python API example, run as written, cell by cell, as a Jupyter notebook."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def readme_cells() -> list[str]:
    """The first python block of the README's 'Python API' section, one cell per paragraph."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Python API"):]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return [cell.strip() for cell in block.split("\n\n") if cell.strip()]


def test_the_readme_api_example_runs_as_a_notebook(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat not installed (pip install -e '.[dev]')")
    nbclient = pytest.importorskip("nbclient", reason="nbclient not installed (pip install -e '.[dev]')")
    pytest.importorskip("ipykernel", reason="ipykernel not installed (pip install -e '.[dev]')")
    cells = readme_cells()
    assert cells[0].startswith("import onnxviz") and len(cells) == 6
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()

    def shown(cell, kind="text/plain") -> str:
        return "\n".join(o.get("data", {}).get(kind, "") for o in cell.outputs if o.output_type != "stream")

    _, load, acts, predict, grid, render = notebook.cells
    assert not any(o.output_type == "error" for c in notebook.cells for o in c.outputs)
    table = shown(load).splitlines()
    assert table[0].split() == ["name", "class", "shape", "channels"] and table[1].split()[2] == "Conv2D"
    assert "<td>Conv2D</td>" in shown(load, "text/html")
    assert shown(acts) == "(2, 16, 64, 64)"
    assert shown(predict).startswith("[[Prediction(label='espresso', score=0.96")
    assert shown(grid, "image/png")  # Jupyter shows the grid as a picture
    assert f"{tmp_path / 'out' / 'coffee' / 'index.html'}" not in shown(render)  # relative to the notebook
    assert "out/coffee/index.html" in shown(render) and "<table>" in shown(render, "text/html")
    progress = [o["data"]["text/plain"] for o in render.outputs if o.output_type == "display_data"]
    assert progress == ["1/1 images, " + progress[0].split(", ")[1]] and progress[0].endswith("/s  coffee.jpg")
    assert (tmp_path / "out" / "coffee" / "index.html").is_file()
    assert all(len(shown(c)) < 8000 for c in notebook.cells)  # no cell prints a wall of text
