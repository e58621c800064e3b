"""atlas/crops: the sprite sheets, the table and the page's data fit together."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from atlas_checks import table
from atlas_models import SIZE
from onnxviz.atlas.crops import BACKGROUND, fit_tile, table_fields, table_text
from onnxviz.atlas.options import AtlasOptions
from onnxviz.atlas.pipeline import build_atlas
from onnxviz.atlas.state import Winners
from onnxviz.run.images import load_image, resize_image


def test_page_sheets_and_table_fit_together(atlas_model, atlas_images, tmp_path):
    out = tmp_path / "atlas"
    result = build_atlas(atlas_model, [atlas_images], out, AtlasOptions(top=5, provider="cpu", overlay=True))
    data = (out / "atlas-data.js").read_text()
    assert data.startswith("window.ATLAS = ")
    atlas = json.loads(data[len("window.ATLAS = "):].rstrip().rstrip(";"))
    assert [layer["name"] for layer in atlas["layers"]] == result.layers
    assert "<script src=\"atlas-data.js\"></script>" in (out / "index.html").read_text()
    for layer in atlas["layers"]:
        for sheet in layer["sheets"] + layer["overlays"]:
            img = cv2.imread(str(out / sheet))
            assert img.shape == (layer["channels"] * 64, 5 * 64, 3)
        assert len(layer["ids"]) == layer["channels"] * 5
    rows = table(out)
    first = rows[0]
    assert first["sheet"] == atlas["layers"][0]["sheets"][0] and first["tile"] == [0, 0, 64]
    # the tile holds the crop: its mean colour is the crop's (letterboxed on grey 48)
    crop_img = resize_image(load_image(Path(first["image"])), SIZE, SIZE)
    x0, y0, x1, y1 = first["box"]
    sheet = cv2.imread(str(out / first["sheet"]))[:64, :64, ::-1]
    expected = fit_tile(np.ascontiguousarray(np.asarray(crop_img, np.uint8)[y0:y1, x0:x1, ::-1]), 64)[:, :, ::-1]
    assert sheet.shape == expected.shape == (64, 64, 3)
    assert expected.std() > 10  # a crop with content, not only the grey letterbox
    assert np.abs(sheet.astype(int) - expected).mean() < 4  # the sheet is a JPEG
    assert result.files == len(list((out / "crops").iterdir())) + 3


@pytest.mark.parametrize("overlay", [False, True])
def test_a_winner_that_cannot_be_read_again_is_marked_in_the_table_and_left_blank(atlas_model, atlas_images, tmp_path,
                                                                                  overlay):
    """Its rows get "unreadable": true (the other rows are as before, byte for byte), its tiles stay grey,
    and a warning names it."""
    opts = AtlasOptions(layers=["c1", "c3"], top=3, provider="cpu", overlay=overlay)
    out = tmp_path / "atlas"
    build_atlas(atlas_model, [atlas_images], out, opts)
    before = (out / "atlas.jsonl").read_text().splitlines()
    lost = table(out)[0]["image"]
    Path(lost).write_bytes(b"gone")
    notes = []
    build_atlas(atlas_model, [atlas_images], out, opts, note=notes.append)  # nothing new to scan: the crops again
    after = (out / "atlas.jsonl").read_text().splitlines()
    assert len(after) == len(before)
    marked = 0
    for old, new in zip(before, after):
        row = json.loads(new)
        if row["image"] == lost:
            marked += 1
            assert new == json.dumps({**json.loads(old), "unreadable": True})
            sheets = [row["sheet"]] + ([row["sheet"].replace(".jpg", ".overlay.jpg")] if overlay else [])
            for name in sheets:
                top, left, t = row["tile"]
                tile = cv2.imread(str(out / name))[top + 8:top + t - 8, left + 8:left + t - 8]  # JPEG bleeds at edges
                assert np.abs(tile.astype(int) - BACKGROUND).max() <= 3, name
        else:
            assert new == old
    assert marked >= 1
    assert [n for n in notes if n.startswith("warning:")] == [
        f"warning: cannot read image '{lost}': not a supported image or truncated (JPEG, PNG, BMP, WebP, TIFF are) "
        f"(a winner; its tiles are left blank)"]


def test_table_lines_are_what_json_dumps_writes():
    rows = Winners(np.array([0, 1, 1]), np.array([0, 300, 2]), np.array([0, 1, 0]), np.array([1, 0, 1]),
                   np.array([1.5, -np.inf, 1e-7], np.float32), np.array([0, 3, 1]), np.array([2, 0, 1]),
                   np.array([[0, 0, 4, 4], [1, 2, 3, 4], [0, 0, 9, 9]]))
    plan = SimpleNamespace(layers=[SimpleNamespace(name="conv 1"), SimpleNamespace(name='b"2')])
    state = SimpleNamespace(images=["/data/a.jpg", "/data/café \"b\".png"])
    sheets = [["crops/conv_1_0.jpg"], ["crops/b_2_0.jpg", "crops/b_2_1.jpg"]]
    fields = table_fields(plan, state, rows, sheets, 64)
    text = table_text(fields, np.array([False, True, False]))
    lines = text.splitlines()
    assert text.endswith("\n") and len(lines) == 3
    want = [{"layer": "conv 1", "channel": 0, "rank": 0, "image": "/data/café \"b\".png", "score": 1.5,
             "position": [0, 2], "box": [0, 0, 4, 4], "sheet": "crops/conv_1_0.jpg", "tile": [0, 0, 64]},
            {"layer": 'b"2', "channel": 300, "rank": 1, "image": "/data/a.jpg", "score": -np.inf,
             "position": [3, 0], "box": [1, 2, 3, 4], "sheet": "crops/b_2_1.jpg", "tile": [44 * 64, 64, 64],
             "unreadable": True},
            {"layer": 'b"2', "channel": 2, "rank": 0, "image": "/data/café \"b\".png",
             "score": float(np.float32(1e-7)), "position": [1, 1], "box": [0, 0, 9, 9], "sheet": "crops/b_2_0.jpg",
             "tile": [128, 0, 64]}]
    assert lines == [json.dumps(row) for row in want]
    assert table_text([], np.zeros(0, bool)) == ""
