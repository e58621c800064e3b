"""What the atlas tests share: the brute-force oracle (every map of every image through ONNX Runtime,
every score kept, then sorted) and the command line. Their model and dataset are the fixtures
`atlas_model` and `atlas_images` (tests/conftest.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from atlas_models import SIZE
from onnxviz.cli import app
from onnxviz.run.images import collect_images, load_image, resize_image

runner = CliRunner()
LAYERS = ["c1", "p1", "add", "c3"]


def brute_top(scores: np.ndarray, positions: np.ndarray, ids: np.ndarray, n: int):
    """Every score kept; per channel sorted by (-score, id)."""
    out_s, out_i, out_p = [], [], []
    for c in range(scores.shape[1]):
        order = np.lexsort((ids, -scores[:, c]))[:n]
        out_s.append(scores[order, c])
        out_i.append(ids[order])
        out_p.append(positions[order, c])
    return np.array(out_s), np.array(out_i), np.array(out_p)


def brute_force_table(model_path: Path, folder: Path, layers: list[str], n: int, score: str) -> list[tuple]:
    """Every map of every image through ORT, every score kept, then sorted: (layer, channel, rank, image, position)."""
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    paths, _ = collect_images([folder])
    maps = {layer: [] for layer in layers}
    for path in paths:
        rgb = resize_image(load_image(path), SIZE, SIZE)[None].astype(np.float32)
        for layer, value in zip(layers, session.run(layers, {"image": rgb})):
            maps[layer].append(value[0])
    rows = []
    for layer in layers:
        stack = np.stack(maps[layer])  # [images, C, H, W]
        flat = stack.reshape(len(paths), stack.shape[1], -1)
        scores = flat.max(axis=2) if score == "max" else flat.mean(axis=2)
        positions = flat.argmax(axis=2)
        s, i, p = brute_top(scores, positions, np.arange(len(paths)), n)
        w = stack.shape[3]
        for c in range(s.shape[0]):
            for r in range(n):
                rows.append((layer, c, r, str(paths[i[c, r]].resolve()), float(s[c, r]), list(divmod(int(p[c, r]), w))))
    return rows


def table(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "atlas.jsonl").read_text().splitlines()]


def assert_same_as_brute_force(out: Path, expected: list[tuple]) -> None:
    rows = table(out)
    assert len(rows) == len(expected)
    for row, (layer, c, r, image, score, pos) in zip(rows, expected):
        assert (row["layer"], row["channel"], row["rank"], row["image"], row["position"]) == (layer, c, r, image, pos)
        assert row["score"] == pytest.approx(score, rel=1e-5, abs=1e-5)


def invoke(*args):
    result = runner.invoke(app, ["atlas", *map(str, args)])
    return result.exit_code, result.output
