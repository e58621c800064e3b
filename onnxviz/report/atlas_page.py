"""The atlas's page as other pages read it: which layers an atlas folder covers, for links from render's report."""
from __future__ import annotations

import json
from pathlib import Path

from onnxviz.errors import OnnxvizError


def read_atlas_layers(folder: Path) -> dict[str, int]:
    """{layer name: its index on the page} of the atlas in `folder`, for links from render's report."""
    path = Path(folder) / "atlas-data.js"
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text[text.index("=") + 1:].strip().rstrip(";"))
        return {layer["name"]: i for i, layer in enumerate(data["layers"])}
    except (OSError, ValueError, KeyError, TypeError):
        raise OnnxvizError(f"--atlas '{folder}' holds no atlas (no readable atlas-data.js); make one with "
                           f"'onnxviz atlas MODEL IMAGES -o {folder}'") from None
