"""The Python API: `export`, `load` and `grid`, for notebooks and scripts.

    import onnxviz
    onnxviz.export("mobilenet", "mobilenet.onnx", alpha=0.25, input_size=128)
    model = onnxviz.load("mobilenet.onnx")
    acts = model.activations(["cat.jpg", "car.jpg"])      # {layer: [N, C, H, W] array}
    model.predict("cat.jpg")                              # [[Prediction('tabby', 0.71, 281), ...]]
    model.cam("cat.jpg")                                  # Grad-CAM of the top 3 classes, [N, 3, h, w]
    model.factorize("cat.jpg", "block4_conv3", parts=5)   # the layer's 5 parts: maps and channels
    onnxviz.grid(acts["conv1"][0])                        # RGB uint8 picture of the channels

Images may be file paths, numpy arrays (`[H, W, 3]` RGB or a batch `[N, H, W, 3]`, uint8 or
float 0..255) or PIL images; they are resized to the model's input as the command does.
Errors are `onnxviz.OnnxvizError`s that name the parameter at fault.
"""
from __future__ import annotations

import base64
import html
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from onnxviz.errors import ImageError, OptionError
from onnxviz.model.labels import Prediction

DEFAULT_BATCH = 8


# ---------------------------------------------------------------- export

def export(source: Any, output: str | Path | None = None, *, progress: Callable[[str], None] | None = None,
           **options: Any):
    """Export `source` (a keras.applications name, a .keras/.h5/.onnx path, a `keras.Model` or an
    `onnx.ModelProto`) to an onnxviz file; `options` are `ExportOptions` fields (onnxviz.exporter.sources.base)
    (`layers=["block*"]`, `weights="none"`, `mean=[...]`, ...). Returns an `ExportResult`."""
    from onnxviz.exporter.pipeline import export as run
    from onnxviz.exporter.sources.base import ExportOptions

    known = [f.name for f in fields(ExportOptions)]
    unknown = [name for name in options if name not in known]
    if unknown:
        raise OptionError(f"export has no option {', '.join(map(repr, unknown))}; its options are "
                          f"{', '.join(known)}")
    from onnxviz.render.probe import check_renders

    return run(source, output, ExportOptions(**options), progress=progress or notebook_progress(),
               verify=check_renders)


def demo_model() -> Path:
    """The MobileNet shipped with onnxviz (alpha 0.25, 128 x 128, ImageNet weights), an onnxviz file."""
    from onnxviz.render.demo import demo_model as shipped

    return shipped()


def demo_photo() -> Path:
    """The photo shipped with onnxviz (a cup of espresso, CC0)."""
    from onnxviz.render.demo import demo_photo as shipped

    return shipped()


# ---------------------------------------------------------------- pictures

class GridImage(np.ndarray):
    """An RGB uint8 picture (`[H, W, 3]`) that Jupyter shows as an image."""

    def _repr_png_(self) -> bytes:
        from onnxviz.picture.encoding import encode_png

        return encode_png(np.asarray(self)[..., ::-1])  # RGB as OpenCV's BGR order


def grid(maps: Any, *, max_channels: int | None = 64, channels: tuple[int, int] | None = None,
         sort: str = "index", norm: str = "channel", colormap: str = "viridis") -> GridImage:
    """One layer's maps for one image (`[C, H, W]`) tiled into an RGB uint8 picture.

    Each tile is a channel, min-max normalised on its own (`norm="channel"`) or on the
    layer's range (`norm="layer"`); `sort` by `index`, `mean` or `max`.
    """
    from onnxviz.picture.tiling import layer_grid

    array = np.asarray(maps)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise OptionError(f"{{maps}} must be one image's maps [C, H, W] (or [1, C, H, W]); got shape "
                          f"{list(array.shape)}; for a batch pick one image: acts[name][i]", params=("maps",))
    drawn = layer_grid(array, max_channels=max_channels, channels=channels, sort=sort, norm=norm, colormap=colormap)
    return np.ascontiguousarray(drawn.image[..., ::-1]).view(GridImage)


class Activations(dict):
    """Layer name -> `[N, C, H, W]` maps (or `[N, K]` vectors) for a batch; shows itself in Jupyter
    as a table of the first image's grids (the first `shown_channels` channels of the first
    `shown_layers` layers; the arrays themselves hold every channel: `onnxviz.grid` draws more)."""

    shown_layers = 12
    shown_channels = 32

    def _repr_html_(self) -> str:
        rows = []
        for name, value in list(self.items())[:self.shown_layers]:
            if value.ndim == 4 and min(value.shape[2:]) > 1:
                png = base64.b64encode(grid(value[0], max_channels=self.shown_channels)._repr_png_()).decode()
                picture = f"<img src='data:image/png;base64,{png}' style='max-width:480px;image-rendering:pixelated'>"
            else:
                picture = "vector"
            rows.append(f"<tr><td><code>{html.escape(name)}</code></td><td>{list(value.shape)}</td>"
                        f"<td>{picture}</td></tr>")
        more = len(self) - self.shown_layers
        capped = any(v.ndim == 4 and v.shape[1] > self.shown_channels for v in list(self.values())[:self.shown_layers])
        parts = ["first image shown"] + ([f"at most {self.shown_channels} channels a layer "
                                          f"(onnxviz.grid(acts[name][0], max_channels=None) draws all)"] if capped else [])
        parts += [f"{more} more layers not shown"] if more > 0 else []
        return f"<table>{''.join(rows)}</table><p>{'; '.join(parts)}</p>"

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}: {list(value.shape)}" for name, value in list(self.items())[:6])
        return f"<Activations of {len(self)} layers: {shown}{', ...' if len(self) > 6 else ''}>"


class LayerTable(list):
    """The exposed outputs (`LayerInfo`s), shown as a table: index, name, class, shape, channels."""

    def _rows(self) -> list[tuple[str, ...]]:
        return [(str(i), layer.name, layer.cls or layer.op,
                 "x".join("N" if d is None else str(d) for d in layer.shape), str(layer.channels or ""))
                for i, layer in enumerate(self)]

    def __repr__(self) -> str:
        rows = [("", "name", "class", "shape", "channels"), *self._rows()]
        widths = [max(len(r[c]) for r in rows) for c in range(5)]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("", "name", "class", "shape", "channels"))
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in self._rows())
        return f"<table><tr>{head}</tr>{body}</table>"


class NotebookProgress:
    """Progress for a notebook cell: one line, updated in place (IPython's display); elsewhere nothing."""

    def __init__(self) -> None:
        from IPython.display import Pretty, display

        self.text = Pretty  # shown as it is (a str would show with its quotes)
        self.handle = display(Pretty(""), display_id=True)
        import time

        self.started = time.perf_counter()

    def __call__(self, done: int, total: int | None = None, name: str = "") -> None:
        import time

        elapsed = time.perf_counter() - self.started
        if total is None:  # export's steps: `done` is the step's text
            self.handle.update(self.text(f"[{elapsed:6.1f}s] {done}"))
        else:
            self.handle.update(self.text(f"{done}/{total} images, {done / max(elapsed, 1e-9):.1f}/s  {name}"))


def notebook_progress() -> NotebookProgress | None:
    """A progress line when running in a Jupyter kernel, else None."""
    import sys

    if "IPython" not in sys.modules:  # a kernel has imported it; a script has not
        return None
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None or getattr(shell, "kernel", None) is None:  # a terminal IPython, or none running
        return None
    progress = NotebookProgress()
    return progress if progress.handle is not None else None


# ---------------------------------------------------------------- models

def load(path: str | Path, provider: str = "auto", *, threads: int | None = None) -> "Model":
    """Open an onnxviz file on `provider` ("auto": CUDA when it really runs, else CPU)."""
    from onnxviz.run.session import open_session

    return Model(open_session(Path(path), provider, threads=threads, long_run=False))


class Model:
    """An onnxviz file opened in ONNX Runtime."""

    def __init__(self, session: Any) -> None:
        self._session = session
        self.path: Path = session.path
        self.info = session.info
        self.provider: str = session.provider  # what ONNX Runtime really runs on
        self.fallback: str | None = session.fallback  # why not CUDA, when "auto" fell back

    def __repr__(self) -> str:
        return (f"<onnxviz.Model {self.path.name}: {len(self.info.layers)} outputs, input "
                f"{self.info.height}x{self.info.width}, on {self.provider}>")

    @property
    def layers(self) -> LayerTable:
        """The exposed outputs in network order (`LayerInfo`: name, op, shape, layout; `cls` the
        source's class where it differs from `op`), shown as a table."""
        return LayerTable(self.info.layers)

    def activations(self, images: Any, layers: str | Sequence[str] | None = None, *,
                    batch_size: int = DEFAULT_BATCH, resize: str | None = None,
                    channels: str | None = None) -> Activations:
        """Layer name -> maps of every image, `[N, C, H, W]` (vectors `[N, K]`), in network order.
        `layers`: names or globs (default: every output of the file). `resize`: as the file says
        (torchvision's for `--preprocess torchvision`), else `stretch`; or stretch, crop, pad, N.
        `channels`: the order of array images, "rgb" or "bgr" (OpenCV's); by default RGB, with a
        warning for an array whose colours look BGR."""
        names = self._names(layers)
        pixels = to_batch(images, self.info.height, self.info.width, resize or self.info.resize or "stretch",
                          channels)
        parts = self._run(pixels, names, batch_size)
        return Activations((name, np.concatenate([p[name] for p in parts])) for name in names)

    def predict(self, images: Any, top_k: int = 5, *, batch_size: int = DEFAULT_BATCH,
                resize: str | None = None, channels: str | None = None) -> list[list[Prediction]]:
        """The `top_k` classes of every image, best first (`channels` as for `activations`)."""
        from onnxviz.model.labels import top_predictions

        output = self.info.prediction_output
        if output is None:
            raise OptionError(f"'{self.path.name}' has no class-score output, so there is nothing to predict; "
                              f"export the model with its classifier")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise OptionError(f"{{top_k}} must be a positive integer, got {top_k!r}", params=("top_k",))
        pixels = to_batch(images, self.info.height, self.info.width, resize or self.info.resize or "stretch",
                          channels)
        scores = np.concatenate([p[output] for p in self._run(pixels, [output], batch_size)])
        return [top_predictions(s, top_k, self.info.labels, self.info.prediction_is_probability) for s in scores]

    def cam(self, images: Any, classes: Any = None, layer: str | None = None, top_k: int = 3, *,
            method: str = "gradcam", batch_size: int = DEFAULT_BATCH, resize: str | None = None,
            channels: str | None = None):
        """Where the network looks: class activation maps at `layer` (default: the last feature map
        before the classifier), `CamResult.maps` `[N, K, h, w]`.

        `method="gradcam"`: Grad-CAM of the `top_k` classes of each image, or of `classes` (an index,
        a list for every image, or one list per image), computed by ONNX Runtime from the file's
        own head (no framework). `method="eigencam"`: the class-agnostic map (the first principal
        component of the layer's activations), for any model. `resize`, `channels`: as for `activations`.
        """
        from onnxviz.explain.explainer import (CamBatch, check_classes, check_method, check_top_k, eigencam_batch,
                                               feature_layer)
        from onnxviz.explain.results import CamResult

        method = check_method(method)
        explainer = self._explainer()
        where = f"'{self.path.name}'"
        if method == "eigencam":
            if layer is None:
                layer = self._last_map()
            feature_layer(self.info, layer, where)
            pixels = to_batch(images, self.info.height, self.info.width, resize or self.info.resize or "stretch",
                              channels)
            maps = np.concatenate([p[layer] for p in self._run(pixels, [layer], batch_size)])
            batch = eigencam_batch(maps)
            return CamResult(batch.maps, None, None, None, layer, method, _u8(pixels), batch.notes)
        n_classes = explainer.classes
        if classes is None:
            top_k = check_top_k(top_k, n_classes)
        if layer is None:
            layer = explainer.default_layer()
        feature_layer(self.info, layer, where)
        pixels = to_batch(images, self.info.height, self.info.width, resize or self.info.resize or "stretch",
                          channels)
        wanted = check_classes(classes, len(pixels), n_classes) if classes is not None else None
        self._run_checks(batch_size)
        parts: list[CamBatch] = []
        for i in range(0, len(pixels), batch_size):
            chosen = wanted[i:i + batch_size] if wanted is not None else None
            parts.append(explainer.gradcam(pixels[i:i + batch_size], layer, top_k, chosen, start=i))
        maps = np.concatenate([p.maps for p in parts])
        picked = np.concatenate([p.classes for p in parts])
        scores = np.concatenate([p.scores for p in parts]) if parts[0].scores is not None else None
        labels = None
        if self.info.labels is not None:
            labels = [[self.info.labels[c] if c < len(self.info.labels) else str(c) for c in row] for row in picked]
        notes = [note for p in parts for note in p.notes]
        return CamResult(maps, picked, scores, labels, layer, method, _u8(pixels), notes)

    def factorize(self, images: Any, layer: str, parts: int = 5, *, batch_size: int = DEFAULT_BATCH,
                  resize: str | None = None, channels: str | None = None):
        """What `layer` sees as `parts` parts: non-negative matrix factorization of its activations
        (positions of every image x channels; negative values set to 0), shared by the images.
        `Factorization.maps` `[N, parts, h, w]`, `.channels` `[parts, C]`, `.error`."""
        from onnxviz.explain.explainer import feature_layer
        from onnxviz.explain.factorize import check_parts, factorize_maps
        from onnxviz.explain.results import Factorization

        parts = check_parts(parts)
        feature_layer(self.info, layer, f"'{self.path.name}'")
        pixels = to_batch(images, self.info.height, self.info.width, resize or self.info.resize or "stretch",
                          channels)
        maps = np.concatenate([p[layer] for p in self._run(pixels, [layer], batch_size)])
        found = factorize_maps(maps, parts)
        notes = ["the layer's activations are all zero (or negative) for these images: nothing to factorize"] \
            if found.zero else []
        return Factorization(found.maps, found.channels, found.error, layer, found.clipped, _u8(pixels), notes)

    def render(self, images: str | Path | Iterable[str | Path], output: str | Path = "onnxviz-out",
               progress: Callable[[int, int, str], None] | None = None, **options: Any):
        """What `onnxviz render` does: grids, predictions and a report per image file into `output`.
        `options` are `render.RenderOptions` fields (`layers`, `max_channels`, `sort`, ...)."""
        from onnxviz.render.options import RenderOptions
        from onnxviz.render.pipeline import render

        known = [f.name for f in fields(RenderOptions)]
        unknown = [name for name in options if name not in known]
        if unknown:
            raise OptionError(f"render has no option {', '.join(map(repr, unknown))}; its options are "
                              f"{', '.join(known)}")
        paths = [images] if isinstance(images, (str, Path)) else list(images)
        if not all(isinstance(p, (str, Path)) for p in paths):
            raise OptionError("{images} must be image files or folders for render (it writes a report per "
                              "file); for arrays use model.activations() and onnxviz.grid()", params=("images",))
        options.setdefault("provider", self.provider)
        return render(self.path, [Path(p) for p in paths], Path(output), RenderOptions(**options),
                      progress or notebook_progress())

    # ------------------------------------------------------------ internals

    def _names(self, layers: str | Sequence[str] | None) -> list[str]:
        from onnxviz.model.selection import select_layers

        if layers is None:
            return [layer.name for layer in self.info.layers]
        patterns = [layers] if isinstance(layers, str) else list(layers)
        return [layer.name for layer in select_layers(self.info, patterns, f"'{self.path.name}'", every_output=True,
                                                      hint=". See model.layers")]

    def _explainer(self):
        if getattr(self, "_explain", None) is None:
            from onnxviz.explain.explainer import Explainer

            self._explain = Explainer(self.path, self.info, self.provider, self._session.threads)
        return self._explain

    def _last_map(self) -> str:
        maps = self.info.feature_maps
        if not maps:
            raise OptionError(f"'{self.path.name}' exposes no 4-D feature maps; export it again with its layers")
        wide = [layer for layer in maps if isinstance(layer.shape[2], int) and layer.shape[2] * layer.shape[3] > 1]
        return (wide or maps)[-1].name

    @staticmethod
    def _run_checks(batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise OptionError(f"{{batch_size}} must be a positive integer, got {batch_size!r}",
                              params=("batch_size",))

    def _run(self, pixels: np.ndarray, names: list[str], batch_size: int) -> list[dict[str, np.ndarray]]:
        self._run_checks(batch_size)
        return [self._session.run(pixels[i:i + batch_size], names) for i in range(0, len(pixels), batch_size)]


# ---------------------------------------------------------------- images

def _u8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.round(pixels), 0, 255).astype(np.uint8)


class ImageWarning(UserWarning):
    """An array image taken with a conversion, or one whose colours look like BGR."""


CHANNEL_ORDERS = ("rgb", "bgr")


def to_batch(images: Any, height: int, width: int, resize: str = "stretch",
             channels: str | None = None) -> np.ndarray:
    """Paths, arrays or PIL images -> float32 `[N, height, width, 3]` RGB 0..255, as the file takes.
    `channels`: the order of array images ("rgb", "bgr"); None: RGB, warning when they look BGR."""
    if channels is not None and channels not in CHANNEL_ORDERS:
        raise OptionError(f"{{channels}} must be 'rgb' or 'bgr', got {channels!r}", params=("channels",))
    if isinstance(images, np.ndarray) and images.ndim == 4:
        items: list[Any] = list(images)
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        items = [images]
    if not items:
        raise ImageError("images is empty; give image paths, arrays [H, W, 3] or PIL images")
    return np.stack([_one(item, n, height, width, resize, channels) for n, item in enumerate(items)])


def _one(item: Any, n: int, height: int, width: int, resize: str, channels: str | None = None) -> np.ndarray:
    from onnxviz.run.images import load_image, resize_image

    if isinstance(item, (str, Path)):
        if Path(item).is_dir():
            raise ImageError(f"image {n} '{item}' is a folder; activations and predict take image files, arrays "
                             f"or PIL images: list its files (sorted(Path('{item}').glob('*.jpg'))), or give the "
                             f"folder to model.render")
        rgb = load_image(Path(item))
    elif type(item).__module__.startswith("PIL."):
        rgb = np.asarray(item.convert("RGB"))
    elif isinstance(item, np.ndarray):
        rgb = _array(item, n, channels)
        if rgb.shape[:2] == (height, width):
            return rgb.astype(np.float32)
        rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    else:
        raise ImageError(f"image {n} is a {type(item).__name__}; give a file path, a numpy array [H, W, 3] "
                         f"(RGB, uint8 or float 0..255) or a PIL image")
    return resize_image(rgb, height, width, resize).astype(np.float32)


# An array whose mean blue exceeds its mean red by this many levels (and is above its green) looks
# like OpenCV's BGR order: the photos of the test data, reversed, are 45 to 107 levels apart, and in
# RGB 5 to 95 levels the other way; a blue scene in RGB (a rocket against the sky) 30.
BGR_LOOK_LEVELS = 40


def _array(a: np.ndarray, n: int, channels: str | None = None) -> np.ndarray:
    import warnings

    expected = "[H, W, 3] RGB (channels last), or a batch [N, H, W, 3], uint8 or float 0..255"
    if a.dtype == np.bool_ or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
        raise ImageError(f"image {n} has dtype {a.dtype}; expected {expected}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim == 2:
        warnings.warn(f"image {n} has one channel ({list(a.shape)}): taken as grey, its values repeated into "
                      f"R, G and B for this RGB model", ImageWarning, stacklevel=4)
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 1:
        hint = "; it looks channels-first: use a.transpose(1, 2, 0)" if a.ndim == 3 and a.shape[0] in (1, 3) else ""
        raise ImageError(f"image {n} has shape {list(a.shape)}; expected {expected}{hint}")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise ImageError(f"image {n} has NaN or infinite values; expected pixels 0..255")
    low, high = float(a.min()), float(a.max())
    if low < 0 or high > 255:
        hint = ("; for 16-bit pixels divide by 257" if high <= 65535 and low >= 0 and np.issubdtype(a.dtype, np.integer)
                else "; the model's own preprocessing is in the file: give the pixels before any normalisation")
        raise ImageError(f"image {n} has values from {low:g} to {high:g}; expected pixels 0..255{hint}")
    if np.issubdtype(a.dtype, np.floating) and 0 < high <= 1:
        raise ImageError(f"image {n} is float with values from {low:g} to {high:g}, which looks like pixels scaled "
                         f"to 0..1; the model takes 0..255: pass a * 255")
    if channels == "bgr":
        return a[..., ::-1]
    if channels is None:
        blue, green, red = (float(a[..., c].mean()) for c in (2, 1, 0))
        if blue - red > BGR_LOOK_LEVELS and blue > green:
            warnings.warn(f"image {n} looks BGR (mean blue {blue:.0f} against red {red:.0f}), as cv2.imread "
                          f"gives; it is taken as RGB: pass channels='bgr' (or a[..., ::-1]) if it came from "
                          f"OpenCV, channels='rgb' if it really is RGB", ImageWarning, stacklevel=4)
    return a
