"""Output folders (format 2, as `onnxviz/store.py` documents them) built from known arrays.

The report tests write these instead of rendering a model, so that what a page shows can be compared
with the arrays themselves: the exact values, the channel statistics, which channels are dead.
"""
from __future__ import annotations

import base64
import math
import re
from pathlib import Path

import cv2
import numpy as np

from onnxviz.report import render_page as report
from onnxviz.render.store import layer_css


def decode_layer_css(text: bytes) -> dict[int, np.ndarray]:
    """{index: gray uint8 sprite} back from a `maps/*.css` file (`store.layer_css` written by render)."""
    rule = rb'\.m(\d+) b\{background-image:url\("data:image/png;base64,([A-Za-z0-9+/=]*)"\)\}\n'
    if not re.fullmatch(rb"(?:" + rule + rb")+", text):
        raise ValueError("not an onnxviz maps stylesheet")
    return {int(index): cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_UNCHANGED)
            for index, b64 in re.findall(rule, text)}


def file_name(name: str) -> str:
    """Layer names go into file names as they are (spaces, non-ASCII, '#'), but for the path separator:
    the pages must cope with any name the writer keeps."""
    return name.replace("/", "_").replace("\\", "_")


def quantise(maps: np.ndarray, layer_range: tuple[float, float] | None = None
             ) -> tuple[np.ndarray, list[float], list[float]]:
    """[n, H, W] float -> uint8 per channel min..max (or on `layer_range` for all), with each low and high."""
    flat = maps.reshape(maps.shape[0], -1).astype(np.float64)
    low, high = flat.min(axis=1), flat.max(axis=1)
    if layer_range is not None:
        low, high = np.full_like(low, layer_range[0]), np.full_like(high, layer_range[1])
    span = np.where(high > low, high - low, 1.0)
    p = np.rint((maps - low[:, None, None]) / span[:, None, None] * 255)
    p[high == low] = 0
    return p.astype(np.uint8), [float(v) for v in low], [float(v) for v in high]


def sprite(gray: np.ndarray, columns: int) -> np.ndarray:
    """[n, h, w] -> one image, row-major in `columns` columns, no gaps (unused cells 0)."""
    n, h, w = gray.shape
    rows = math.ceil(n / columns)
    out = np.zeros((rows * h, columns * w), np.uint8)
    for k in range(n):
        r, c = divmod(k, columns)
        out[r * h:(r + 1) * h, c * w:(c + 1) * w] = gray[k]
    return out


def select(maps: np.ndarray, max_channels: int | None, sort: str) -> list[int]:
    flat = maps.reshape(maps.shape[0], -1)
    order = np.arange(maps.shape[0])
    if sort != "index":
        score = flat.mean(axis=1) if sort == "mean" else flat.max(axis=1)
        order = np.argsort(-score, kind="stable")
    return [int(i) for i in (order if max_channels is None else order[:max_channels])]


def layer_entry(folder: Path, index: int, name: str, op: str, maps: np.ndarray, digits: int, *,
                max_channels: int | None, sort: str, norm: str) -> dict:
    maps = np.asarray(maps, np.float32)
    if maps.ndim == 1:
        maps = maps[:, None, None]
    c, h, w = maps.shape
    flat = maps.reshape(c, -1)
    cmin, cmax = flat.min(axis=1), flat.max(axis=1)
    entry = {
        "index": index, "name": name, "op": op, "shape": [c, h, w], "kind": "vector" if h == w == 1 else "map",
        "stats": {"min": float(maps.min()), "max": float(maps.max()), "mean": float(maps.mean(dtype=np.float64)),
                  "zero_fraction": float(1 - np.count_nonzero(maps) / maps.size),
                  "dead_channels": int(np.count_nonzero((cmin == 0) & (cmax == 0)))},
    }
    cmean = flat.mean(axis=1, dtype=np.float64)
    if entry["kind"] == "vector":  # every channel
        entry["channel_stats"] = {"min": cmin.tolist(), "max": cmax.tolist(), "mean": cmean.tolist()}
        entry["values"] = flat[:, 0].tolist()
        return entry
    stored = select(maps, max_channels, sort)
    # a map layer's channel_stats are those of its stored channels, in stored order
    entry["channel_stats"] = {"min": cmin[stored].tolist(), "max": cmax[stored].tolist(), "mean": cmean[stored].tolist()}
    layer_range = (float(maps.min()), float(maps.max())) if norm == "layer" else None
    gray, low, high = quantise(maps[stored], layer_range)
    columns = math.ceil(math.sqrt(len(stored)))
    png = cv2.imencode(".png", sprite(gray, columns))[1].tobytes()
    base = f"maps/{str(index).zfill(digits)}.{file_name(name)}"
    (folder / "maps").mkdir(parents=True, exist_ok=True)
    (folder / f"{base}.css").write_bytes(layer_css(index, png))
    entry.update({"channels": stored, "tile": [h, w], "columns": columns, "low": low, "high": high,
                  "data": f"{base}.css", "grid": None})
    return entry


def build_image(out: Path, folder_name: str, image_name: str, layers: list[tuple[str, str, np.ndarray]], *,
                indices: list[int] | None = None, max_channels: int | None = 64, sort: str = "index",
                norm: str = "channel", colormap: str = "viridis", predictions: list[dict] | None = None,
                input_rgb: np.ndarray | None = None, filters: bool = True) -> dict:
    """Write `out/<folder_name>/` for one image through `report.write_report`; returns its summary."""
    folder = Path(out) / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    indices = indices or list(range(len(layers)))
    digits = max(3, len(str(max(indices))))
    if input_rgb is None:
        y, x = np.mgrid[0:32, 0:32]
        input_rgb = np.stack([x * 8, y * 8, np.full_like(x, 128)], -1).astype(np.uint8)
    cv2.imwrite(str(folder / "input.png"), input_rgb[..., ::-1])
    filters_entry = None
    if filters:
        patches = np.random.default_rng(1).integers(0, 256, (27, 27, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / "filters.png"), patches)
        filters_entry = {"file": "filters.png", "layer": layers[0][0], "count": 9, "kernel": "9 filters of 3x3x3",
                         "channel_order": "RGB"}
    entries = [layer_entry(folder, i, name, op, maps, digits, max_channels=max_channels, sort=sort, norm=norm)
               for i, (name, op, maps) in zip(indices, layers)]
    summary = {
        "format": 5, "image": f"/photos/{image_name}", "image_name": image_name, "model": "models/test.onnx",
        "source": "test arrays", "onnxviz_version": "0.1.0", "provider": "cpu", "provider_fallback": None,
        "input": {"height": int(input_rgb.shape[0]), "width": int(input_rgb.shape[1]), "resize": "stretch",
                  "file": "input.png"},
        "predictions": predictions if predictions is not None else
        [{"index": 3, "label": "tabby cat", "score": 0.71}, {"index": 1, "label": "café crème", "score": 0.2}],
        "filters": filters_entry,
        "options": {"max_channels": max_channels, "channels": None, "sort": sort, "norm": norm, "colormap": colormap},
        "timings_ms": {"inference": 12.0, "drawing": 3.0, "writing": 2.0},
        "layers": entries,
    }
    report.write_report(folder, summary)
    return summary


def run_dict(summaries: list[tuple[str, dict]]) -> dict:
    """The run dict of `(folder, summary)` pairs, as render builds it."""
    first = summaries[0][1]
    return {
        "format": 5, "model": first["model"], "source": first["source"],
        "layers": [{"index": l["index"], "name": l["name"], "shape": l["shape"], "kind": l["kind"]} for l in first["layers"]],
        "images": [{"folder": folder, "image_name": s["image_name"],
                    "top1": ({"label": s["predictions"][0]["label"], "score": s["predictions"][0]["score"]}
                             if s["predictions"] else None)} for folder, s in summaries],
    }


def example_layers(seed: int = 0, scale: float = 1.0) -> list[tuple[str, str, np.ndarray]]:
    """Layers with everything a page must get right: a smooth map layer with a dead and a constant channel,
    a sparse ReLU layer with more channels than are stored, tiny 3x3 maps, a pooled vector, logits."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:24, 0:20] / 10.0
    conv = np.stack([np.sin(x * (1 + k % 4) + y * (k // 4)) * (k + 1) * scale for k in range(12)]).astype(np.float32)
    conv[4] = 0.0  # dead: zero everywhere
    conv[7] = 0.53  # constant but not zero: not dead
    relu = np.maximum(rng.normal(0, 1, (80, 12, 10)), 0).astype(np.float32) * scale
    relu[5] *= 9  # the largest max and mean
    small = rng.normal(0, 2, (6, 3, 3)).astype(np.float32)
    pooled = rng.normal(0, 3, 40).astype(np.float32)
    pooled[[2, 9]] = 0.0
    logits = rng.normal(0, 4, 10).astype(np.float32)
    return [("conv 1/ü#?", "Conv2D", conv), ("relu_2", "ReLU", relu), ("tiny", "MaxPooling2D", small),
            ("global_average_pooling2d", "GlobalAveragePooling2D", pooled), ("logits", "Dense", logits)]
