"""What a run has learnt and keeps: a `TopN` per layer, the images seen, those that failed, and
the state file that lets a run resume and later runs add images (`atlas-state.npz`, written
atomically). `winners` lists every kept entry with its crop box.

Ties go to the image that comes first in the dataset (its `id`), so that a resumed or merged
run gives the same result as one run over every image in that order.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onnxviz import __version__
from onnxviz.atlas.options import AtlasOptions
from onnxviz.atlas.plan import Plan
from onnxviz.errors import OutputError
from onnxviz.files import staged

STATE_FILE = "atlas-state.npz"
EMPTY = np.iinfo(np.int64).max  # the id of an empty slot: after every real image


class TopN:
    """The best `n` (score, image id, position) of each of `channels` channels, in fixed memory.

    Order: higher score first; equal scores by smaller image id. NaN scores count as -inf.
    """

    def __init__(self, channels: int, n: int) -> None:
        self.scores = np.full((channels, n), -np.inf, np.float32)
        self.ids = np.full((channels, n), EMPTY, np.int64)
        self.positions = np.zeros((channels, n), np.int64)

    @property
    def n(self) -> int:
        return self.scores.shape[1]

    @property
    def channels(self) -> int:
        return self.scores.shape[0]

    def _keep(self, scores: np.ndarray, ids: np.ndarray, positions: np.ndarray, rows: np.ndarray | None = None) -> None:
        """The best n of each row of these candidates; `rows`: which channels they are (default all)."""
        scores = np.where(np.isnan(scores), -np.inf, scores).astype(np.float32, copy=False)
        order = np.lexsort((ids, -scores), axis=1)[:, : self.n]
        best = [np.take_along_axis(a, order, 1) for a in (scores, ids, positions)]
        if rows is None:
            self.scores, self.ids, self.positions = best
        else:
            self.scores[rows], self.ids[rows], self.positions[rows] = best

    def update(self, scores: np.ndarray, positions: np.ndarray, ids: np.ndarray) -> None:
        """Add a batch: `scores` and `positions` `[B, channels]`, `ids` `[B]`."""
        scores, positions = np.asarray(scores), np.asarray(positions)
        ids = np.asarray(ids, np.int64)
        if scores.shape != (len(ids), self.channels) or positions.shape != scores.shape:
            raise ValueError(f"expected [{len(ids)}, {self.channels}] scores and positions, got "
                             f"{scores.shape} and {positions.shape}")
        scores = np.where(np.isnan(scores), -np.inf, scores).astype(np.float32, copy=False).T  # [channels, B]
        # Only channels where some new entry beats the N-th kept one need sorting: late in a scan, few.
        worst_s, worst_i = self.scores[:, -1:], self.ids[:, -1:]
        enters = (scores > worst_s) | ((scores == worst_s) & (ids[None, :] < worst_i))
        rows = np.flatnonzero(enters.any(1))
        if rows.size == 0:
            return
        s, i, p = self.scores[rows], self.ids[rows], self.positions[rows]
        self._keep(np.concatenate([s, scores[rows]], 1),
                   np.concatenate([i, np.broadcast_to(ids, (len(rows), len(ids)))], 1),
                   np.concatenate([p, positions.T[rows].astype(np.int64)], 1), rows)

    def offer(self, channels: np.ndarray, scores: np.ndarray, ids: np.ndarray, positions: np.ndarray) -> None:
        """Add sparse candidates: entry k is (channel, score, image id, position)."""
        channels = np.asarray(channels, np.int64)
        if channels.size == 0:
            return
        order = np.argsort(channels, kind="stable")
        ch = channels[order]
        counts = np.bincount(ch, minlength=self.channels)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        col = np.arange(len(ch)) - starts[ch]
        shape = (self.channels, int(counts.max()))
        s = np.full(shape, -np.inf, np.float32)
        i = np.full(shape, EMPTY, np.int64)
        p = np.zeros(shape, np.int64)
        s[ch, col] = np.asarray(scores)[order]
        i[ch, col] = np.asarray(ids)[order]
        p[ch, col] = np.asarray(positions)[order]
        self._keep(np.concatenate([self.scores, s], 1), np.concatenate([self.ids, i], 1),
                   np.concatenate([self.positions, p], 1))

    def merge(self, other: "TopN") -> None:
        """Merge another TopN over other images: exactly the TopN of both image sets."""
        if other.channels != self.channels:
            raise ValueError(f"cannot merge {other.channels} channels into {self.channels}")
        self._keep(np.concatenate([self.scores, other.scores], 1), np.concatenate([self.ids, other.ids], 1),
                   np.concatenate([self.positions, other.positions], 1))


@dataclass
class AtlasState:
    """Everything a run has learnt so far; `images[i]` has id i."""

    fingerprint: dict
    images: list[str]
    done: np.ndarray  # uint8 per image: 1 once it went through the network (or failed)
    failed: dict[int, str]  # id -> why it could not be read
    tops: list[TopN]

    @classmethod
    def new(cls, plan: Plan, top: int) -> "AtlasState":
        return cls(plan.fingerprint, [], np.zeros(0, np.uint8), {},
                   [TopN(int(layer.shape[1]), top) for layer in plan.layers])

    def add_images(self, paths: list[str]) -> list[tuple[int, str]]:
        """Give new paths the next ids; return (id, path) of every image not done yet."""
        known = set(self.images)
        fresh = [p for p in dict.fromkeys(paths) if p not in known]
        self.images.extend(fresh)
        self.done = np.concatenate([self.done, np.zeros(len(fresh), np.uint8)])
        return [(i, self.images[i]) for i in np.flatnonzero(self.done == 0)]

    def save(self, folder: Path) -> Path:
        meta = {"format": 1, "onnxviz_version": __version__, "fingerprint": self.fingerprint,
                "images": self.images, "failed": {str(k): v for k, v in self.failed.items()}}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8), "done": self.done}
        for i, t in enumerate(self.tops):
            arrays.update({f"scores{i}": t.scores, f"ids{i}": t.ids, f"positions{i}": t.positions})
        with staged(Path(folder) / STATE_FILE) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        return Path(folder) / STATE_FILE

    @classmethod
    def load(cls, path: Path) -> "AtlasState":
        try:
            with np.load(path) as data:
                meta = json.loads(bytes(data["meta"]).decode())
                count = len(meta["fingerprint"]["layers"])
                tops = []
                for i in range(count):
                    t = TopN(1, 1)
                    t.scores, t.ids, t.positions = data[f"scores{i}"], data[f"ids{i}"], data[f"positions{i}"]
                    tops.append(t)
                return cls(meta["fingerprint"], list(meta["images"]), data["done"].astype(np.uint8),
                           {int(k): v for k, v in meta["failed"].items()}, tops)
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as exc:
            raise OutputError(f"'{path}' is damaged ({type(exc).__name__}: {exc}); delete it to start the atlas "
                              f"again, or choose another -o") from exc


def _describe(fp: dict) -> dict[str, str]:
    """What each fingerprint key says, as message text (`{param}` fields for the options)."""
    return {"model_sha256": f"model sha256 {fp['model_sha256'][:12]}", "layers": f"layers {','.join(fp['layers'])}",
            "top": f"{{top}} {fp['top']}", "score": f"{{score}} {fp['score']}", "resize": f"{{resize}} {fp['resize']}"}


def resume_state(output: Path, plan: Plan, options: AtlasOptions) -> tuple[AtlasState, bool]:
    """The state in `output` (refused when made with another model or options), or a new one."""
    path = output / STATE_FILE
    if not path.exists():
        return AtlasState.new(plan, options.top), False
    state = AtlasState.load(path)
    old, new = state.fingerprint, plan.fingerprint
    differ = [k for k in ("model_sha256", "layers", "top", "score", "resize") if old.get(k) != new.get(k)]
    if differ:
        was, now = _describe(old), _describe(new)
        what = "; ".join(f"it has {was[k]}, this run {now[k]}" for k in differ)
        raise OutputError(f"'{output}' holds an atlas made with another model or options ({what}); "
                          f"run with the same model and options to resume or add images, or choose another -o",
                          params=tuple(k for k in differ if k in ("top", "score", "resize")))
    return state, True


@dataclass
class Winners:
    """Every (layer, channel, rank) kept, in table order, as flat arrays: one entry per row."""

    layer: np.ndarray  # index into plan.layers
    channel: np.ndarray
    rank: np.ndarray
    image: np.ndarray  # image id
    score: np.ndarray  # float32
    y: np.ndarray  # position of the maximum in the map
    x: np.ndarray
    box: np.ndarray  # [rows, 4] x0, y0, x1, y1 (end exclusive) in the network's input pixels

    def __len__(self) -> int:
        return len(self.image)


def winners(plan: Plan, state: AtlasState) -> Winners:
    """The kept entries of every layer with their crop boxes (`Field.boxes`)."""
    height, width = plan.info.height, plan.info.width
    parts = []
    for li, (layer, top) in enumerate(zip(plan.layers, state.tops)):
        fld = plan.fields[layer.name]
        c, r = np.nonzero(top.ids != EMPTY)  # row-major: channel, then rank
        y, x = np.divmod(top.positions[c, r], int(layer.shape[3]))
        parts.append((np.full(len(c), li), c, r, top.ids[c, r], top.scores[c, r], y, x, fld.boxes(y, x, height, width)))
    if not parts:
        empty = np.zeros(0, np.int64)
        return Winners(empty, empty, empty, empty, np.zeros(0, np.float32), empty, empty, np.zeros((0, 4), np.int64))
    return Winners(*(np.concatenate([p[k] for p in parts]) for k in range(8)))
