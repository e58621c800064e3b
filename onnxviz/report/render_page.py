"""The pages of a render: one per image (`OUT/<image>/index.html`) and one per run (`OUT/index.html`).

Everything comes from the summary dict (format 5, see `onnxviz/store.py`) that render builds, and from
the files it names; this module never computes a feature map. Each page works from `file://` with no
server and no network:

- Without JavaScript the HTML alone shows every stored channel as a labelled tile (a window on the
  layer's exact grayscale sprite, a PNG inside the stylesheet `maps/NNN-MMM.css` that the page links,
  coloured by an inline SVG filter), a legend per layer, vectors as bar charts, the predictions and
  the first-layer filters.
- With JavaScript (`assets/onnxviz.js`, copied beside the image folders) the page reads the same
  8-bit maps back from those stylesheets, and lets a person sort and renormalise the tiles, open a
  channel at full resolution over the input image with the value under the cursor, and, on the run
  page, compare one channel across all images on one scale.
"""
from __future__ import annotations

import functools
import html
import math
import re
import struct
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson

from onnxviz.report import explain_page
from onnxviz.files import ensure_dir, write_bytes, write_text

ASSETS_DIR = "assets"
# The files of onnxviz/report/assets/ that are copied to OUT/assets/.
ASSET_FILES = ("onnxviz.js",)
CSS_FILE = "onnxviz.css"  # inlined into every page, so that the static view needs no other file

# On-screen tile size: small maps are enlarged by an integer factor to about this many pixels on
# their long side, big ones shown smaller (a click opens them at full resolution).
TILE_TARGET = 144
TILE_TARGET_MANY = 96  # when a layer stores more than MANY_TILES channels
MANY_TILES = 256
TILE_MAX = 176
# The input image and the first-layer filters are shown at least this wide.
INPUT_MIN_SIDE = 256
FILTERS_MIN_WIDTH = 384
VECTOR_TOP = 5  # vector channels named on the bar chart
NAV_OPEN_UP_TO = 60  # the list of layers starts folded when there are more


@dataclass
class ReportFiles:
    """What `write_report` wrote for one image."""

    summary_json: Path
    summary_js: Path
    html: Path


@dataclass
class RunFiles:
    """What `write_run` wrote for a run."""

    run_json: Path
    run_js: Path
    html: Path
    assets: Path


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _url(path: str) -> str:
    """A relative file path as a URL path (spaces, '#', '?' and non-ASCII names survive), for HTML."""
    return _esc(quote(str(path).replace("\\", "/"), safe="/"))


def _kind(layer: dict[str, Any]) -> str:
    """`Conv`, or for a PyTorch module `BatchNorm2d, ONNX Conv: conv2 + bn2 (folded by the exporter)`."""
    cls, folded = layer.get("class") or "", layer.get("folded") or []
    if not cls and not folded:
        return str(layer.get("op", ""))
    text = f"{cls}, ONNX {layer.get('op', '')}" if cls else f"ONNX {layer.get('op', '')}"
    if folded:
        short = [name.rsplit(".", 1)[-1] for name in folded]
        own = layer["name"].split("#")[0].removesuffix("+bn").rsplit(".", 1)[-1]
        parts = short + ([own] if own not in short else ["bn"])
        text += f": {' + '.join(parts)} (folded by the exporter)"
    return text


def _num(x: float | None) -> str:
    """A value as a person reads it: 4 significant digits, no exponent for everyday magnitudes."""
    if x is None:
        return "-"
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e5:
        text = f"{x:.4g}"
        return text if "e" not in text else f"{x:.1f}"
    return f"{x:.3e}"


def _pad(summary: dict[str, Any]) -> int:
    return max([3] + [len(str(layer["index"])) for layer in summary["layers"]])


def _lut(colormap: str) -> list[tuple[int, int, int]]:
    """The colormap as 256 RGB triples, exactly as `tiling.colorize` applies it."""
    import numpy as np

    from onnxviz.picture.tiling import COLORMAPS, colorize

    if colormap not in COLORMAPS:
        colormap = next(iter(COLORMAPS))
    bgr = colorize(np.arange(256, dtype=np.uint8)[None, :], colormap)[0]
    return [(int(b[2]), int(b[1]), int(b[0])) for b in bgr]


def _svg_colormap(lut: list[tuple[int, int, int]]) -> str:
    """An SVG filter that colours a grayscale picture with `lut` (CSS `filter: url(#cmap)`)."""
    funcs = "".join(
        f"<feFunc{c} type=table tableValues='{' '.join(f'{rgb[i] / 255:.4f}'.rstrip('0').rstrip('.') or '0' for rgb in lut)}'/>"
        for i, c in enumerate("RGB"))
    return ("<svg class=defs width=0 height=0 aria-hidden=true><filter id=cmap color-interpolation-filters=sRGB>"
            f"<feComponentTransfer>{funcs}</feComponentTransfer></filter></svg>")


def _gradient(lut: list[tuple[int, int, int]], stops: int = 17) -> str:
    colours = [lut[round(i * 255 / (stops - 1))] for i in range(stops)]
    return "linear-gradient(to right," + ",".join(f"#{r:02x}{g:02x}{b:02x}" for r, g, b in colours) + ")"


def _css() -> str:
    return resources.files("onnxviz.report.assets").joinpath(CSS_FILE).read_text(encoding="utf-8")


def _png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG header; None when the file is missing or not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError:
        return None
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


def tile_display(height: int, width: int, count: int) -> tuple[int, int, bool]:
    """On-screen (width, height) of one tile and whether it is enlarged (drawn with square pixels).

    Small maps grow by an integer factor to about TILE_TARGET px on their long side (7x7 -> 147);
    larger maps are shown at TILE_TARGET..TILE_MAX px and open at full resolution on a click.
    """
    target = TILE_TARGET_MANY if count > MANY_TILES else TILE_TARGET
    side = max(height, width, 1)
    if side <= target:
        f = max(1, round(target / side))
        while f > 1 and side * f > TILE_MAX:
            f -= 1
        return width * f, height * f, f > 1
    shown = min(side, TILE_MAX if count <= MANY_TILES else target)
    return max(1, round(width * shown / side)), max(1, round(height * shown / side)), False


# ----------------------------------------------------------------------------------------------
# The page of one image


def _dead_text(layer: dict[str, Any]) -> str:
    dead = layer.get("stats", {}).get("dead_channels")
    channels = layer["shape"][0]
    if dead is None:
        return ""
    if dead == 0:
        return "no channel is zero everywhere for this image"
    verb = "is" if dead == 1 else "are"
    if layer.get("kind") == "vector":
        return f"<span class=warn>{dead} of {channels} channels {verb} 0 for this image</span>"
    return (f"<span class=warn>{dead} of {channels} channels {verb} zero everywhere for this image "
            f"(dead for this image)</span>")


def _legend(layer: dict[str, Any], gradient: str, colormap: str, norm: str) -> str:
    """Colour bar, its scale and the normalisation of the static tiles (as stored: `norm` of the render)."""
    st = layer["stats"]
    if norm == "layer":
        lo, hi = _num(layer["low"][0]) if layer.get("low") else "min", _num(layer["high"][0]) if layer.get("high") else "max"
        text = f"{_esc(colormap)}; one scale for every tile of this layer: {lo} .. {hi} (per layer, as stored)"
    else:
        lo, hi = "min", "max"
        text = (f"{_esc(colormap)}; each tile scaled to its own min..max (per channel, as stored); "
                f"values in this layer {_num(st['min'])} .. {_num(st['max'])}")
    return (
        "<div class=legend>"
        f"<span class=cbarbox><span class=cbar style='background:{gradient}'></span>"
        f"<span class=scale><span class=lo>{lo}</span><span class=hi>{hi}</span></span></span>"
        f"<span class=norm>{text}</span></div>"
    )


def channel_states(layer: dict[str, Any]) -> list[str]:
    """Per stored channel: 'dead' (zero everywhere for this image), 'flat' (constant, not zero) or ''.

    From each channel's own statistics (`channel_stats`, aligned with `channels`): the stored
    `low`/`high` are the layer's range when the render normalised per layer.
    """
    n = len(layer["channels"])
    cs = layer.get("channel_stats") or {}
    mins, maxs = cs.get("min") or [None] * n, cs.get("max") or [None] * n
    states = []
    for lo, hi, low, high in zip(mins, maxs, layer["low"], layer["high"]):
        if lo is None or hi is None:
            lo, hi = low, high
        states.append("dead" if lo == 0 and hi == 0 else "flat" if lo == hi or low == high else "")
    return states


def _tiles(layer: dict[str, Any]) -> str:
    """Each stored channel as a window on the layer's sprite, labelled with its channel number."""
    channels = layer["channels"]
    columns = max(1, int(layer["columns"]))
    rows = max(1, math.ceil(len(channels) / columns))
    th, tw = layer["tile"]
    dw, dh, enlarged = tile_display(th, tw, len(channels))
    cells = _cells(tuple(channels), columns, tuple(channel_states(layer)))
    # the sprite (the rule `.mNNN b` of the layer's stylesheet) scaled as the tiles are
    style = f"--tw:{dw}px;--th:{dh}px;--cols:{columns};--rows:{rows};--sw:{columns * dw}px;--sh:{rows * dh}px"
    return f"<div class='tiles m{int(layer['index'])}{' up' if enlarged else ''}' style='{style}'>{cells}</div>"


@functools.lru_cache(maxsize=1024)
def _cells(channels: tuple[int, ...], columns: int, states: tuple[str, ...]) -> str:
    """The tiles' markup: per stored channel `<i style=--c:C;--r:R><b></b>CH</i>`, its picture
    (`b`, a window at column C, row R of the sprite) and its channel number, with a class and a
    note when it is dead or flat. Short, because a deep network has tens of thousands of tiles
    (ResNet101V2: 24,064, 0.83 MB instead of 2.76 MB as figures with data attributes; the script
    sets those on the tiles it draws). The same for every image whose layer stores the same
    channels in the same states, so a run's pages share it (RESULTS 20.1)."""
    cells = []
    for k, (ch, state) in enumerate(zip(channels, states)):
        r, c = divmod(k, columns)
        if state:
            cells.append(f"<i class={state} style=--c:{c};--r:{r}><b></b>{ch}<s> {state}</s></i>")
        else:
            cells.append(f"<i style=--c:{c};--r:{r}><b></b>{ch}</i>")
    return "".join(cells)


def _bars(layer: dict[str, Any]) -> str:
    """A vector (a 1x1 map per channel: pooling heads, logits) as a bar chart of its channels, in SVG."""
    raw = layer.get("values") or []
    values = [float(v) if v is not None else 0.0 for v in raw]  # None: not a finite number
    n = len(values)
    if not n:
        return "<p class=meta>no values stored</p>"
    width, height, pad_l, pad_b, pad_t = 1200, 170, 56, 22, 14
    plot_w, plot_h = width - pad_l - 8, height - pad_b - pad_t
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    span = hi - lo or 1.0

    def y(v: float) -> float:
        return pad_t + (hi - v) / span * plot_h

    bw = plot_w / n
    zero = y(0.0)
    rects = []
    for i, v in enumerate(values):
        top, bottom = sorted((y(v), zero))
        rects.append(f"<rect x='{pad_l + i * bw:.2f}' y='{top:.2f}' width='{max(bw * 0.85, 0.6):.2f}' "
                     f"height='{max(bottom - top, 0.5):.2f}'><title>channel {i}: {_num(raw[i])}</title></rect>")
    top_idx = sorted(range(n), key=lambda i: -values[i])[:VECTOR_TOP]
    placed: list[float] = []
    labels = ""
    for i in top_idx:  # the largest first; a label never covers another
        x = pad_l + (i + 0.5) * bw
        if values[i] > 0 and all(abs(x - other) > 30 for other in placed):
            placed.append(x)
            labels += f"<text class=peak x='{x:.1f}' y='{max(y(values[i]) - 3, 10):.1f}'>{i}</text>"
    ticks = "".join(
        f"<text class=tick x='{pad_l - 6}' y='{y(v) + 4:.1f}' text-anchor=end>{_num(v)}</text>"
        f"<line class=grid x1='{pad_l}' x2='{width - 8}' y1='{y(v):.1f}' y2='{y(v):.1f}'/>"
        for v in sorted({lo, 0.0, hi}))
    xt = sorted({0, n // 4, n // 2, 3 * n // 4, n - 1})
    xticks = "".join(f"<text class=tick x='{pad_l + (i + 0.5) * bw:.1f}' y='{height - 6}' text-anchor=middle>{i}</text>"
                     for i in xt)
    top_text = ", ".join(f"{i}: {_num(values[i])}" for i in top_idx)
    return (f"<svg class=bars viewBox='0 0 {width} {height}' role=img "
            f"aria-label='{_esc(layer['name'])}: {n} channel values'>{ticks}<g class=bar>{''.join(rects)}</g>"
            f"<line class=zero x1='{pad_l}' x2='{width - 8}' y1='{zero:.1f}' y2='{zero:.1f}'/>{labels}{xticks}</svg>"
            f"<p class=meta>bar height = the channel's value (its map is 1 x 1); channels on the horizontal axis. "
            f"Largest: {_esc(top_text)}</p>")


def _layer_section(layer: dict[str, Any], digits: int, gradient: str, colormap: str, sort: str, norm: str) -> str:
    idx = str(layer["index"]).zfill(digits)
    st = layer["stats"]
    shape = " x ".join(str(d) for d in layer["shape"])
    facts = [f"shape {shape} (C x H x W)" if len(layer["shape"]) == 3 else f"shape {shape}",
             f"range {_num(st['min'])} .. {_num(st['max'])}", f"mean {_num(st['mean'])}",
             f"zeros {st['zero_fraction'] * 100:.1f}%" if st.get("zero_fraction") is not None else "zeros -"]
    dead = _dead_text(layer)
    if dead:
        facts.append(dead)
    if layer.get("atlas"):
        facts.append(f"<a href='{_esc(layer['atlas'])}'>what its channels respond to</a>")
    head = (f"<h2><a href='#layer-{idx}'>{idx}</a> {_esc(layer['name'])} <small>{_esc(_kind(layer))}</small></h2>")
    if layer.get("kind") == "vector":
        body = f"<div class=meta>{' &middot; '.join(facts)}</div>{_bars(layer)}"
        return (f"<section class='layer vector' id='layer-{idx}' data-index={layer['index']} "
                f"style='contain-intrinsic-size:auto 300px'>{head}{body}</section>")
    total = layer["shape"][0]
    shown = len(layer["channels"])
    how = {"index": "by channel number", "mean": "by mean, highest first", "max": "by max, highest first"}
    facts.insert(1, f"<span class=shown>{shown} of {total} channels shown, {how.get(sort, sort)}</span>")
    if layer.get("grid"):
        facts.append(f"<a href='{_url(layer['grid'])}'>coloured grid picture</a>")
    th, tw = layer["tile"]
    dw, dh, _ = tile_display(th, tw, shown)
    per_row = max(1, 1300 // (dw + 8))
    estimate = 120 + math.ceil(shown / per_row) * (dh + 26)
    body = (f"<div class=meta>{' &middot; '.join(facts)}</div>{_legend(layer, gradient, colormap, norm)}"
            f"{_tiles(layer)}")
    return (f"<section class='layer map' id='layer-{idx}' data-index={layer['index']} "
            f"style='contain-intrinsic-size:auto {estimate}px'>{head}{body}</section>")


def _predictions(summary: dict[str, Any]) -> str:
    preds = summary.get("predictions") or []
    if not preds:
        return "<p class=meta>This model has no class output.</p>"
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{_esc(p['label'])}</td><td class=num>{p['score'] * 100:.1f}%</td>"
        f"<td><span class=pbar style='width:{max(1, round(p['score'] * 160))}px'></span></td></tr>"
        for i, p in enumerate(preds))
    return f"<table class=preds><tr><th>#</th><th>class</th><th class=num>score</th><th></th></tr>{rows}</table>"


def _filters(summary: dict[str, Any], folder: Path | None) -> str:
    filters = summary.get("filters")
    if not filters:
        return ""
    size = _png_size(folder / filters["file"]) if folder is not None else None
    dims = ""
    if size:
        w, h = size
        f = max(1, min(4, math.ceil(FILTERS_MIN_WIDTH / max(w, 1))))
        dims = f" width={w * f} height={h * f}"
    order = filters.get("channel_order", "RGB")
    return (f"<figure class=filters><img src='{_url(filters['file'])}'{dims} alt='first-layer filters'>"
            f"<figcaption>{_esc(filters['layer'])}: {filters['count']} learned filters "
            f"({_esc(re.sub(r'^[0-9]+ filters of ', '', str(filters['kernel'])))}), "
            f"the kernels of the first convolution as {_esc(order)} colour patches; gray is 0, one scale for all"
            f"</figcaption></figure>")


def _input_figure(summary: dict[str, Any]) -> str:
    inp = summary["input"]
    h, w = int(inp["height"]), int(inp["width"])
    f = max(1, round(INPUT_MIN_SIDE / max(h, w, 1)))
    resize = inp.get("resize", "stretch")
    return (f"<figure class=input><img src='{_url(inp.get('file', 'input.png'))}' width={w * f} height={h * f} "
            f"alt='the input image' class={'up' if f > 1 else 'native'}>"
            f"<figcaption>the image as the model saw it: {w} x {h} ({_esc(resize)})</figcaption></figure>")


def render_html(summary: dict[str, Any], folder: Path | None = None) -> str:
    """The page of one image (`folder` lets it read the filters picture's size)."""
    options = summary.get("options") or {}
    colormap = options.get("colormap") or "viridis"
    lut = _lut(colormap)
    gradient = _gradient(lut)
    digits = _pad(summary)
    layers = summary["layers"]
    nav = "".join(
        f"<a href='#layer-{str(layer['index']).zfill(digits)}'>{str(layer['index']).zfill(digits)} "
        f"{_esc(layer['name'])}{' <small>vector</small>' if layer.get('kind') == 'vector' else ''}</a>"
        for layer in layers)
    sections = "".join(_layer_section(layer, digits, gradient, colormap, options.get("sort", "index"),
                                      options.get("norm", "channel")) for layer in layers)
    timings = summary.get("timings_ms") or {}
    timing_text = ", ".join(f"{k} {v:.0f} ms" for k, v in timings.items() if isinstance(v, (int, float)))
    provider = _esc(summary.get("provider", ""))
    if summary.get("provider_fallback"):
        provider = f"<span title='{_esc(summary['provider_fallback'])}'>{provider} (CUDA could not be used; hover here for why)</span>"
    sort, norm = options.get("sort", "index"), options.get("norm", "channel")
    opt = lambda values, chosen: "".join(  # noqa: E731
        f"<option value={v}{' selected' if v == chosen else ''}>{label}</option>" for v, label in values)
    controls = (
        "<div class=controls id=controls hidden>"
        f"<label>sort <select id=sort>{opt((('index', 'channel number'), ('mean', 'mean, highest first'), ('max', 'max, highest first')), sort)}</select></label>"
        f"<label>scale <select id=norm>{opt((('channel', 'per channel'), ('layer', 'per layer')), norm)}</select></label>"
        "<span class=help>click a tile to open it; in the viewer: &larr; &rarr; channels, &uarr; &darr; layers, "
        "o overlay, Esc close</span></div>")
    return (
        "<!doctype html><html lang=en class=nojs><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{_esc(summary['image_name'])} - onnxviz</title><style>{_css()}</style></head>"
        f"<body data-page=image>{_svg_colormap(lut)}"
        f"<header><h1>{_esc(summary['image_name'])} <small>through {_esc(summary.get('source', ''))}</small></h1>"
        f"<p>{_esc(summary.get('model', ''))} &middot; ran on {provider} &middot; {_esc(timing_text)}"
        f" &middot; <a href='../index.html'>all images of this run</a>"
        + (f" &middot; <a href='{_esc(summary['atlas']['page'])}'>channel atlas</a>" if summary.get("atlas") else "")
        + "</p></header><main>"
        f"<div class=top>{_input_figure(summary)}<div><h2>Top predictions</h2>{_predictions(summary)}</div>"
        f"{_filters(summary, folder)}</div>{explain_page.image_section(summary, digits)}"
        f"{controls}<noscript><p class=meta>Without JavaScript: tiles are scaled per channel and in the stored "
        "order; sorting, per-layer scaling and the full-resolution viewer need JavaScript.</p></noscript>"
        f"<details class=layers{' open' if len(layers) <= NAV_OPEN_UP_TO else ''}><summary><h2>{len(layers)} layers</h2>"
        f"</summary><nav class=layers>{nav}</nav></details>{sections}"
        f"<p class=foot>onnxviz {_esc(summary.get('onnxviz_version', ''))}; "
        "every number on this page is also in summary.json</p></main>"
        "<div id=viewer hidden></div>"
        f"<script src='../{ASSETS_DIR}/onnxviz.js'></script><script src='summary.js'></script>"
        f"{_map_links(layers)}</body></html>"
    )


def _map_links(layers: list[dict[str, Any]]) -> str:
    """The stylesheets holding the maps, last: the page shows before they arrive, and its script
    starts without waiting for all of them (each notes when it has loaded, for the script)."""
    files = dict.fromkeys(layer["data"] for layer in layers if layer.get("kind") == "map" and layer.get("data"))
    return "".join(f"<link rel=stylesheet href='{_url(name)}' onload=\"this.dataset.state='loaded'\" "
                   f"onerror=\"this.dataset.state='failed'\">" for name in files)


def _json(data: dict[str, Any]) -> str:
    """Compact JSON: the same text goes into the `.json` file and, wrapped, into the `.js` file.
    orjson writes ResNet101V2's summary in a tenth of the json module's time (RESULTS 20)."""
    return orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def write_assets(output: Path) -> Path:
    """Copy the pages' JavaScript into `output/assets/` (only files whose bytes changed)."""
    folder = ensure_dir(Path(output) / ASSETS_DIR)
    package = resources.files("onnxviz.report.assets")
    for name in ASSET_FILES:
        data = package.joinpath(name).read_bytes()
        target = folder / name
        try:
            if target.read_bytes() == data:
                continue
        except OSError:
            pass
        write_bytes(target, data)
    return folder


def write_report(folder: Path, summary: dict[str, Any]) -> ReportFiles:
    """Write `summary.json`, `summary.js` and `index.html` of one image into `folder` (each atomically).

    The page's script lives in `folder/../assets/`; it is written there too (when missing or stale),
    so that a page opened while a long run goes on already works.
    """
    folder = Path(folder)
    text = _json(summary)
    json_path = write_text(folder / "summary.json", text)
    js_path = write_text(folder / "summary.js", f"onnxviz.summary({text});\n")
    write_assets(folder.parent)
    html_path = write_text(folder / "index.html", render_html(summary, folder))
    return ReportFiles(json_path, js_path, html_path)


# ----------------------------------------------------------------------------------------------
# The page of a run


def render_run_html(run: dict[str, Any]) -> str:
    """The run page: every image with its thumbnail and top-1, and the compare view."""
    images = run.get("images") or []
    cards = []
    groups: dict[str, list[str]] = {}
    for n, image in enumerate(images):
        folder = image["folder"]
        top1 = image.get("top1")
        top = (f"<span class=top1>{_esc(top1['label'])} <b>{top1['score'] * 100:.1f}%</b></span>" if top1
               else "<span class=top1>no class output</span>")
        cards.append(
            f"<a class=card href='{_url(folder)}/index.html' data-n={n}>"
            f"<img src='{_url(folder)}/input.png' loading=lazy decoding=async width=128 height=128 alt=''>"
            f"<span class=name>{_esc(image.get('image_name', folder))}</span>{top}</a>")
        groups.setdefault(image.get("group") or "", []).append(cards[-1])
    if any(groups):  # images found in subfolders: one gallery per folder
        gallery = "".join(
            f"<section class=group><h3>{_esc(name or '(top folder)')} <small>{len(items)} "
            f"image{'s' if len(items) != 1 else ''}</small></h3><div class=gallery>{''.join(items)}</div></section>"
            for name, items in groups.items())
    else:
        gallery = f"<div class=gallery>{''.join(cards)}</div>"
    layers = run.get("layers") or []
    compare = ""
    if len(images) > 1 and layers:
        compare = (
            "<section id=compare class=compare hidden><h2>Compare one channel across images</h2>"
            "<div class=controls><label>layer <select id=cmp-layer></select></label>"
            "<label>channel <input id=cmp-channel type=number min=0 value=0></label>"
            "<span id=cmp-channels class=help></span>"
            "<span class=pager><button id=cmp-prev type=button>&larr; previous</button>"
            "<span id=cmp-range></span><button id=cmp-next type=button>next &rarr;</button></span></div>"
            "<div id=cmp-legend class=legend></div><div id=cmp-tiles class=cmp-tiles></div></section>"
            "<noscript><p class=meta>The compare view needs JavaScript.</p></noscript>")
    count = len(images)
    return (
        "<!doctype html><html lang=en class=nojs><head><meta charset=utf-8>"
        "<meta name=viewport content='width=device-width,initial-scale=1'>"
        f"<title>{count} image{'s' if count != 1 else ''} - onnxviz</title><style>{_css()}</style></head>"
        f"<body data-page=run>{_svg_colormap(_lut('viridis'))}"
        f"<header><h1>{count} image{'s' if count != 1 else ''} through {_esc(run.get('source', ''))}</h1>"
        f"<p>{_esc(run.get('model', ''))} &middot; {len(layers)} layers</p></header><main>"
        f"{explain_page.run_section(run)}{compare}<h2>Images</h2>{gallery}</main>"
        f"<script src='{ASSETS_DIR}/onnxviz.js'></script><script src='run.js'></script></body></html>"
    )


def write_run(output: Path, run: dict[str, Any]) -> RunFiles:
    """Write the run page of `output`: `run.json`, `run.js`, `index.html` and `assets/` (each atomically)."""
    output = ensure_dir(Path(output))
    text = _json(run)
    json_path = write_text(output / "run.json", text)
    js_path = write_text(output / "run.js", f"onnxviz.run({text});\n")
    assets = write_assets(output)
    html_path = write_text(output / "index.html", render_run_html(run))
    return RunFiles(json_path, js_path, html_path, assets)
