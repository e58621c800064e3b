"""The atlas tests' tiny model and dataset."""
from __future__ import annotations

import onnx
import pytest

from atlas_models import branchy_model, write_images


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "branchy.onnx"
    onnx.save(branchy_model(), path)
    return path


@pytest.fixture
def images(tmp_path):
    write_images(tmp_path / "data", 30, seed=1, constant=3)
    return tmp_path / "data"
