from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("ONNXVIZ_TEST_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real weights, ONNX model and photos of ../shared/data (see its README)."""
    path = shared_data_dir()
    if not (path / "README.md").is_file():
        pytest.skip(f"real test data not found at {path} (set ONNXVIZ_TEST_DATA to the shared data folder)")
    return path


needs_tensorflow = pytest.mark.skipif(
    importlib.util.find_spec("tensorflow") is None or importlib.util.find_spec("tf2onnx") is None,
    reason="TensorFlow/tf2onnx not installed (pip install 'onnxviz[export]')",
)
