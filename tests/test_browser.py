"""The report pages in a real Chromium (Debian's package, driven by Playwright), opened from file://.

Folders are built from known arrays (tests/report_folder.py), so what the pages show is compared with
the arrays: the value under the cursor, the order of the tiles, the colours of the static view.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from report_folder import build_image, example_layers, run_dict  # noqa: E402

from onnxviz.report import render_page as report  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


def find_chromium() -> str | None:
    """ONNXVIZ_CHROMIUM (CI sets it: then the browser must be there), else chromium on the PATH."""
    required = os.environ.get("ONNXVIZ_CHROMIUM")
    if required:
        assert Path(required).is_file(), f"ONNXVIZ_CHROMIUM={required} is not a file"
        return required
    for candidate in (shutil.which("chromium"), shutil.which("chromium-browser"), "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


CHROMIUM = find_chromium()
if os.environ.get("ONNXVIZ_CHROMIUM"):
    import playwright.sync_api as playwright_api  # CI: a missing Playwright is a failure, not a skip
else:
    playwright_api = pytest.importorskip("playwright.sync_api",
                                         reason="Playwright not installed (pip install -e '.[dev]')")
if CHROMIUM is None:
    pytest.skip("no Chromium found (apt-get install chromium, or set ONNXVIZ_CHROMIUM to its path)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A page with every console error, uncaught exception and failed file load recorded."""

    def __init__(self, browser, javascript: bool = True):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000}, java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.on("requestfailed", lambda r: self.errors.append(f"failed to load {r.url}"))
        self.page.on("request", lambda r: self.requests.append(r.url))

    def open(self, path: Path):
        self.page.goto(path.as_uri())
        self.page.wait_for_load_state("load")
        return self.page


@pytest.fixture
def open_page(browser):
    pages: list[Page] = []

    def make(path: Path, javascript: bool = True) -> Page:
        p = Page(browser, javascript)
        pages.append(p)
        p.open(path)
        return p

    yield make
    errors = [e for p in pages for e in p.errors]
    for p in pages:
        p.context.close()
    assert errors == [], f"the pages logged errors: {errors}"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    """A run of three images; one stores its channels sorted by max, one lives in a folder with a space
    and an accent in its name."""
    out = tmp_path_factory.mktemp("run")
    layers = {"chelsea": example_layers(0), "café au lait": example_layers(1, 2.0), "third": example_layers(2, 0.5)}
    summaries = [
        ("chelsea", build_image(out, "chelsea", "chelsea café #1.png", layers["chelsea"])),
        ("café au lait", build_image(out, "café au lait", "café au lait.jpg", layers["café au lait"], sort="max",
                                     max_channels=16)),
        ("third", build_image(out, "third", "third.png", layers["third"])),
    ]
    report.write_run(out, run_dict(summaries))
    return out, layers, dict(summaries)


def lut(colormap: str = "viridis") -> np.ndarray:
    return np.array(report._lut(colormap), dtype=int)


def wait_live(page, section: str):
    """Scroll a layer into view and wait until its tiles are drawn from the exact maps."""
    page.locator(section).scroll_into_view_if_needed()
    page.wait_for_function(
        "s => { const t = document.querySelectorAll(s + ' .tiles > i'); return t.length > 0 && "
        "[...t].every(f => f.querySelector('b.live canvas')); }", arg=section, timeout=10000)


def tile_order(page, section: str) -> list[int]:
    return page.eval_on_selector_all(f"{section} .tiles > i", "els => els.map(e => +e.dataset.ch)")


def tile(section: str, ch: int) -> str:
    """A drawn tile by its channel (the script notes data-ch on the tiles of the layers it draws)."""
    return f"{section} .tiles > i[data-ch='{ch}']"


def static_tile(section: str, layer: dict, ch: int) -> str:
    """A tile of a page without JavaScript, by its stored position."""
    return f"{section} .tiles > i:nth-child({layer['channels'].index(ch) + 1})"


def canvas_pixels(page, selector: str) -> np.ndarray:
    data = page.eval_on_selector(
        selector, "c => ({w: c.width, h: c.height, d: Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data)})")
    return np.array(data["d"], dtype=int).reshape(data["h"], data["w"], 4)[..., :3]


def test_image_page_draws_every_stored_channel_labelled_with_its_number_and_no_console_errors(run_folder, open_page):
    out, layers, summaries = run_folder
    page = open_page(out / "chelsea" / "index.html").page
    summary = summaries["chelsea"]
    for layer in summary["layers"]:
        section = f"#layer-{layer['index']:03d}"
        if layer["kind"] == "vector":
            assert page.locator(f"{section} svg.bars rect").count() == layer["shape"][0]
            continue
        wait_live(page, section)
        assert tile_order(page, section) == layer["channels"]
        captions = page.eval_on_selector_all(f"{section} .tiles > i", "els => els.map(e => e.textContent)")
        assert [re.match(r"\d+", c).group() for c in captions] == [str(c) for c in layer["channels"]]
    # the tiles' colours are the colormap of the stored 8-bit values (channel 6 of the first layer)
    conv = layers["chelsea"][0][2]
    ch = 6
    p = np.rint((conv[ch] - conv[ch].min()) / (conv[ch].max() - conv[ch].min()) * 255).astype(int)
    got = canvas_pixels(page, tile("#layer-000", ch) + " canvas")
    assert np.abs(got - lut()[p]).max() <= 1


def test_clicking_a_tile_shows_the_channel_and_the_value_under_the_cursor_matches_the_map(run_folder, open_page):
    out, layers, summaries = run_folder
    page = open_page(out / "chelsea" / "index.html").page
    conv = layers["chelsea"][0][2]
    ch = 6
    wait_live(page, "#layer-000")
    page.click(tile("#layer-000", ch))
    page.wait_for_selector("#viewer:not([hidden])")
    page.wait_for_function("() => document.querySelector('#v-readout').textContent.startsWith('move')")
    assert f"channel {ch}" in page.inner_text("#v-title")
    canvas = page.locator("#v-canvas")
    assert (canvas.evaluate("c => [c.width, c.height]")) == [20, 24]  # the native resolution
    box = canvas.bounding_box()
    assert box["width"] >= 20 * 10  # enlarged to be seen
    step = (conv[ch].max() - conv[ch].min()) / 255
    for x, y in [(0, 0), (19, 23), (7, 11), (13, 2), (3, 20)]:
        page.mouse.move(box["x"] + (x + 0.5) * box["width"] / 20, box["y"] + (y + 0.5) * box["height"] / 24)
        text = page.inner_text("#v-readout")
        m = re.search(r"channel (\d+) at x (\d+), y (\d+): (\S+)", text)
        assert m, text
        assert (int(m[1]), int(m[2]), int(m[3])) == (ch, x, y)
        assert abs(float(m[4]) - conv[ch, y, x]) <= step, (x, y, m[4], conv[ch, y, x])
    # keys: next channel, next layer, overlay, close
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('#v-title').textContent.includes('channel 7')")
    assert "constant 0.53" in page.inner_text("#v-stats")  # channel 7 is flat, and not called dead
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => document.querySelector('#v-title').textContent.includes('channel 4')")
    page.wait_for_function("() => document.querySelector('#v-stats').textContent.includes('dead for this image')")
    page.keyboard.press("ArrowDown")
    page.wait_for_function("() => document.querySelector('#v-title').textContent.startsWith('relu_2')")
    assert page.locator("#v-input").evaluate("e => getComputedStyle(e).visibility") == "hidden"
    page.keyboard.press("o")
    assert page.locator("#v-input").evaluate("e => getComputedStyle(e).visibility") == "visible"
    assert float(page.locator("#v-canvas").evaluate("e => getComputedStyle(e).opacity")) < 1
    page.keyboard.press("Escape")
    assert page.locator("#viewer").is_hidden()


def test_changing_the_sort_reorders_the_tiles_as_summary_json_says(run_folder, open_page):
    out, _, summaries = run_folder
    page = open_page(out / "chelsea" / "index.html").page
    layer = summaries["chelsea"]["layers"][1]  # 80 channels, 64 stored
    for sort in ("max", "mean", "index"):
        page.select_option("#sort", sort)
        score = dict(zip(layer["channels"], layer["channel_stats"][sort])) if sort != "index" else {}
        expected = sorted(layer["channels"], key=lambda c: (-score.get(c, 0), c))
        assert tile_order(page, "#layer-001") == expected
        if sort != "index":
            assert expected[0] == 5  # the channel made strongest
    page.select_option("#sort", "max")
    assert "chosen by index" in page.inner_text("#layer-001 .shown")  # 64 of 80 stored: says which


def test_per_layer_scale_recolours_the_tiles_on_the_layer_range(run_folder, open_page):
    out, layers, summaries = run_folder
    page = open_page(out / "chelsea" / "index.html").page
    wait_live(page, "#layer-000")
    page.select_option("#norm", "layer")
    conv = layers["chelsea"][0][2]
    lo, hi = float(conv.min()), float(conv.max())
    legend = page.inner_text("#layer-000 .legend")
    assert "one scale for every tile" in legend and report._num(lo) in legend and report._num(hi) in legend
    for ch in (0, 11):
        c = conv[ch]
        stored = c.min() + np.rint((c - c.min()) / (c.max() - c.min()) * 255) / 255 * (c.max() - c.min())
        expected = lut()[np.clip(np.rint((stored - lo) / (hi - lo) * 255), 0, 255).astype(int)]
        got = canvas_pixels(page, tile("#layer-000", ch) + " canvas")
        assert np.abs(got - expected).max() <= 1
    # channel 0 is 12x weaker than channel 11: on one scale it is darker on average
    assert canvas_pixels(page, tile("#layer-000", 0) + " canvas").sum() < \
        canvas_pixels(page, tile("#layer-000", 11) + " canvas").sum()


def test_without_javascript_the_static_grids_show_in_colour(run_folder, open_page):
    out, layers, summaries = run_folder
    p = open_page(out / "chelsea" / "index.html", javascript=False)
    page = p.page
    layer = summaries["chelsea"]["layers"][2]  # tiny: 6 x 3 x 3, enlarged
    tiles = page.locator("#layer-002 .tiles > i")
    assert tiles.count() == 6 and page.locator("#controls").is_hidden()
    shot = page.locator(static_tile("#layer-002", layer, 3) + " b").screenshot()
    import cv2

    img = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)
    small = layers["chelsea"][2][2][3]
    p8 = np.rint((small - small.min()) / (small.max() - small.min()) * 255).astype(int)
    h, w = img.shape[:2]
    for y in range(3):
        for x in range(3):
            got = img[int((y + 0.5) * h / 3), int((x + 0.5) * w / 3)]
            assert np.abs(got - lut()[p8[y, x]]).max() <= 3, (x, y, got, lut()[p8[y, x]])
    assert "static" not in "".join(p.errors)


def test_run_page_lists_every_image_and_compares_one_channel_on_one_scale(run_folder, open_page):
    out, layers, summaries = run_folder
    page = open_page(out / "index.html").page
    cards = page.locator(".gallery .card")
    assert cards.count() == 3
    assert "tabby cat" in cards.nth(0).inner_text() and "71.0%" in cards.nth(0).inner_text()
    page.wait_for_selector("#compare[data-ready]")
    page.select_option("#cmp-layer", "0")
    page.fill("#cmp-channel", "6")
    page.dispatch_event("#cmp-channel", "change")
    page.wait_for_function("() => document.querySelectorAll('#cmp-tiles .cmp-tile').length === 3 && "
                           "document.querySelector('#compare').dataset.ready")
    figs = page.locator("#cmp-tiles .cmp-tile")
    assert figs.count() == 3
    names = [figs.nth(i).locator("figcaption").inner_text().split("\n")[0] for i in range(3)]
    assert names == ["chelsea café #1.png", "café au lait.jpg", "third.png"]
    maps = [layers[k][0][2][6] for k in ("chelsea", "café au lait", "third")]
    lo, hi = min(float(m.min()) for m in maps), max(float(m.max()) for m in maps)
    assert f"one scale for these 3 images, {report._num(lo)} .. {report._num(hi)}" in page.inner_text("#cmp-legend")
    for i, m in enumerate(maps):
        stored = m.min() + np.rint((m - m.min()) / (m.max() - m.min()) * 255) / 255 * (m.max() - m.min())
        expected = lut()[np.clip(np.rint((stored - lo) / (hi - lo) * 255), 0, 255).astype(int)]
        got = canvas_pixels(page, f"#cmp-tiles .cmp-tile:nth-child({i + 1}) canvas")
        assert np.abs(got - expected).max() <= 1
    # a channel one image did not store (it kept its 16 strongest of 80) is said so, still one tile per image
    missing = min(set(range(64)) - set(summaries["café au lait"]["layers"][1]["channels"]))
    page.select_option("#cmp-layer", "1")
    page.fill("#cmp-channel", str(missing))
    page.dispatch_event("#cmp-channel", "change")
    page.wait_for_function("() => document.querySelectorAll('#cmp-tiles .cmp-tile').length === 3 && "
                           "document.querySelectorAll('#cmp-tiles canvas').length === 2")
    assert "not stored for this image" in figs.nth(1).inner_text()
    # a vector layer: one bar per image, on one scale
    page.select_option("#cmp-layer", "3")
    page.wait_for_function("() => document.querySelectorAll('#cmp-tiles .cmp-tile canvas').length === 3")
    assert "value" in figs.nth(0).inner_text()


def test_run_page_of_one_image_has_no_compare_view_and_no_errors(tmp_path, open_page):
    s = build_image(tmp_path, "only", "only.png", example_layers(0))
    report.write_run(tmp_path, run_dict([("only", s)]))
    page = open_page(tmp_path / "index.html").page
    assert page.locator(".gallery .card").count() == 1
    assert page.locator("#compare").count() == 0


def test_run_page_of_1000_images_loads_fast_and_compares_them_a_page_at_a_time(tmp_path, open_page):
    rng = np.random.default_rng(3)
    first = None
    images = []
    for n in range(1000):
        folder = f"img{n:04d}"
        maps = rng.normal(0, 1, (4, 6, 6)).astype(np.float32)
        s = build_image(tmp_path, folder, f"photo {n}.jpg", [("conv", "Conv2D", maps)], filters=False,
                        input_rgb=rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        images.append((folder, s))
        first = first or s
    report.write_run(tmp_path, run_dict(images))
    started = time.perf_counter()
    pg = open_page(tmp_path / "index.html")
    page = pg.page
    page.wait_for_function("() => document.querySelectorAll('#cmp-tiles canvas').length === 24", timeout=20000)
    seconds = time.perf_counter() - started
    assert page.locator(".gallery .card").count() == 1000
    assert seconds < 10, f"the run page took {seconds:.1f} s to show its first compare page"
    summaries = [u for u in pg.requests if u.endswith("/summary.js")]
    assert len(summaries) == 24  # only the page shown is read
    thumbs = [u for u in pg.requests if u.endswith("/input.png")]
    assert len(thumbs) < 200  # thumbnails load lazily, as they come into view
    assert "images 1-24 of 1000" in page.inner_text("#cmp-range")
    page.click("#cmp-next")
    page.wait_for_function("() => document.querySelector('#cmp-range').textContent.startsWith('images 25-48') && "
                           "document.querySelectorAll('#cmp-tiles canvas.drawn, #cmp-tiles .drawn canvas').length === 24",
                           timeout=20000)


def test_image_viewer_links_to_the_same_channel_compared_across_the_run(run_folder, open_page):
    out, _, summaries = run_folder
    page = open_page(out / "chelsea" / "index.html").page
    wait_live(page, "#layer-001")
    page.click(tile("#layer-001", 5))
    page.wait_for_function("() => document.querySelector('#v-compare').href.endsWith('#compare=1:5')")
    page.click("#v-compare")
    page.wait_for_function("() => document.querySelector('#compare') && document.querySelector('#compare').dataset.ready "
                           "&& document.querySelectorAll('#cmp-tiles canvas').length === 3")
    assert page.input_value("#cmp-channel") == "5" and page.input_value("#cmp-layer") == "1"
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.querySelector('#cmp-channel').value === '6' && "
                           "document.querySelector('#cmp-legend').textContent.includes('channel 6 of relu_2')")
    for _ in range(4):  # quicker than the maps load: the last channel asked for is the one drawn
        page.keyboard.press("ArrowRight")
    stored = sum(10 in s["layers"][1]["channels"] for s in summaries.values())
    page.wait_for_function("n => document.querySelector('#cmp-legend').textContent.includes('channel 10 of relu_2') && "
                           "document.querySelectorAll('#cmp-tiles .cmp-tile.drawn').length === n && "
                           "document.querySelectorAll('#cmp-tiles .cmp-tile').length === 3", arg=stored)


# ------------------------------------------------------------------------------------------------
# Pages of real renders: the value under the cursor against ONNX Runtime's own output


def tiny_model_file(path: Path) -> Path:
    """NHWC RGB 0..255 -> Conv(5, 3x3) -> Relu -> GlobalAveragePool: two maps and a 1x1 vector."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from onnxviz.model.info import KERAS_MODES, LayerInfo, ModelInfo, write_info

    size, rng = 12, np.random.default_rng(5)
    w = rng.normal(0, 0.5, (5, 3, 3, 3)).astype(np.float32)
    w[2] = 0  # with a zero bias: a channel that is zero everywhere
    b = np.array([0.1, -0.2, 0.0, 0.3, 0.05], np.float32)
    nodes = [helper.make_node("Mul", ["image", "k"], ["scaled"]),
             helper.make_node("Transpose", ["scaled"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["relu"]),
             helper.make_node("GlobalAveragePool", ["relu"], ["gap"])]
    inits = [numpy_helper.from_array(np.array(1 / 255, np.float32), "k"), numpy_helper.from_array(w, "W"),
             numpy_helper.from_array(b, "B")]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 5, s, s])
            for n, s in (("conv", size), ("relu", size), ("gap", 1))]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            ["N", size, size, 3])], outs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    write_info(model, ModelInfo(
        input_name="image", height=size, width=size,
        layers=[LayerInfo("conv", "Conv2D", [None, 5, size, size], "NCHW"),
                LayerInfo("relu", "ReLU", [None, 5, size, size], "NCHW"),
                LayerInfo("gap", "GlobalAveragePooling2D", [None, 5, 1, 1], "NCHW")],
        preprocessing=KERAS_MODES["none"], source="tiny", version="test"))
    onnx.save(model, path)
    return path


def render_cli(model: Path, images: list[Path], out: Path, *options: str) -> None:
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "onnxviz", "render", str(model), *map(str, images), "-o", str(out),
                           *options],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]


def ort_maps(model: Path, folder: Path) -> dict[str, np.ndarray]:
    """Every output of `model` for the exact pixels the render fed it (input.png), by ONNX Runtime."""
    import cv2
    import onnxruntime as ort

    rgb = cv2.imread(str(folder / "input.png"), cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, (v[0] for v in session.run(names, {session.get_inputs()[0].name: rgb[None]}))))


def check_values_under_cursor(page, summary: dict, layer_name: str, truth: np.ndarray, channels: list[int]):
    layer = next(x for x in summary["layers"] if x["name"] == layer_name)
    digits = max(3, len(str(max(x["index"] for x in summary["layers"]))))
    section = f"#layer-{layer['index']:0{digits}d}"
    h, w = layer["tile"]
    for ch in channels:
        wait_live(page, section)
        page.click(tile(section, ch))
        page.wait_for_function(f"() => document.querySelector('#v-title').textContent.includes('channel {ch} ') && "
                               "document.querySelector('#v-readout').textContent.startsWith('move')")
        box = page.locator("#v-canvas").bounding_box()
        k = layer["channels"].index(ch)
        # one 8-bit step (the page shows 7 significant digits)
        step = (layer["high"][k] - layer["low"][k]) / 255 + 1e-6 * max(abs(layer["low"][k]), abs(layer["high"][k]))
        for x, y in [(0, 0), (w - 1, h - 1), (w // 2, h // 3), (w // 5, h - 2)]:
            page.mouse.move(box["x"] + (x + 0.5) * box["width"] / w, box["y"] + (y + 0.5) * box["height"] / h)
            m = re.search(r"channel (\d+) at x (\d+), y (\d+): (\S+)", page.inner_text("#v-readout"))
            assert m and (int(m[1]), int(m[2]), int(m[3])) == (ch, x, y), page.inner_text("#v-readout")
            assert abs(float(m[4]) - truth[ch, y, x]) <= step, (layer_name, ch, x, y, m[4], truth[ch, y, x])
        page.keyboard.press("Escape")


@pytest.mark.parametrize("norm", ["channel", "layer"])
def test_a_real_render_shows_onnx_runtime_values_under_the_cursor(tmp_path, open_page, norm):
    import cv2
    import json

    model = tiny_model_file(tmp_path / "tiny.onnx")
    photos = []
    for n, name in enumerate(["a photo.png", "ünïcode #2.png"]):
        photos.append(tmp_path / name)
        cv2.imwrite(str(photos[-1]), np.random.default_rng(n).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    out = tmp_path / "out"
    render_cli(model, photos, out, "--norm", norm)
    run = json.loads((out / "run.json").read_text())
    assert [i["image_name"] for i in run["images"]] == ["a photo.png", "ünïcode #2.png"]
    folder = out / run["images"][1]["folder"]
    summary = json.loads((folder / "summary.json").read_text())
    truth = ort_maps(model, folder)
    page = open_page(folder / "index.html").page
    check_values_under_cursor(page, summary, "conv", truth["conv"], [0, 3])
    check_values_under_cursor(page, summary, "relu", truth["relu"], [1])
    relu = next(x for x in summary["layers"] if x["name"] == "relu")
    dead = int(sum(not truth["relu"][c].any() for c in range(5)))
    assert dead >= 1 and not truth["relu"][2].any()  # channel 2 has no weights and no bias
    assert f"{dead} of 5 channels are zero everywhere for this image" in page.inner_text(f"#layer-{relu['index']:03d} .meta")
    dead_tiles = page.eval_on_selector_all(f"#layer-{relu['index']:03d} .tiles > i.dead", "els => els.map(e => +e.dataset.ch)")
    assert dead_tiles == [c for c in range(5) if not truth["relu"][c].any()]
    gap = next(x for x in summary["layers"] if x["name"] == "gap")
    assert gap["kind"] == "vector" and page.locator(f"#layer-{gap['index']:03d} svg.bars rect").count() == 5
    run_page = open_page(out / "index.html").page
    run_page.wait_for_function("() => document.querySelectorAll('#cmp-tiles .cmp-tile canvas').length === 2")


def test_a_real_mobilenet_report_matches_onnx_runtime_and_logs_no_errors(mobilenet_onnx, shared_data, tmp_path, open_page):
    import json

    model, _ = mobilenet_onnx
    out = tmp_path / "out"
    render_cli(model, [shared_data / "images" / "chelsea.png", shared_data / "images" / "coffee.png"], out)
    folder = out / "coffee"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["predictions"][0]["label"] == "espresso"
    truth = ort_maps(model, folder)
    page = open_page(folder / "index.html").page
    assert "espresso" in page.inner_text("table.preds")
    for name, channels in (("conv1", [0, 5]), ("conv_pw_13_relu", [3])):
        check_values_under_cursor(page, summary, name, truth[name], channels)
    page.select_option("#sort", "max")
    layer = next(x for x in summary["layers"] if x["name"] == "conv_pw_5_relu")
    score = dict(zip(layer["channels"], layer["channel_stats"]["max"]))  # aligned with the stored channels
    expected = sorted(layer["channels"], key=lambda c: (-score[c], c))
    assert tile_order(page, f"#layer-{layer['index']:03d}") == expected
    pooled = next(x for x in summary["layers"] if x["name"] == "global_average_pooling2d")
    dead = sum(1 for v in truth["global_average_pooling2d"].ravel() if v == 0)
    text = page.inner_text(f"#layer-{pooled['index']:03d} .meta")
    assert (f"{dead} of 256 channels are 0 for this image" in text) if dead else ("no channel is zero" in text)
    run_page = open_page(out / "index.html").page
    run_page.wait_for_function("() => document.querySelectorAll('#cmp-tiles .cmp-tile canvas').length === 2")


def test_a_layer_with_thousands_of_channels_shows_them_all(tmp_path, open_page):
    rng = np.random.default_rng(9)
    wide = np.maximum(rng.normal(0, 1, (2048, 7, 7)), 0).astype(np.float32)
    logits = rng.normal(0, 1, 4096).astype(np.float32)
    s = build_image(tmp_path, "wide", "wide.png", [("block5", "Conv2D", wide), ("fc", "Dense", logits)],
                    max_channels=None)
    page = open_page(tmp_path / "wide" / "index.html").page
    assert page.locator("#layer-000 .tiles > i").count() == 2048
    wait_live(page, "#layer-000")
    assert tile_order(page, "#layer-000") == list(range(2048))
    width = page.locator("#layer-000 .tiles > i canvas").first.bounding_box()["width"]
    assert 90 <= width <= 110  # smaller tiles when there are thousands, still enlarged from 7 px
    page.select_option("#sort", "max")
    stats = s["layers"][0]["channel_stats"]["max"]  # all 2048 stored, in channel order
    assert tile_order(page, "#layer-000")[:5] == sorted(range(2048), key=lambda c: (-stats[c], c))[:5]
    assert page.locator("#layer-001 svg.bars rect").count() == 4096


def test_a_render_scaled_per_layer_shows_per_channel_views_and_states_from_the_channel_statistics(tmp_path, open_page):
    layers = example_layers(4)
    build_image(tmp_path, "lay", "lay.png", layers, norm="layer")
    conv = layers[0][2]
    page = open_page(tmp_path / "lay" / "index.html").page
    assert "one scale for every tile of this layer" in page.inner_text("#layer-000 .legend")
    wait_live(page, "#layer-000")
    assert page.eval_on_selector_all("#layer-000 .tiles > i.dead", "els => els.map(e => +e.dataset.ch)") == [4]
    assert page.eval_on_selector_all("#layer-000 .tiles > i.flat", "els => els.map(e => +e.dataset.ch)") == [7]
    page.select_option("#norm", "channel")
    wait_live(page, "#layer-000")
    assert "each tile scaled to its own min..max" in page.inner_text("#layer-000 .legend")
    lo, hi = float(conv.min()), float(conv.max())
    c = conv[0]  # the weakest channel: a few gray levels of the layer's scale, stretched to its own range
    stored = lo + np.rint((c - lo) / (hi - lo) * 255) / 255 * (hi - lo)
    expected = lut()[np.clip(np.rint((stored - c.min()) / (c.max() - c.min()) * 255), 0, 255).astype(int)]
    got = canvas_pixels(page, tile("#layer-000", 0) + " canvas")
    assert np.abs(got - expected).max() <= 1
    page.click(tile("#layer-000", 0))
    page.wait_for_function("() => document.querySelector('#v-readout').textContent.startsWith('move')")
    assert f"min {report._num(float(c.min()))} max {report._num(float(c.max()))}" in page.inner_text("#v-stats")
    box = page.locator("#v-canvas").bounding_box()
    page.mouse.move(box["x"] + 5.5 * box["width"] / 20, box["y"] + 9.5 * box["height"] / 24)
    m = re.search(r"at x 5, y 9: (\S+)", page.inner_text("#v-readout"))
    assert m and abs(float(m[1]) - c[9, 5]) <= (hi - lo) / 255 / 2 + 1e-6


def test_a_model_of_vectors_only_has_bar_charts_and_no_errors(tmp_path, open_page):
    rng = np.random.default_rng(2)
    build_image(tmp_path, "v", "v.png", [("logits", "Dense", rng.normal(0, 1, 10).astype(np.float32))], filters=False)
    page = open_page(tmp_path / "v" / "index.html").page
    assert page.locator("svg.bars rect").count() == 10 and page.locator(".tiles > i").count() == 0


def test_without_javascript_each_tile_shows_its_own_channel_from_the_shared_stylesheet(tmp_path, open_page):
    """conv and relu share one stylesheet: each static tile must show its own layer's channel,
    exactly (the stylesheet holds the lossless PNG), coloured, not another layer's or channel's."""
    import cv2
    import json

    from report_folder import decode_layer_css

    model = tiny_model_file(tmp_path / "tiny.onnx")
    cv2.imwrite(str(tmp_path / "p.png"), np.random.default_rng(3).integers(0, 256, (30, 40, 3), dtype=np.uint8))
    out = tmp_path / "out"
    render_cli(model, [tmp_path / "p.png"], out)
    folder = out / "p"
    summary = json.loads((folder / "summary.json").read_text())
    conv, relu = (next(x for x in summary["layers"] if x["name"] == n) for n in ("conv", "relu"))
    assert conv["data"] == relu["data"]
    sprites = decode_layer_css((folder / relu["data"]).read_bytes())
    page = open_page(folder / "index.html", javascript=False).page
    def tile_of(layer, k):
        h, w = layer["tile"]
        r, c = divmod(k, layer["columns"])
        return sprites[layer["index"]][r * h:(r + 1) * h, c * w:(c + 1) * w]

    for layer in (relu, conv):
        h, w = layer["tile"]
        k = max(range(len(layer["channels"])), key=lambda j: tile_of(layer, j).std())  # the most varied channel
        ch = layer["channels"][k]
        exact = tile_of(layer, k)
        shot = page.locator(static_tile(f"#layer-{layer['index']:03d}", layer, ch) + " b").screenshot()
        img = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)[..., ::-1].astype(int)
        sh, sw = img.shape[:2]
        got = np.array([[img[int((y + 0.5) * sh / h), int((x + 0.5) * sw / w)] for x in range(w)] for y in range(h)])
        want = lut()[exact]
        # the exact sprite, through the colormap: its own channel, far from the others
        error = np.abs(got - want).mean()
        others = [np.abs(got - lut()[tile_of(other, j)]).mean() for other in (relu, conv)
                  for j in range(len(other["channels"])) if np.abs(tile_of(other, j).astype(int) - exact).mean() > 20]
        assert len(others) >= 4 and error < 2 and error < min(others) / 10, (layer["name"], ch, error, min(others))


def test_a_missing_maps_stylesheet_is_said_on_its_layer_and_the_other_layers_still_draw(tmp_path, open_page):
    rng = np.random.default_rng(4)
    maps = [("a", "Conv2D", rng.normal(0, 1, (6, 9, 9)).astype(np.float32)),
            ("b", "Conv2D", rng.normal(0, 1, (6, 9, 9)).astype(np.float32))]
    s = build_image(tmp_path, "m", "m.png", maps, filters=False)
    (tmp_path / "m" / s["layers"][0]["data"]).unlink()
    p = open_page(tmp_path / "m" / "index.html")
    page = p.page
    wait_live(page, "#layer-001")
    page.locator("#layer-000").scroll_into_view_if_needed()
    warning = page.locator("#layer-000 p.warn")
    warning.wait_for(timeout=10000)
    assert "The exact maps could not be read (cannot read maps/000.a.css)" in warning.inner_text()
    assert page.locator("#layer-000 b.live").count() == 0
    # the browser's own lines for the missing file, and nothing else
    assert p.errors and all("000.a.css" in e or "ERR_FILE_NOT_FOUND" in e for e in p.errors), p.errors
    p.errors.clear()


# ---------------------------------------------------------------- the atlas's page

@pytest.fixture(scope="module")
def atlas_folder(tmp_path_factory):
    """An atlas with overlays of the tiny branchy model over 12 images and a broken one, and a render
    of one image whose report links to it."""
    import json

    import onnx
    from atlas_models import branchy_model, write_images

    from onnxviz.atlas.options import AtlasOptions
    from onnxviz.atlas.pipeline import build_atlas
    from onnxviz.render.options import RenderOptions
    from onnxviz.render.pipeline import render

    root = tmp_path_factory.mktemp("atlas")
    onnx.save(branchy_model(), root / "branchy.onnx")
    write_images(root / "data", 12, seed=1, constant=1)
    (root / "data" / "broken.jpg").write_bytes(b"not a jpeg")
    build_atlas(root / "branchy.onnx", [root / "data"], root / "atlas",
                AtlasOptions(top=3, provider="cpu", overlay=True))
    render(root / "branchy.onnx", [root / "data" / "img001.png"], root / "render",
           RenderOptions(provider="cpu", atlas=root / "atlas"))
    text = (root / "atlas" / "atlas-data.js").read_text()
    return root, json.loads(text[len("window.ATLAS = "):].rstrip().rstrip(";"))


def atlas_tiles(page) -> list[dict]:
    return page.eval_on_selector_all(".grid a.ch", "els => els.map(a => ({href: a.getAttribute('href'), "
                                     "text: a.innerText, image: a.querySelector('.t').style.backgroundImage}))")


def test_atlas_page_shows_each_layers_channels_by_their_best_crop(atlas_folder, open_page):
    root, data = atlas_folder
    p = open_page(root / "atlas" / "index.html")
    page = p.page
    assert page.title() == f"{data['title']} - onnxviz"
    assert page.inner_text("#title") == data["title"]
    channels = sum(layer["channels"] for layer in data["layers"])
    assert page.inner_text("#sub").startswith(f"{data['image_count']} images (1 unreadable) \u00b7 "
                                              f"{len(data['layers'])} layers \u00b7 {channels} channels \u00b7 top 3 by "
                                              f"spatial max")
    nav = page.eval_on_selector_all("#nav a", "els => els.map(a => [a.getAttribute('href'), a.className])")
    assert nav == [[f"#l={i}", "on" if i == 0 else ""] for i in range(len(data["layers"]))]
    layer = data["layers"][0]
    tiles = atlas_tiles(page)
    assert [t["href"] for t in tiles] == [f"#l=0&c={c}" for c in range(layer["channels"])]
    # made with --overlay: the overlay sheets shown until the box is unticked, then the crops
    assert all(layer["overlays"][0] in t["image"] for t in tiles)
    page.uncheck("#ov")
    assert all(layer["sheets"][0] in t["image"] and ".overlay." not in t["image"] for t in atlas_tiles(page))
    # by top score: the channels in the order of their best score, ties by number
    page.select_option("#order", "score")
    best = [layer["scores"][c * 3] for c in range(layer["channels"])]
    want = sorted(range(layer["channels"]), key=lambda c: (-best[c], c))
    assert [t["href"] for t in atlas_tiles(page)] == [f"#l=0&c={c}" for c in want]
    # every sheet the page shows was loaded
    for name in layer["sheets"] + layer["overlays"]:
        assert any(r.endswith(name) for r in p.requests), name


def test_atlas_channel_page_shows_its_top_images_and_walks_the_channels(atlas_folder, open_page):
    root, data = atlas_folder
    li = 1
    layer = data["layers"][li]
    page = open_page(root / "atlas" / "index.html").page
    page.click(f"#nav a[href='#l={li}']")
    page.wait_for_function("() => location.hash === '#l=1'")
    c = 2
    page.click(f".grid a.ch[href='#l={li}&c={c}']")
    page.wait_for_function("() => document.querySelector('#main h2').textContent.includes('channel 2')")
    assert page.inner_text("#main h2") == f"{layer['name']}, channel {c}"
    figures = page.eval_on_selector_all(".ex figure", "els => els.map(f => f.querySelector('a').getAttribute('href'))")
    ids = [i for i in layer["ids"][c * 3:(c + 1) * 3] if i >= 0]
    assert figures and figures == [data["images"][i] for i in ids]
    for href in figures:  # the examples link to the images themselves
        assert (root / "atlas" / href).resolve().is_file()
    page.click(f"button:has-text('channel {c + 1}')")
    page.wait_for_function("() => location.hash === '#l=1&c=3'")
    assert page.inner_text("#main h2") == f"{layer['name']}, channel {c + 1}"
    page.click("button:has-text('all')")
    page.wait_for_function("() => location.hash === '#l=1'")
    assert len(atlas_tiles(page)) == layer["channels"]


def test_render_report_links_open_the_atlas_at_their_layer(atlas_folder, open_page):
    root, data = atlas_folder
    page = open_page(root / "render" / "img001" / "index.html").page
    links = page.eval_on_selector_all("a", "els => els.map(a => a.getAttribute('href')).filter(h => h.includes('atlas'))")
    by_layer = {layer["name"]: i for i, layer in enumerate(data["layers"])}
    layer_links = [h for h in links if "#l=" in h]
    assert layer_links and "../../atlas/index.html" in links
    href = layer_links[-1]
    page.goto((root / "render" / "img001" / href.split("#")[0]).resolve().as_uri() + "#" + href.split("#")[1])
    page.wait_for_load_state("load")
    shown = int(href.split("#l=")[1])
    assert page.inner_text("#main h2").startswith(data["layers"][shown]["name"])
    assert shown in by_layer.values()


def test_a_layer_jumped_to_shows_its_heading_below_the_sticky_bar_and_the_run_groups_folders(open_page, tmp_path):
    from onnxviz.render.demo import MODEL
    from onnxviz.render.options import RenderOptions
    from onnxviz.render.pipeline import render

    data = tmp_path / "data"
    for group, seed in (("cats", 0), ("cups", 1)):
        (data / group).mkdir(parents=True)
        cv2.imwrite(str(data / group / "a.png"), np.random.default_rng(seed).integers(0, 256, (96, 96, 3), np.uint8))
    render(MODEL, [data], tmp_path / "out", RenderOptions())
    run = open_page(tmp_path / "out" / "index.html").page
    assert run.eval_on_selector_all("section.group h3", "els => els.map(e => e.firstChild.textContent.trim())") == \
        ["cats", "cups"]
    run.wait_for_function("document.querySelectorAll('#cmp-tiles figcaption').length == 2")
    captions = run.eval_on_selector_all("#cmp-tiles figcaption", "els => els.map(e => e.firstChild.textContent)")
    assert captions == ["cats/a.png", "cups/a.png"]  # two a.png told apart by their folder
    page = open_page(tmp_path / "out" / "cats--a" / "index.html").page
    page.evaluate("() => { location.hash = 'layer-030'; }")
    page.wait_for_timeout(300)
    heading, bar = page.evaluate("() => [document.querySelector('#layer-030 h2').getBoundingClientRect().top, "
                                 "document.querySelector('#controls').getBoundingClientRect().bottom]")
    assert bar > 0 and heading >= bar  # the heading is not under the bar


def test_atlas_channel_page_counts_its_top_images_by_folder(open_page, tmp_path):
    from typer.testing import CliRunner

    from onnxviz.cli import app
    from onnxviz.render.demo import MODEL

    data = tmp_path / "data"
    for group, seeds in (("cats", (0, 1)), ("cups", (2,))):
        (data / group).mkdir(parents=True)
        for seed in seeds:
            cv2.imwrite(str(data / group / f"{seed}.png"),
                        np.random.default_rng(seed).integers(0, 256, (96, 96, 3), np.uint8))
    result = CliRunner().invoke(app, ["atlas", str(MODEL), str(data), "-o", str(tmp_path / "atlas"), "--top", "3",
                                      "--layers", "conv_pw_1_relu", "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    page = open_page(tmp_path / "atlas" / "index.html").page
    page.evaluate("() => { location.hash = 'l=0&c=0'; }")
    page.wait_for_selector("#by-folder")
    assert page.inner_text("#by-folder") == "By folder: cats 2, cups 1"
    captions = page.eval_on_selector_all(".ex figcaption a", "els => els.map(e => e.textContent)")
    assert sorted(captions) == ["cats/0.png", "cats/1.png", "cups/2.png"]
