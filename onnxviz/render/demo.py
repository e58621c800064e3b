"""`onnxviz demo`: a report made with nothing to download or export first.

onnxviz ships a small network with real weights and a photo (`onnxviz/data/demo/`, their
licences in its NOTICE.md): Keras' MobileNet (alpha 0.25, 128 x 128, ImageNet weights) as an
onnxviz file, made by `scripts/make_demo_model.py`, and scikit-image's coffee photo. The
files' SHA-256 sums are kept beside them, so a damaged installation is named as such.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

from onnxviz.errors import ModelError

FOLDER = Path(__file__).resolve().parent.parent / "data" / "demo"
MODEL = FOLDER / "mobilenet_0.25_128.onnx"
PHOTO = FOLDER / "coffee.jpg"
SUMS = FOLDER / "SHA256SUMS"
REINSTALL = "reinstall onnxviz (pip install --force-reinstall onnxviz, or pip install -e . from its repository)"


def _checked(path: Path) -> Path:
    """`path` if it is the shipped file it should be, byte for byte; else a ModelError that says
    to reinstall."""
    try:
        sums = dict(line.split()[::-1] for line in SUMS.read_text().splitlines() if line.strip())
        data = path.read_bytes()
    except (OSError, ValueError) as exc:
        raise ModelError(f"the demo files shipped with onnxviz are missing ({exc.filename or SUMS}); "
                         f"{REINSTALL}") from exc
    if hashlib.sha256(data).hexdigest() != sums.get(path.name):
        raise ModelError(f"the demo file '{path}' shipped with onnxviz is damaged (its SHA-256 differs from "
                         f"the one recorded in {SUMS.name}); {REINSTALL}")
    return path


def demo_model() -> Path:
    """The shipped MobileNet 0.25/128 onnxviz file, checked."""
    return _checked(MODEL)


def demo_photo() -> Path:
    """The shipped photo (a cup of espresso, 600 x 400), checked."""
    return _checked(PHOTO)


def demo(images: Sequence[Path] = (), output: Path = Path("onnxviz-demo"), options=None, progress=None):
    """Render `images` (default: the shipped photo) through the shipped model into `output`."""
    from onnxviz.render.options import RenderOptions
    from onnxviz.render.pipeline import render

    model = demo_model()
    inputs = [Path(p) for p in images] or [demo_photo()]
    return render(model, inputs, Path(output), options or RenderOptions(), progress)
