"""Whether render can draw a file, found out without writing anything: what export runs on the
file it is about to write, so that a file it writes always renders."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from onnxviz.model.info import load_info
from onnxviz.model.selection import select_layers
from onnxviz.render.painting import draw_layer
from onnxviz.render.pipeline import RenderOptions, check_channels
from onnxviz.run.images import resize_image


def probe_picture(height: int = 257, width: int = 311) -> np.ndarray:
    """An RGB uint8 picture with gradients and edges, of a size no model has, so that it is resized."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // width, yy * 255 // height, ((xx // 16 + yy // 16) % 2) * 255], -1).astype(np.uint8)


def check_renders(model: Path) -> None:
    """Render's own checks on `model` (its metadata, the layers' fixed shapes), then one picture
    resized as render resizes it, run through every feature map and drawn, and the first-layer
    filters read: each step raises what render would raise."""
    from onnxviz.render.filters import load_filters
    from onnxviz.run.session import open_session

    model = Path(model)
    options = RenderOptions()
    info = load_info(model)
    chosen = select_layers(info, [], str(model))
    check_channels(chosen, options)
    session = open_session(model, "cpu", long_run=False, spinning=False)
    session.output_names = [layer.name for layer in chosen]
    pixels = resize_image(probe_picture(), info.height, info.width, info.resize or "stretch")
    maps = session.run(pixels[None].astype(np.float32))
    for layer in chosen:
        draw_layer(layer, info.layers.index(layer), maps[layer.name], options)
    load_filters(model)
