"""`onnxviz atlas`: the top N of every channel against a brute force that keeps every score,
resuming, adding images, the page, bad input, and the Ray engine against the local one."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from onnxviz.atlas.options import AtlasOptions
from onnxviz.atlas.pipeline import build_atlas
from onnxviz.atlas.plan import default_layers
from onnxviz.atlas.state import EMPTY, TopN
from onnxviz.atlas.crops import fit_tile
from onnxviz.cli import app
from onnxviz.errors import OnnxvizError
from onnxviz.run.images import collect_images, load_image, resize_image
from onnxviz.model.info import read_info
from onnxviz.model.receptive import receptive_fields

from atlas_models import SIZE, branchy_model, vectors_only_model, write_images

runner = CliRunner()
LAYERS = ["c1", "p1", "add", "c3"]
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- TopN

def brute_top(scores: np.ndarray, positions: np.ndarray, ids: np.ndarray, n: int):
    """Every score kept; per channel sorted by (-score, id)."""
    out_s, out_i, out_p = [], [], []
    for c in range(scores.shape[1]):
        order = np.lexsort((ids, -scores[:, c]))[:n]
        out_s.append(scores[order, c])
        out_i.append(ids[order])
        out_p.append(positions[order, c])
    return np.array(out_s), np.array(out_i), np.array(out_p)


@pytest.mark.parametrize("n", [1, 3, 9])
def test_topn_equals_brute_force_with_ties_in_any_batching(n):
    rng = np.random.default_rng(n)
    count, channels = 200, 7
    scores = rng.integers(0, 6, (count, channels)).astype(np.float32)  # many ties
    positions = rng.integers(0, 50, (count, channels))
    ids = np.arange(count)
    want = brute_top(scores, positions, ids, n)
    for sizes in ([1] * count, [8] * 25, [200], list(rng.integers(1, 30, 40))):
        top, start = TopN(channels, n), 0
        for size in sizes:
            stop = min(count, start + int(size))
            if start < stop:
                top.update(scores[start:stop], positions[start:stop], ids[start:stop])
            start = stop
        assert start == count
        for got, exp in zip((top.scores, top.ids, top.positions), want):
            np.testing.assert_array_equal(got, exp)


def test_topn_merge_and_sparse_offer_are_exact():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (120, 5)).astype(np.float32)
    positions = rng.integers(0, 9, (120, 5))
    ids = rng.permutation(120)
    want = brute_top(scores, positions, ids, 4)
    a, b = TopN(5, 4), TopN(5, 4)
    a.update(scores[:70], positions[:70], ids[:70])
    b.update(scores[70:], positions[70:], ids[70:])
    a.merge(b)
    np.testing.assert_array_equal(a.ids, want[1])
    c = TopN(5, 4)
    rows = [(ch, scores[k, ch], ids[k], positions[k, ch]) for k in range(120) for ch in range(5)]
    rng.shuffle(rows)
    ch, s, i, p = map(np.array, zip(*rows))
    c.offer(ch, s, i, p)
    for got, exp in zip((c.scores, c.ids, c.positions), want):
        np.testing.assert_array_equal(got, exp)


def test_topn_nan_counts_as_lowest_and_empty_slots_stay_last():
    top = TopN(2, 3)
    top.update(np.array([[np.nan, 1.0], [2.0, np.nan]], np.float32), np.zeros((2, 2), np.int64), np.array([0, 1]))
    assert top.ids[0].tolist() == [1, 0, EMPTY] and top.ids[1].tolist() == [0, 1, EMPTY]


# ---------------------------------------------------------------- the whole atlas against brute force

@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "branchy.onnx"
    onnx.save(branchy_model(), path)
    return path


@pytest.fixture
def images(tmp_path):
    write_images(tmp_path / "data", 30, seed=1, constant=3)
    return tmp_path / "data"


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


@pytest.mark.parametrize("score", ["max", "mean"])
def test_atlas_equals_brute_force(model_path, images, tmp_path, score):
    out = tmp_path / "atlas"
    result = build_atlas(model_path, [images], out, AtlasOptions(layers=LAYERS, top=4, score=score, provider="cpu",
                                                                  batch_size=7))
    assert result.images == 33 and result.new_images == 33 and not result.failed
    assert_same_as_brute_force(out, brute_force_table(model_path, images, LAYERS, 4, score))
    # crop boxes are the receptive field of the position, clipped
    fields = receptive_fields(branchy_model(), LAYERS)
    for row in table(out)[::37]:
        y, x = row["position"]
        assert row["box"] == list(fields[row["layer"]].box(y, x, SIZE, SIZE))


@pytest.mark.parametrize("light_bytes", [0, 64 << 10])
def test_weights_left_out_of_the_rewrite_or_in_an_external_file_give_the_same_atlas(model_path, images, tmp_path,
                                                                                   monkeypatch, light_bytes):
    """make_plan rewrites the graph with the large weights left out and puts them back from the file
    (0: every floating-point initializer, as VGG16's large ones are); weights in an external file
    are loaded into the bytes ONNX Runtime gets. The table, boxes included, is the one made with
    every weight parsed."""
    import onnxviz.atlas.plan as atlas

    opts = AtlasOptions(layers=LAYERS, top=3, provider="cpu")
    monkeypatch.setattr(atlas, "LIGHT_TENSOR_BYTES", 1 << 62)  # nothing left out
    build_atlas(model_path, [images], tmp_path / "whole", opts)
    assert_same_as_brute_force(tmp_path / "whole", brute_force_table(model_path, images, LAYERS, 3, "max"))
    monkeypatch.setattr(atlas, "LIGHT_TENSOR_BYTES", light_bytes)
    build_atlas(model_path, [images], tmp_path / "a", opts)
    external = tmp_path / "ext" / "branchy.onnx"
    external.parent.mkdir()
    onnx.save(branchy_model(), external, save_as_external_data=True, all_tensors_to_one_file=True,
              location="branchy.weights", size_threshold=0)
    build_atlas(external, [images], tmp_path / "b", opts)
    want = (tmp_path / "whole" / "atlas.jsonl").read_text()
    assert (tmp_path / "a" / "atlas.jsonl").read_text() == want
    assert (tmp_path / "b" / "atlas.jsonl").read_text() == want


def test_interrupted_atlas_resumes_and_added_images_merge_exactly(model_path, images, tmp_path):
    paths = sorted(images.iterdir())
    expected = brute_force_table(model_path, images, LAYERS, 3, "max")
    out = tmp_path / "atlas"
    opts = AtlasOptions(layers=LAYERS, top=3, provider="cpu", batch_size=2, checkpoint_every=4)

    seen = []

    def stop_after_ten(done, total, name):
        seen.append(done)
        if done >= 10:
            raise KeyboardInterrupt

    # the first 20 images (in name order), interrupted after 10
    with pytest.raises(KeyboardInterrupt):
        build_atlas(model_path, paths[:20], out, opts, progress=stop_after_ten)
    from onnxviz.atlas.state import AtlasState

    state = AtlasState.load(out / "atlas-state.npz")
    assert int(state.done.sum()) == 10 and len(state.images) == 20
    resumed = build_atlas(model_path, paths[:20], out, opts)
    assert resumed.resumed and resumed.new_images == 10
    # then the whole folder: the 13 new images are added
    added = build_atlas(model_path, [images], out, opts)
    assert added.new_images == 13 and added.images == 33
    assert_same_as_brute_force(out, expected)


def test_reading_ahead_or_in_turn_gives_the_same_tops(model_path, images):
    """run_local's reading thread (at the lowest priority where ORT's threads take every core) and
    reading in turn give the same state, unreadable images included."""
    from onnxviz.atlas.local import run_local
    from onnxviz.atlas.plan import make_plan
    from onnxviz.atlas.state import AtlasState

    (images / "broken.jpg").write_bytes(b"not a jpeg")
    opts = AtlasOptions(layers=LAYERS, top=3, provider="cpu", batch_size=4)
    plan = make_plan(model_path, opts)
    paths = [str(p.resolve()) for p in collect_images([images])[0]]
    states = []
    for prefetch in (False, True):
        state = AtlasState.new(plan, opts.top)
        run_local(plan, state, state.add_images(paths), opts, lambda: None, None, prefetch=prefetch)
        states.append(state)
    a, b = states
    assert a.failed == b.failed and len(a.failed) == 1 and a.done.all() and b.done.all()
    for x, y in zip(a.tops, b.tops):
        for name in ("scores", "ids", "positions"):
            np.testing.assert_array_equal(getattr(x, name), getattr(y, name))


def test_unreadable_image_is_a_warning_and_a_count(model_path, images, tmp_path):
    (images / "broken.jpg").write_bytes(b"not a jpeg")
    result = runner.invoke(app, ["atlas", str(model_path), str(images), "-o", str(tmp_path / "a"), "--layers", "c1",
                                 "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    assert "warning: cannot read image" in result.output and "broken.jpg" in result.output
    assert "atlas of 33 images (34 new" in result.output and "1 unreadable" in result.output


def test_page_sheets_and_table_fit_together(model_path, images, tmp_path):
    out = tmp_path / "atlas"
    result = build_atlas(model_path, [images], out, AtlasOptions(top=5, provider="cpu", overlay=True))
    data = (out / "atlas-data.js").read_text()
    assert data.startswith("window.ATLAS = ")
    atlas = json.loads(data[len("window.ATLAS = "):].rstrip().rstrip(";"))
    assert [layer["name"] for layer in atlas["layers"]] == result.layers
    assert "<script src=\"atlas-data.js\"></script>" in (out / "index.html").read_text()
    import cv2

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


def test_default_layers_take_the_deepest_map_of_each_resolution():
    info = read_info(branchy_model())
    assert [layer.name for layer in default_layers(info)] == ["c1", "p1", "add", "c3", "gap"]


# ---------------------------------------------------------------- bad input

def invoke(*args):
    result = runner.invoke(app, ["atlas", *map(str, args)])
    return result.exit_code, result.output


def test_empty_dataset_and_folder_without_images(model_path, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no pictures here")
    code, out = invoke(model_path, empty, "-o", tmp_path / "a")
    assert code == 1
    assert out.strip().startswith(f"error: no images found (folder '{empty}' has no images (.bmp, .jpeg, .jpg")
    assert out.count("\n") == 1
    assert not (tmp_path / "a").exists()


def test_model_without_maps(tmp_path, images):
    path = tmp_path / "vectors.onnx"
    onnx.save(vectors_only_model(), path)
    code, out = invoke(path, images, "-o", tmp_path / "a")
    assert code == 1 and "has no 4-D feature maps, so there are no channels to collect" in out


def test_top_zero(model_path, images, tmp_path):
    code, out = invoke(model_path, images, "-o", tmp_path / "a", "--top", "0")
    assert code == 1 and "error: --top must be at least 1" in out
    assert not (tmp_path / "a").exists()


def test_output_is_a_file(model_path, images, tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("keep me")
    code, out = invoke(model_path, images, "-o", target)
    assert code == 1 and "is a file, not a folder" in out
    assert target.read_text() == "keep me"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root can write to read-only folders")
def test_output_read_only(model_path, images, tmp_path):
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o555)
    try:
        code, out = invoke(model_path, images, "-o", target)
    finally:
        target.chmod(0o755)
    assert code == 1 and "is not writable" in out


def test_output_read_only_refused_before_work(model_path, images, tmp_path, monkeypatch):
    """As root the permission bits do not stop writes, so ask os.access as a non-root user would be answered."""
    target = tmp_path / "ro"
    target.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == target and mode & os.W_OK
                        else real(p, mode, *a, **k))
    code, out = invoke(model_path, images, "-o", target)
    assert code == 1 and f"output folder '{target}' is not writable" in out


def test_resumed_with_other_options_is_refused(model_path, images, tmp_path):
    out_dir = tmp_path / "a"
    code, _ = invoke(model_path, images, "-o", out_dir, "--layers", "c1", "--top", "3", "--provider", "cpu")
    assert code == 0
    before = (out_dir / "atlas-state.npz").read_bytes()
    code, out = invoke(model_path, images, "-o", out_dir, "--layers", "c1", "--top", "4", "--provider", "cpu")
    assert code == 1
    assert "holds an atlas made with another model or options (it has --top 3, this run --top 4)" in out
    code, out = invoke(model_path, images, "-o", out_dir, "--layers", "p1", "--top", "3")
    assert code == 1 and "it has layers c1, this run layers p1" in out
    other = tmp_path / "other.onnx"
    onnx.save(branchy_model(seed=9), other)
    code, out = invoke(other, images, "-o", out_dir, "--layers", "c1", "--top", "3")
    assert code == 1 and "it has model sha256" in out
    assert (out_dir / "atlas-state.npz").read_bytes() == before


def test_ray_not_installed(model_path, images, tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from onnxviz.cli import app\n"
            f"app(['atlas', {str(model_path)!r}, {str(images)!r}, '-o', {str(tmp_path / 'a')!r}, '--engine', 'ray'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1
    assert proc.stderr.strip() == ('error: --engine ray needs Ray, which is not installed here: '
                                   'pip install "onnxviz[ray]"')


needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray not installed (pip install 'onnxviz[ray]')")


@needs_ray
def test_ray_address_that_does_not_answer_fails_within_seconds(model_path, images, tmp_path):
    import time

    from onnxviz.atlas.ray import check_ray

    code, out = invoke(model_path, images, "-o", tmp_path / "a", "--engine", "ray", "--ray-address", "127.0.0.1:9")
    assert code == 1
    assert "error: Ray address '127.0.0.1:9' does not answer (Connection refused)" in out
    assert "ray start --head" in out
    code, out = invoke(model_path, images, "-o", tmp_path / "a", "--engine", "ray", "--ray-address", "nonsense")
    assert code == 1 and "is not host:port" in out
    # a server that accepts the connection and never answers (as a firewall may): an error within 5 s
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        t = time.perf_counter()
        with pytest.raises(OnnxvizError, match=rf"Ray address 'ray://127\.0\.0\.1:{port}' does not answer "
                                               r"\(no answer within 5s\)"):
            check_ray(f"ray://127.0.0.1:{port}")
        assert time.perf_counter() - t < 8


@needs_ray
def test_ray_engine_gives_the_local_table(model_path, images, tmp_path):
    """Two local actors, a bounded run: the same table as --engine local, byte for byte."""
    local = tmp_path / "local"
    build_atlas(model_path, [images], local, AtlasOptions(layers=LAYERS, top=4, provider="cpu", batch_size=4))
    (images / "broken.png").write_bytes(b"\x89PNG broken")
    proc = subprocess.run(
        [sys.executable, "-m", "onnxviz", "atlas", str(model_path), str(images), "-o", str(tmp_path / "ray"),
         "--layers", "c1", "--layers", "p1", "--layers", "add", "--layers", "c3", "--top", "4",
         "--batch-size", "4", "--engine", "ray", "--workers", "2", "--provider", "cpu"],
        capture_output=True, text=True, timeout=240, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ran on cpu (ray)" in proc.stdout and "1 unreadable" in proc.stdout
    assert (tmp_path / "ray" / "atlas.jsonl").read_text() == (local / "atlas.jsonl").read_text()


def test_render_report_links_to_the_atlas(model_path, images, tmp_path):
    atlas_dir = tmp_path / "atlas"
    build_atlas(model_path, [images], atlas_dir, AtlasOptions(layers=["p1", "c3"], top=2, provider="cpu"))
    out = tmp_path / "render"
    result = runner.invoke(app, ["render", str(model_path), str(images / "img001.png"), "-o", str(out),
                                 "--atlas", str(atlas_dir), "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "img001" / "summary.json").read_text())
    assert summary["atlas"]["page"] == "../../atlas/index.html"
    links = {layer["name"]: layer.get("atlas") for layer in summary["layers"]}
    assert links["p1"] == "../../atlas/index.html#l=0" and links["c3"] == "../../atlas/index.html#l=1"
    assert links["c1"] is None
    page = (out / "img001" / "index.html").read_text()
    assert "href='../../atlas/index.html#l=1'>what its channels respond to</a>" in page
    bad = runner.invoke(app, ["render", str(model_path), str(images / "img001.png"), "-o", str(out),
                              "--atlas", str(tmp_path)])
    assert bad.exit_code == 1
    assert f"error: --atlas '{tmp_path}' holds no atlas (no readable atlas-data.js)" in bad.output


def test_option_errors_name_the_flag(model_path, images, tmp_path):
    for args, message in [(["--score", "median"], "error: --score 'median' is not valid; choose one of max, mean"),
                          (["--batch-size", "0"], "error: --batch-size must be at least 1, got 0"),
                          (["--engine", "spark"], "error: --engine 'spark' is not valid; choose one of local, ray"),
                          (["--engine", "ray", "--provider", "cuda"],
                           "error: --provider cuda with --engine ray needs a GPU per actor: add --worker-gpus 1"),
                          (["--layers", "zzz*"], "error: --layers 'zzz*' matches no layer of")]:
        code, out = invoke(model_path, images, "-o", tmp_path / "a", *args)
        assert code == 1 and out.startswith(message), (args, out)


def test_real_network_atlas_equals_brute_force(shared_data, tmp_path):
    """SqueezeNet 1.1 with its real weights over crops of the shared photos, default layers."""
    import cv2

    from onnxviz import export as export_onnx

    model = tmp_path / "squeezenet.onnx"
    export_onnx(shared_data / "onnx" / "squeezenet1.1.onnx", model, bgr=True)
    data = tmp_path / "crops"
    data.mkdir()
    rng = np.random.default_rng(4)
    photos = [load_image(p) for p in collect_images([shared_data / "images"])[0]]
    for i in range(24):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        s = int(rng.integers(min(h, w) // 4, min(h, w)))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        cv2.imwrite(str(data / f"crop{i:02d}.png"), photo[y:y + s, x:x + s, ::-1])
    out = tmp_path / "atlas"
    result = build_atlas(model, [data], out, AtlasOptions(top=5, provider="cpu"))
    info = read_info(onnx.load(model, load_external_data=False))
    assert result.layers == [layer.name for layer in default_layers(info)] and len(result.layers) >= 3
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    paths = collect_images([data])[0]
    maps = {name: [] for name in result.layers}
    for path in paths:
        rgb = resize_image(load_image(path), 224, 224)[None].astype(np.float32)
        for name, value in zip(result.layers, session.run(result.layers, {info.input_name: rgb})):
            maps[name].append(value[0])
    rows = table(out)
    k = 0
    for name in result.layers:
        stack = np.stack(maps[name])
        flat = stack.reshape(len(paths), stack.shape[1], -1)
        s, i, p = brute_top(flat.max(axis=2), flat.argmax(axis=2), np.arange(len(paths)), 5)
        for c in range(s.shape[0]):
            for r in range(5):
                row = rows[k]
                k += 1
                assert (row["layer"], row["channel"], row["rank"]) == (name, c, r)
                assert row["image"] == str(paths[i[c, r]].resolve()), (name, c, r)
                assert row["position"] == list(divmod(int(p[c, r]), stack.shape[3]))
                assert row["score"] == pytest.approx(float(s[c, r]), rel=1e-4, abs=1e-5)
    assert k == len(rows)
