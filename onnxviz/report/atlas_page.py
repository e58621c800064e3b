"""The atlas's page: `index.html` and its data `atlas-data.js`, written from a plain data dict.

The page (`assets/atlas.html`, with `atlas.css` and `atlas.js` inlined into it) draws layers,
each layer's channels by their best crop, and a page per channel with its N examples, all from
`window.ATLAS`. The data is a script rather than JSON so that the page works from file://;
`read_atlas_layers` reads it back for the links from render's report.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from onnxviz.errors import OnnxvizError
from onnxviz.files import write_text

PAGE_FILE = "index.html"
DATA_FILE = "atlas-data.js"
_DATA_PREFIX = "window.ATLAS = "
_ASSETS = "onnxviz.report.assets"


@dataclass
class PageFiles:
    page: Path
    data: Path
    bytes: int  # both files together


def _asset(name: str) -> str:
    return resources.files(_ASSETS).joinpath(name).read_text(encoding="utf-8")


def page_html(title: str) -> str:
    """The page: its HTML with the stylesheet and the script inlined (one file beside its data)."""
    return (_asset("atlas.html").replace("{{STYLE}}", _asset("atlas.css")).replace("{{SCRIPT}}", _asset("atlas.js"))
            .replace("{{TITLE}}", html.escape(title)))


def data_script(data: dict[str, Any]) -> str:
    """`atlas-data.js`: the data as one compact JSON object assigned to window.ATLAS."""
    return _DATA_PREFIX + json.dumps(data, separators=(",", ":")) + ";\n"


def write_page(folder: Path, data: dict[str, Any]) -> PageFiles:
    """Write `atlas-data.js` and `index.html` into `folder` (each atomically).

    `data` holds what the script reads: title, model, source, score, top, tile, sheet_rows,
    input [H, W], resize, images (paths relative to `folder`), image_count, failed, overlay,
    version, and per layer its name, op, shape, channels, field, sheets, overlays and the flat
    [channel * top + rank] scores, ids (-1: no image) and positions.
    """
    folder = Path(folder)
    data_text = data_script(data)
    page_text = page_html(data["title"])
    data_path = write_text(folder / DATA_FILE, data_text)
    page_path = write_text(folder / PAGE_FILE, page_text)
    return PageFiles(page_path, data_path, len(data_text.encode()) + len(page_text.encode()))


def read_atlas_layers(folder: Path) -> dict[str, int]:
    """{layer name: its index on the page} of the atlas in `folder`, for links from render's report."""
    path = Path(folder) / DATA_FILE
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text[text.index("=") + 1:].strip().rstrip(";"))
        return {layer["name"]: i for i, layer in enumerate(data["layers"])}
    except (OSError, ValueError, KeyError, TypeError):
        raise OnnxvizError(f"{{atlas}} '{folder}' holds no atlas (no readable atlas-data.js); make one with "
                           f"'onnxviz atlas MODEL IMAGES -o {folder}'", params=("atlas",)) from None
