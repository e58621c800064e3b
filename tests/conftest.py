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


@pytest.fixture(scope="session")
def mobilenet_onnx(shared_data, tmp_path_factory):
    """`onnxviz export mobilenet --alpha 0.25 --input-size 128` with the real ImageNet weights,
    through the CLI in a new process (KERAS_HOME must be set before Keras is imported)."""
    import shutil
    import subprocess
    import sys

    if importlib.util.find_spec("tensorflow") is None:
        pytest.skip("TensorFlow not installed (pip install 'onnxviz[export]')")
    tmp = tmp_path_factory.mktemp("mobilenet")
    home = tmp / "keras_home"
    shutil.copytree(shared_data / "keras_home", home)
    out = tmp / "mobilenet.onnx"
    proc = subprocess.run(
        [sys.executable, "-m", "onnxviz", "export", "mobilenet", "--alpha", "0.25", "--input-size", "128", "-o", str(out)],
        env=dict(os.environ, KERAS_HOME=str(home)), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.fixture
def atlas_model(tmp_path) -> Path:
    """The atlas tests' tiny onnxviz file (`atlas_models.branchy_model`: 32x32 input, five layers)."""
    import onnx
    from atlas_models import branchy_model

    path = tmp_path / "branchy.onnx"
    onnx.save(branchy_model(), path)
    return path


@pytest.fixture
def atlas_images(tmp_path) -> Path:
    """The atlas tests' dataset: a folder of 33 small PNG and JPEG images (3 of them flat grey: ties)."""
    from atlas_models import write_images

    write_images(tmp_path / "data", 30, seed=1, constant=3)
    return tmp_path / "data"
