"""What an atlas leaves on disk: crops in sprite sheets, the table, and a page to browse them.

- `crops/<layer>_<k>.jpg`: sprite sheets, one row per channel (256 channels a sheet), one
  column per rank, each tile the winner's receptive field (aspect kept, grey around it);
  `crops/<layer>_<k>.overlay.jpg` the same with the channel's map over it (`overlay`).
- `atlas.jsonl`: one line per layer, channel and rank: image, score, position in the map,
  crop box in the network's input pixels, and where its tile is.
- `index.html` + `atlas-data.js`: the page (`report.atlas_page`) and its data (`page_data`).

`write_atlas` does it in steps: the winners grouped by image (`winning_images`), their crops
cut into the sheets (`Cutter`, in a thread pool), the table (`table_fields`, `table_text`),
then the page's data.
"""
from __future__ import annotations

import json
import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from onnxviz import __version__
from onnxviz.atlas.options import AtlasOptions
from onnxviz.atlas.plan import Plan
from onnxviz.atlas.state import EMPTY, AtlasState, Winners, winners
from onnxviz.files import safe_name, write_bytes, write_text
from onnxviz.model.receptive import Field
from onnxviz.picture.encoding import encode
from onnxviz.picture.tiling import colorize
from onnxviz.report.atlas_page import write_page
from onnxviz.run.images import read_batch
from onnxviz.run.session import open_session, usable_cpus

SHEET_ROWS = 256  # channels per sprite sheet: 256 x 64 px = 16384 px, well under JPEG's 65535
BACKGROUND = 48
QUALITY = 88
TABLE = "atlas.jsonl"


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


def overlay_map(crop_bgr: np.ndarray, channel_map: np.ndarray, field: Field, box: tuple[int, int, int, int],
                peak: float) -> np.ndarray:
    """The channel's map over the crop: each map value drawn at the centre of its receptive field,
    interpolated between centres, scaled by `peak` (the channel's best score), inferno, 50% over the crop."""
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


# ---------------------------------------------------------------- the sheets

class Sheets:
    """The sprite sheets being filled by the pool's threads: each is encoded, written and dropped as
    soon as its last tile is in, so that encoding runs beside the reading and cutting."""

    def __init__(self, plan: Plan, rows: Winners, options: AtlasOptions, output: Path) -> None:
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


# ---------------------------------------------------------------- the crops

@dataclass
class WinningImages:
    """The winning images, each with its rows of the table, in the order that completes the first
    sheets soonest: by the first sheet an image has a tile in, then by id."""

    ids: list[int]
    rows: list[np.ndarray]  # indexes into the `Winners` of each image's entries


def winning_images(rows: Winners, sheets: Sheets) -> WinningImages:
    by_image = np.argsort(rows.image, kind="stable")
    ids, starts = np.unique(rows.image[by_image], return_index=True)
    groups = np.split(by_image, starts[1:]) if len(ids) else []
    first_sheet = [int(sheets.sheet[g].min()) for g in groups]
    order = sorted(range(len(ids)), key=lambda g: (first_sheet[g], int(ids[g])))  # sheet by sheet
    return WinningImages([int(ids[g]) for g in order], [groups[g] for g in order])


class Cutter:
    """Cuts one winning image's tiles (and overlays) and puts them in the sheets; called from the
    pool's threads, one image each."""

    def __init__(self, plan: Plan, state: AtlasState, rows: Winners, sheets: Sheets, tile: int) -> None:
        self.plan, self.state, self.rows, self.sheets, self.tile = plan, state, rows, sheets, tile
        self.names = [layer.name for layer in plan.layers]

    def cut(self, group: np.ndarray, rgb: np.ndarray | None, maps: dict[str, np.ndarray] | None = None) -> None:
        """`group`: the image's rows; `rgb`: the image as the network took it, None when it could not be
        read again (its tiles stay blank); `maps`: the image's channel maps by layer, for overlays."""
        rows, sheets = self.rows, self.sheets
        sheet_of = sheets.sheet[group]
        if rgb is not None:
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            # deep layers' boxes repeat (often the whole image): one tile per distinct box
            boxes, inverse = np.unique(rows.box[group], axis=0, return_inverse=True)
            tiles = np.stack([fit_tile(bgr[y0:y1, x0:x1], self.tile) for x0, y0, x1, y1 in boxes.tolist()])
            tiles = tiles[inverse.reshape(-1)]
            overlays = None if maps is None else self._overlays(group, bgr, maps)
            for sheet in np.unique(sheet_of).tolist():
                sel = np.flatnonzero(sheet_of == sheet)
                sheets.place(sheet, rows.channel[group[sel]] % SHEET_ROWS, rows.rank[group[sel]], tiles[sel],
                             None if overlays is None else overlays[sel])
        sheets.done(sheet_of)

    def _overlays(self, group: np.ndarray, bgr: np.ndarray, maps: dict[str, np.ndarray]) -> np.ndarray:
        rows, names = self.rows, self.names
        return np.stack([
            fit_tile(overlay_map(bgr[y0:y1, x0:x1], maps[names[li]][c], self.plan.fields[names[li]],
                                 (x0, y0, x1, y1), float(self.state.tops[li].scores[c, 0])), self.tile)
            for li, c, (x0, y0, x1, y1) in zip(rows.layer[group].tolist(), rows.channel[group].tolist(),
                                               rows.box[group].tolist())])


def _read_and_cut(cutter: Cutter, path: str, group: np.ndarray, plan: Plan, resize: str) -> str | None:
    """One winning image read again and cut; why it could not be read, or None."""
    got = read_batch([path], plan.info.height, plan.info.width, resize)
    cutter.cut(group, got.pixels[0] if got.read else None)
    return got.failed[0][1] if got.failed else None


def _cut_with_maps(cutter: Cutter, winning: WinningImages, plan: Plan, state: AtlasState, options: AtlasOptions,
                   pool: ThreadPoolExecutor) -> dict[int, str]:
    """The crops with overlays: the channels' maps of a batch of winners at a time (read in the pool),
    then each image cut in the pool. Returns {image id: why} of the winners that could not be read."""
    session = open_session(plan.model, options.provider, threads=options.threads, outputs=cutter.names,
                           long_run=False)
    unreadable: dict[int, str] = {}
    batch = max(1, options.batch_size)
    for start in range(0, len(winning.ids), batch):
        ids, groups = winning.ids[start:start + batch], winning.rows[start:start + batch]
        got = read_batch([state.images[i] for i in ids], plan.info.height, plan.info.width, options.resize,
                         pool=pool)
        for k, why in got.failed:
            unreadable[ids[k]] = why
        outputs = session.run(got.pixels) if got.read else {}
        pixels: list[np.ndarray | None] = [None] * len(ids)
        maps: list[dict[str, np.ndarray] | None] = [None] * len(ids)
        for j, k in enumerate(got.read):
            pixels[k] = got.pixels[j]
            maps[k] = {name: value[j] for name, value in outputs.items()}
        list(pool.map(cutter.cut, groups, pixels, maps))
    return unreadable


# ---------------------------------------------------------------- the table

def _json_float(value: float) -> str:
    """A float as json.dumps writes it."""
    return repr(value) if math.isfinite(value) else json.dumps(value)


def table_fields(plan: Plan, state: AtlasState, rows: Winners, sheet_names: list[list[str]], tile: int) -> list[str]:
    """`atlas.jsonl`'s rows as text, each without its closing brace (`table_text` closes it, once it is
    known whether the row's image could be read again). Each finished line is exactly `json.dumps` of
    the row's dict, built as text: one `json.dumps` per row (35,136 for ResNet50) cost more than the
    rest of the table, and the text is built while the pool cuts the crops."""
    layers = [json.dumps(layer.name) for layer in plan.layers]
    sheets = [[json.dumps(name) for name in names] for names in sheet_names]
    images: dict[int, str] = {}
    fields = []
    for li, c, r, k, score, y, x, (x0, y0, x1, y1) in zip(
            rows.layer.tolist(), rows.channel.tolist(), rows.rank.tolist(), rows.image.tolist(),
            rows.score.tolist(), rows.y.tolist(), rows.x.tolist(), rows.box.tolist()):
        image = images.get(k)
        if image is None:
            image = images[k] = json.dumps(state.images[k])
        fields.append(f'{{"layer": {layers[li]}, "channel": {c}, "rank": {r}, "image": {image}, '
                      f'"score": {_json_float(score)}, "position": [{y}, {x}], "box": [{x0}, {y0}, {x1}, {y1}], '
                      f'"sheet": {sheets[li][c // SHEET_ROWS]}, "tile": [{(c % SHEET_ROWS) * tile}, {r * tile}, {tile}]')
    return fields


def table_text(fields: list[str], unreadable: np.ndarray) -> str:
    """The table's lines: each row's fields closed, with `"unreadable": true` where `unreadable[row]`
    (a winner whose image could not be read again: its tile is blank)."""
    ends = np.where(unreadable, ', "unreadable": true}', "}").tolist() if len(fields) else []
    return "".join(f"{row}{end}\n" for row, end in zip(fields, ends))


# ---------------------------------------------------------------- the page's data

def page_data(plan: Plan, state: AtlasState, options: AtlasOptions, sheets: Sheets, output: Path) -> dict:
    """What the page shows (`report.atlas_page.write_page` documents the keys)."""
    images = []
    for p in state.images:
        try:
            images.append(os.path.relpath(p, output))
        except ValueError:  # another drive on Windows
            images.append(p)
    layers = []
    for layer, top, names, onames in zip(plan.layers, state.tops, sheets.names, sheets.overlay_names):
        fld = plan.fields[layer.name]
        ids = np.where(top.ids == EMPTY, -1, top.ids)
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


# ---------------------------------------------------------------- all of it

def write_atlas(plan: Plan, state: AtlasState, output: Path, options: AtlasOptions,
                note: Callable[[str], None]) -> Written:
    """Cut every winner's crop (one read per winning image) and write sheets, table and page.

    The winning images are read, cut and the finished sheets encoded in a thread pool (OpenCV
    releases the GIL), in the order that completes the first sheets soonest, while this thread
    builds the table.
    """
    output = Path(output)
    rows = winners(plan, state)
    sheets = Sheets(plan, rows, options, output)
    winning = winning_images(rows, sheets)
    note(f"cutting {len(rows)} crops from {len(winning.ids)} winning images")
    cutter = Cutter(plan, state, rows, sheets, options.tile)
    workers = min(4, usable_cpus())
    with ThreadPoolExecutor(workers) as pool:
        if options.overlay:
            unreadable = _cut_with_maps(cutter, winning, plan, state, options, pool)
            fields = table_fields(plan, state, rows, sheets.names, options.tile)
        else:
            futures: list[Future] = [pool.submit(_read_and_cut, cutter, state.images[i], group, plan, options.resize)
                                     for i, group in zip(winning.ids, winning.rows)]
            fields = table_fields(plan, state, rows, sheets.names, options.tile)  # meanwhile, in this thread
            unreadable = {i: why for i, why in zip(winning.ids, (f.result() for f in futures)) if why}
        sheets.write_rest()
    for image_id, why in sorted(unreadable.items()):
        note(f"warning: {why} (a winner; its tiles are left blank)")
    table = write_text(output / TABLE, table_text(fields, np.isin(rows.image, list(unreadable))))
    page = write_page(output, page_data(plan, state, options, sheets, output))
    return Written(table, page.page, sheets.files + 3, sheets.bytes + page.bytes + table.stat().st_size)
