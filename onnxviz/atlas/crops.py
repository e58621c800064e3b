"""What an atlas leaves on disk: crops in sprite sheets, the table, and a page to browse them.

- `crops/<layer>_<k>.jpg`: sprite sheets, one row per channel (256 channels a sheet), one
  column per rank, each tile the winner's receptive field (aspect kept, grey around it);
  `crops/<layer>_<k>.overlay.jpg` the same with the channel's map over it (`overlay`).
- `atlas.jsonl`: one line per layer, channel and rank: image, score, position in the map,
  crop box in the network's input pixels, and where its tile is.
- `index.html` + `atlas-data.js`: layers, each layer's channels by their best crop, and a
  page per channel with its N examples. The data is a script, so the page works from file://.
"""
from __future__ import annotations

import html
import json
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from onnxviz import __version__
from onnxviz.atlas.state import EMPTY, winners
from onnxviz.picture.encoding import encode
from onnxviz.errors import ImageError
from onnxviz.files import write_bytes, write_text
from onnxviz.run.images import read_pixels
from onnxviz.files import safe_name

SHEET_ROWS = 256  # channels per sprite sheet: 256 x 64 px = 16384 px, well under JPEG's 65535
BACKGROUND = 48
QUALITY = 88


@dataclass
class Written:
    table: Path
    page: Path
    files: int
    bytes: int


def fit_tile(crop_bgr: np.ndarray, tile: int) -> np.ndarray:
    """`crop` scaled to fit a tile x tile square, centred on grey, aspect ratio kept."""
    h, w = crop_bgr.shape[:2]
    scale = tile / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    interp = cv2.INTER_AREA if scale < 0.5 else cv2.INTER_LINEAR if scale < 1 else cv2.INTER_NEAREST
    small = cv2.resize(crop_bgr, (nw, nh), interpolation=interp)
    if nh == tile and nw == tile:  # a square crop fills the tile
        return small
    out = np.full((tile, tile, 3), BACKGROUND, np.uint8)
    top, left = (tile - nh) // 2, (tile - nw) // 2
    out[top:top + nh, left:left + nw] = small
    return out


def overlay_map(crop_bgr: np.ndarray, channel_map: np.ndarray, field, box: tuple[int, int, int, int],
                peak: float) -> np.ndarray:
    """The channel's map over the crop: each map value drawn at the centre of its receptive field,
    interpolated between centres, scaled by `peak` (the channel's best score), inferno, 50% over the crop."""
    from onnxviz.picture.tiling import colorize

    x0, y0, x1, y1 = box
    cy = field.height.start + (field.height.size - 1) / 2  # input coordinate of map row 0's centre
    cx = field.width.start + (field.width.size - 1) / 2
    # dst (crop pixel) -> src (map position): src = (dst + x0 - cx) / jump
    matrix = np.array([[1 / field.width.jump, 0, (x0 - cx) / field.width.jump],
                       [0, 1 / field.height.jump, (y0 - cy) / field.height.jump]], np.float64)
    heat = cv2.warpAffine(channel_map.astype(np.float32), matrix, (x1 - x0, y1 - y0),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    scale = peak if peak > 0 else (float(np.abs(heat).max()) or 1.0)
    gray = (np.clip(heat / scale, 0, 1) * 255).astype(np.uint8)
    return cv2.addWeighted(crop_bgr, 0.5, colorize(gray, "inferno"), 0.5, 0)


def _json_float(value: float) -> str:
    """A float as json.dumps writes it."""
    return repr(value) if math.isfinite(value) else json.dumps(value)


def table_lines(plan, state, rows, sheet_names: list[list[str]], tile: int) -> list[str]:
    """`atlas.jsonl`'s lines, each exactly `json.dumps` of the row's dict, built as text: one
    `json.dumps` per row (35,136 for ResNet50) cost more than the rest of the table."""
    layers = [json.dumps(layer.name) for layer in plan.layers]
    sheets = [[json.dumps(name) for name in names] for names in sheet_names]
    images: dict[int, str] = {}
    lines = []
    for li, c, r, k, score, y, x, (x0, y0, x1, y1) in zip(
            rows.layer.tolist(), rows.channel.tolist(), rows.rank.tolist(), rows.image.tolist(),
            rows.score.tolist(), rows.y.tolist(), rows.x.tolist(), rows.box.tolist()):
        image = images.get(k)
        if image is None:
            image = images[k] = json.dumps(state.images[k])
        lines.append(f'{{"layer": {layers[li]}, "channel": {c}, "rank": {r}, "image": {image}, '
                     f'"score": {_json_float(score)}, "position": [{y}, {x}], "box": [{x0}, {y0}, {x1}, {y1}], '
                     f'"sheet": {sheets[li][c // SHEET_ROWS]}, "tile": [{(c % SHEET_ROWS) * tile}, {r * tile}, {tile}]}}')
    return lines


class _Sheets:
    """The sprite sheets being filled by the pool's threads: each is encoded, written and dropped as
    soon as its last tile is in, so that encoding runs beside the reading and cutting."""

    def __init__(self, plan, rows, options, output: Path) -> None:
        self.output, self.tile, self.n, self.overlay = output, options.tile, options.top, options.overlay
        self.names: list[list[str]] = []
        self.overlay_names: list[list[str]] = []
        self.shapes: list[tuple[int, int, int]] = []
        self.first: list[int] = []  # global index of each layer's first sheet
        for layer in plan.layers:
            channels = int(layer.shape[1])
            self.first.append(len(self.shapes))
            ks = range(0, (channels + SHEET_ROWS - 1) // SHEET_ROWS)
            self.names.append([f"crops/{safe_name(layer.name)}_{k}.jpg" for k in ks])
            self.overlay_names.append([f"crops/{safe_name(layer.name)}_{k}.overlay.jpg" for k in ks]
                                      if options.overlay else [])
            self.shapes += [(min(SHEET_ROWS, channels - k * SHEET_ROWS) * self.tile, self.n * self.tile, 3)
                            for k in ks]
        self.sheet = np.asarray(self.first, np.int64)[rows.layer] + rows.channel // SHEET_ROWS  # per row
        self.left = np.bincount(self.sheet, minlength=len(self.shapes))  # tiles still to come, per sheet
        # All allocated here, before any is freed, so that each is its own mapping and goes back to the
        # system when written (glibc raises its mmap threshold once a large block is freed; sheets
        # allocated later in the pool's threads stayed in malloc's arenas and raised peak RSS). Left
        # uninitialised: the pool's threads touch the pages as they put tiles in (first touching
        # ResNet50's 450 MB of sheets can take a second on a VM), and `write` greys the slots left empty.
        self.arrays = {k: np.empty(shape, np.uint8) for k, shape in enumerate(self.shapes)}
        self.overlays = {k: np.empty(shape, np.uint8) for k, shape in enumerate(self.shapes)} if options.overlay else {}
        self.filled = {k: np.zeros((shape[0] // self.tile, self.n), bool) for k, shape in enumerate(self.shapes)}
        self.lock = threading.Lock()
        self.files = self.bytes = 0
        self.written: set[int] = set()
        self.where = [(li, k) for li, names in enumerate(self.names) for k in range(len(names))]

    def place(self, sheet: int, rows: np.ndarray, ranks: np.ndarray, tiles: np.ndarray,
              overlays: np.ndarray | None) -> None:
        """Put `tiles[k]` at row `rows[k]` (a channel of this sheet), column `ranks[k]`."""
        t = self.tile
        self.filled[sheet][rows, ranks] = True
        for array, values in ((self.arrays[sheet], tiles), (self.overlays.get(sheet), overlays)):
            if array is not None and values is not None:
                # [rows * t, n * t, 3] as [rows, n, t, t, 3]: a view, so the tiles land in the sheet
                array.reshape(-1, t, self.n, t, 3).transpose(0, 2, 1, 3, 4)[rows, ranks] = values

    def done(self, sheets: np.ndarray) -> None:
        """Count these rows' tiles as in (or left blank); write every sheet this completes."""
        touched, counts = np.unique(sheets, return_counts=True)
        complete = []
        with self.lock:
            for sheet, count in zip(touched.tolist(), counts.tolist()):
                self.left[sheet] -= count
                if self.left[sheet] == 0:
                    complete.append(sheet)
        for sheet in complete:
            self.write(sheet)

    def write(self, sheet: int) -> None:
        li, k = self.where[sheet]
        with self.lock:
            self.written.add(sheet)
            array = self.arrays.pop(sheet, None)
            overlay = self.overlays.pop(sheet, None)
        t = self.tile
        for name, image in ((self.names[li][k], array), (self.overlay_names[li][k] if self.overlay else None, overlay)):
            if name is None:
                continue
            for row, rank in zip(*np.nonzero(~self.filled[sheet])):  # no winner, or an unreadable one
                image[row * t:(row + 1) * t, rank * t:(rank + 1) * t] = BACKGROUND
            data = encode(image, "jpg", QUALITY)
            write_bytes(self.output / name, data)
            with self.lock:
                self.files, self.bytes = self.files + 1, self.bytes + len(data)

    def write_rest(self) -> None:
        """Write the sheets no row completed: those without a single winner (blank)."""
        for sheet in range(len(self.shapes)):
            if sheet not in self.written:
                self.write(sheet)


def write_atlas(plan, state, output: Path, options, note: Callable[[str], None]) -> Written:
    """Cut every winner's crop (one read per winning image) and write sheets, table and page.

    The winning images are read, cut and the finished sheets encoded in a thread pool (OpenCV
    releases the GIL), in the order that completes the first sheets soonest, while this thread
    writes the table.
    """
    output = Path(output)
    tile = options.tile
    rows = winners(plan, state)
    sheets = _Sheets(plan, rows, options, output)
    by_image = np.argsort(rows.image, kind="stable")
    ids, starts = np.unique(rows.image[by_image], return_index=True)
    groups = np.split(by_image, starts[1:]) if len(ids) else []
    first_sheet = [int(sheets.sheet[g].min()) for g in groups]
    order = sorted(range(len(ids)), key=lambda g: (first_sheet[g], int(ids[g])))  # sheet by sheet
    note(f"cutting {len(rows)} crops from {len(ids)} winning images")
    h, w = plan.info.height, plan.info.width
    unreadable: dict[int, str] = {}
    names = [layer.name for layer in plan.layers]
    maps_session = None
    if options.overlay:
        from onnxviz.run.session import open_session

        maps_session = open_session(plan.model, options.provider, threads=options.threads,
                                    outputs=names, long_run=False)

    def read(image_id: int):
        try:
            return read_pixels(state.images[image_id], h, w, options.resize), None
        except ImageError as exc:
            return None, str(exc)

    def cut(g: int, rgb: np.ndarray | None, maps: dict | None) -> None:
        group = groups[g]
        sheet_of = sheets.sheet[group]
        if rgb is not None:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            # deep layers' boxes repeat (often the whole image): one tile per distinct box
            boxes, inverse = np.unique(rows.box[group], axis=0, return_inverse=True)
            tiles = np.stack([fit_tile(bgr[y0:y1, x0:x1], tile) for x0, y0, x1, y1 in boxes.tolist()])
            tiles = tiles[inverse.reshape(-1)]
            overlays = None
            if maps is not None:
                overlays = np.stack([
                    fit_tile(overlay_map(bgr[y0:y1, x0:x1], maps[names[li]][c], plan.fields[names[li]],
                                         (x0, y0, x1, y1), float(state.tops[li].scores[c, 0])), tile)
                    for li, c, (x0, y0, x1, y1) in zip(rows.layer[group].tolist(), rows.channel[group].tolist(),
                                                       rows.box[group].tolist())])
            for sheet in np.unique(sheet_of).tolist():
                sel = np.flatnonzero(sheet_of == sheet)
                sheets.place(sheet, rows.channel[group[sel]] % SHEET_ROWS, rows.rank[group[sel]], tiles[sel],
                             None if overlays is None else overlays[sel])
        sheets.done(sheet_of)

    def read_and_cut(g: int) -> None:
        rgb, why = read(int(ids[g]))
        if why:
            unreadable[int(ids[g])] = why
        cut(g, rgb, None)

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        if maps_session is None:
            futures = [pool.submit(read_and_cut, g) for g in order]
            lines = table_lines(plan, state, rows, sheets.names, tile)  # meanwhile, in this thread
            for future in futures:
                future.result()
        else:  # the channels' maps of a batch of winners at a time, then cut in the pool
            batch = max(1, options.batch_size)
            for start in range(0, len(order), batch):
                chunk = order[start:start + batch]
                got = list(pool.map(lambda g: read(int(ids[g])), chunk))
                good = [(g, rgb) for g, (rgb, _) in zip(chunk, got) if rgb is not None]
                for g, (_, why) in zip(chunk, got):
                    if why:
                        unreadable[int(ids[g])] = why
                outputs = maps_session.run(np.stack([rgb for _, rgb in good])) if good else {}
                maps = {g: {name: v[j] for name, v in outputs.items()} for j, (g, _) in enumerate(good)}
                list(pool.map(lambda g_rgb: cut(g_rgb[0], g_rgb[1], maps.get(g_rgb[0])),
                              [(g, rgb) for g, (rgb, _) in zip(chunk, got)]))
            lines = table_lines(plan, state, rows, sheets.names, tile)
        sheets.write_rest()
    for image_id, why in sorted(unreadable.items()):
        note(f"warning: {why} (a winner; its tiles are left blank)")
    if unreadable:
        for j in np.flatnonzero(np.isin(rows.image, list(unreadable))).tolist():
            lines[j] = lines[j][:-1] + ', "unreadable": true}'

    table = write_text(output / "atlas.jsonl", "\n".join(lines) + ("\n" if lines else ""))
    data = _page_data(plan, state, options, sheets.names, sheets.overlay_names, output, EMPTY)
    data_text = "window.ATLAS = " + json.dumps(data, separators=(",", ":")) + ";\n"
    write_text(output / "atlas-data.js", data_text)
    page_text = PAGE.replace("{{TITLE}}", html.escape(f"Atlas of {plan.info.source or plan.model.name}"))
    page = write_text(output / "index.html", page_text)
    files = sheets.files + 3
    size = sheets.bytes + len(data_text.encode()) + len(page_text.encode()) + table.stat().st_size
    return Written(table, page, files, size)


def _page_data(plan, state, options, sheet_files, overlay_files, output: Path, empty: int) -> dict:
    images = []
    for p in state.images:
        try:
            images.append(os.path.relpath(p, output))
        except ValueError:  # another drive on Windows
            images.append(p)
    layers = []
    for layer, top, names, onames in zip(plan.layers, state.tops, sheet_files, overlay_files):
        fld = plan.fields[layer.name]
        ids = np.where(top.ids == empty, -1, top.ids)
        scores = np.where(np.isfinite(top.scores), top.scores, 0)
        layers.append({
            "name": layer.name, "op": layer.op, "shape": layer.shape[1:], "channels": top.channels,
            "field": {"exact": fld.exact, "size": [fld.height.size, fld.width.size],
                      "jump": [fld.height.jump, fld.width.jump], "start": [fld.height.start, fld.width.start]},
            "sheets": names, "overlays": onames,
            "scores": [float(f"{v:.5g}") for v in scores.ravel()],
            "ids": ids.ravel().tolist(), "positions": top.positions.ravel().tolist(),
        })
    return {"title": f"Atlas of {plan.info.source or plan.model.name}", "model": str(plan.model),
            "source": plan.info.source, "score": options.score, "top": options.top, "tile": options.tile,
            "sheet_rows": SHEET_ROWS, "input": [plan.info.height, plan.info.width], "resize": options.resize,
            "images": images, "image_count": len(state.images) - len(state.failed), "failed": len(state.failed),
            "overlay": bool(options.overlay), "version": __version__, "layers": layers}


PAGE = r"""<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content='width=device-width,initial-scale=1'><title>{{TITLE}} - onnxviz</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;background:#f6f6f4;color:#222}
header{background:#1f2430;color:#eee;padding:12px 20px} header h1{margin:0;font-size:19px} header p{margin:3px 0 0;color:#bbb}
.wrap{display:flex;align-items:flex-start}
nav{width:250px;flex:none;padding:10px 0;position:sticky;top:0;max-height:100vh;overflow:auto;border-right:1px solid #ddd;background:#fff}
nav a{display:block;padding:4px 14px;color:#2060a0;text-decoration:none;font-size:13px}
nav a.on{background:#e4ecf6;font-weight:600} nav small{color:#777;display:block;font-weight:400}
main{padding:12px 20px;flex:1;min-width:0}
.tools{margin:6px 0 12px;color:#444} .tools label{margin-right:14px}
.grid{display:flex;flex-wrap:wrap;gap:6px}
.ch{display:block;text-decoration:none;color:#333;font-size:11px;text-align:center}
.ch .t{border:1px solid #bbb;background-repeat:no-repeat}
.ch.dead{opacity:.35}
.ex{display:flex;flex-wrap:wrap;gap:14px}
.ex figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:5px;padding:6px}
.ex figcaption{font-size:12px;color:#444;max-width:200px;word-break:break-all}
.t{background-repeat:no-repeat}
.meta{color:#555;margin:2px 0 10px} .warn{color:#a33}
button{font:inherit;padding:2px 10px;margin-right:6px}
</style></head><body>
<header><h1 id=title></h1><p id=sub></p></header>
<div class=wrap><nav id=nav></nav><main id=main></main></div>
<script src="atlas-data.js"></script>
<script>
"use strict";
const A = window.ATLAS, N = A.top, T = A.tile, R = A.sheet_rows;
const $ = s => document.querySelector(s);
const esc = s => String(s).replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;","\"":"&quot;","'":"&#39;"}[c]));
let overlay = A.overlay, order = "index";  // made with --overlay: shown until unticked
function tile(layer, c, r, scale, useOverlay) {
  const sheets = useOverlay && layer.overlays.length ? layer.overlays : layer.sheets;
  const k = Math.floor(c / R), rowsIn = Math.min(R, layer.channels - k * R), s = T * scale;
  return `<div class=t style="width:${s}px;height:${s}px;background-image:url('${esc(sheets[k])}');` +
    `background-size:${N * s}px ${rowsIn * s}px;background-position:-${r * s}px -${(c % R) * s}px"></div>`;
}
function fieldText(L) {
  const f = L.field;
  // every box is the whole input when even the last position's box starts before it and the first's ends after it
  const all = [0, 1].every(a => f.start[a] + (L.shape[a + 1] - 1) * f.jump[a] <= 0 && f.start[a] + f.size[a] >= A.input[a]);
  const whole = all ? ", so every crop is the whole input" + (A.overlay ? " (the overlay shows where the channel fired)" : "") : "";
  return f.exact ? `receptive field ${f.size[0]}x${f.size[1]} px${whole}, one map step = ${f.jump[0]} px`
                 : `receptive field: the whole image (the graph mixes every position before this layer)`;
}
function nav(current) {
  $("#nav").innerHTML = A.layers.map((L, i) =>
    `<a href="#l=${i}" class="${i === current ? "on" : ""}">${esc(L.name)}<small>${L.channels} channels &middot; ${L.shape.slice(1).join("x")} map &middot; ${esc(L.op)}</small></a>`).join("");
}
function layerView(li) {
  const L = A.layers[li];
  nav(li);
  let chans = [...Array(L.channels).keys()];
  if (order === "score") chans.sort((a, b) => L.scores[b * N] - L.scores[a * N] || a - b);
  const dead = chans.filter(c => L.ids[c * N] < 0 || (A.score === "max" && L.scores[c * N] <= 0)).length;
  $("#main").innerHTML = `<h2>${esc(L.name)} <small>(${esc(L.op)})</small></h2>
    <div class=meta>${L.channels} channels, map ${L.shape.slice(1).join("x")}; ${fieldText(L)}.
    Each channel is shown by the crop that excites it most; click one for its ${N} best images.
    ${dead ? `<span class=warn>${dead} channels never fire (spatial max 0 on every image)</span>` : ""}</div>
    <div class=tools><label>order <select id=order><option value=index>by channel</option><option value=score>by top score</option></select></label>
    ${L.overlays.length ? `<label><input type=checkbox id=ov ${overlay ? "checked" : ""}> map overlay</label>` : ""}</div>
    <div class=grid>${chans.map(c => {
      const s = L.scores[c * N], off = L.ids[c * N] < 0 || (A.score === "max" && s <= 0);
      return `<a class="ch${off ? " dead" : ""}" href="#l=${li}&c=${c}" title="channel ${c}: best score ${s}">${tile(L, c, 0, 1.25, overlay)}${c}<br>${s.toPrecision(3)}</a>`;
    }).join("")}</div>`;
  $("#order").value = order;
  $("#order").onchange = e => { order = e.target.value; layerView(li); };
  if ($("#ov")) $("#ov").onchange = e => { overlay = e.target.checked; layerView(li); };
}
function channelView(li, c) {
  const L = A.layers[li];
  nav(li);
  const [H, W] = A.input, f = L.field, mw = L.shape[2];
  const ex = [];
  for (let r = 0; r < N; r++) {
    const id = L.ids[c * N + r];
    if (id < 0) continue;
    const p = L.positions[c * N + r], y = Math.floor(p / mw), x = p % mw;
    let box = [0, 0, W, H];
    if (f.exact) {
      const y0 = f.start[0] + y * f.jump[0], x0 = f.start[1] + x * f.jump[1];
      box = [Math.max(0, x0), Math.max(0, y0), Math.min(W, x0 + f.size[1]), Math.min(H, y0 + f.size[0])];
    }
    const img = A.images[id], name = img.split(/[\\/]/).pop();
    ex.push(`<figure>${tile(L, c, r, 3, overlay)}<figcaption>#${r + 1} &middot; score ${L.scores[c * N + r].toPrecision(4)}<br>
      <a href="${esc(encodeURI(img))}">${esc(name)}</a><br>at (${y}, ${x}) of the map; <span style="white-space:nowrap">box x ${box[0]}..${box[2]},</span> <span style="white-space:nowrap">y ${box[1]}..${box[3]}</span></figcaption></figure>`);
  }
  $("#main").innerHTML = `<h2>${esc(L.name)}, channel ${c}</h2>
    <div class=tools><button onclick="location.hash='#l=${li}'">&larr; all ${L.channels} channels</button>
    ${c > 0 ? `<button onclick="location.hash='#l=${li}&c=${c - 1}'">channel ${c - 1}</button>` : ""}
    ${c + 1 < L.channels ? `<button onclick="location.hash='#l=${li}&c=${c + 1}'">channel ${c + 1}</button>` : ""}
    ${L.overlays.length ? `<label><input type=checkbox id=ov ${overlay ? "checked" : ""}> map overlay</label>` : ""}</div>
    <div class=meta>The ${N} images whose spatial ${esc(A.score)} of this channel is highest, cropped to the receptive field
    of the position of the maximum (${fieldText(L)}), in the ${A.input[0]}x${A.input[1]} input the network saw.</div>
    <div class=ex>${ex.join("") || "<p>No image.</p>"}</div>`;
  if ($("#ov")) $("#ov").onchange = e => { overlay = e.target.checked; channelView(li, c); };
}
function route() {
  const q = new URLSearchParams(location.hash.slice(1));
  const li = Math.min(Math.max(parseInt(q.get("l") || "0", 10) || 0, 0), A.layers.length - 1);
  if (!isNaN(parseInt(q.get("c"), 10))) channelView(li, Math.min(parseInt(q.get("c"), 10), A.layers[li].channels - 1));
  else layerView(li);
  window.scrollTo(0, 0);
}
$("#title").textContent = A.title;
$("#sub").textContent = `${A.image_count} images` + (A.failed ? ` (${A.failed} unreadable)` : "") +
  ` \u00b7 ${A.layers.length} layers \u00b7 ${A.layers.reduce((a, L) => a + L.channels, 0)} channels \u00b7 top ${N} by spatial ${A.score}` +
  ` \u00b7 ${A.model} \u00b7 onnxviz ${A.version}`;
window.addEventListener("hashchange", route);
route();
</script></body></html>
"""
