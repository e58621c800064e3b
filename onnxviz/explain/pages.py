"""What `render` shows of where the network looks: per image, the class activation maps of its top
classes and the factorized parts of a few layers, as pictures and a summary entry; per run, the
parts of one layer factorized over every image at once (the same part has the same colour).

`RenderExplainer` is made once per run (`check` fails early on bad options); `batch` hands back a
batch's share (`ExplainBatch`: its Grad-CAM, run by ONNX Runtime beside render's own session, and its
parts, made in a painting thread); `image` turns one image's share into files and the `explain`
entry of its summary; `run` writes the joint factorization.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from onnxviz.errors import OptionError
from onnxviz.explain.errors import HeadError
from onnxviz.explain.explainer import CamBatch, Explainer, feature_layer
from onnxviz.explain.factorize import MAX_ITER, Parts, factorize_each, factorize_maps, strongest
from onnxviz.explain.overlay import PALETTE, heat_overlay, heat_scale, parts_overlay
from onnxviz.model.info import LayerInfo, ModelInfo

CAM_CLASSES = 3  # maps per image: the top 3 classes (at most render's top_k)
STRONGEST = 6  # channels listed per part
# Render's default parts layers are the deep stages', of at most this many positions, where parts are
# objects and their pieces (earlier ones are edges and textures) and the factorization is cheap enough
# for every image: with the 28 x 28 stage as well, ResNet50's render of 100 photos took 1.27x the time
# without explanations, its parts 1.24x alone; VGG16's 56 x 56 to 224 x 224 stages cost 300 s more
# (benchmarks/RESULTS.md 26.1, 28). --parts-layers chooses any layer.
PARTS_MAX_POSITIONS = 14 * 14
# The parts on an image's page get a budget: RENDER_SWEEPS sweeps of 3 accelerated passes, more for a layer
# of fewer than RENDER_WORK / RENDER_SWEEPS activations (a sweep of a small layer costs little), at most
# MAX_ITER, fewer once they converge (the API's runs until it converges, the run page's joint parts get
# JOINT_SWEEPS). On VGG16's
# and ResNet50's layers of at most 28 x 28 positions an image's error ends within 0.7% and 9% of the
# converged one, on MobileNet's default layers within 3% (benchmarks/RESULTS.md 28, tests); the page
# shows the error it reached.
RENDER_SWEEPS, RENDER_PASSES, RENDER_WORK = 10, 3, 10 * 2 ** 16


def render_sweeps(positions: int, channels: int) -> int:
    """The sweeps an image's parts of a layer of `positions` x `channels` get."""
    return int(min(MAX_ITER, max(RENDER_SWEEPS, RENDER_WORK // max(1, positions * channels))))


JOINT_SWEEPS = 20  # of RENDER_PASSES: ResNet50's conv5 over 8 photos, 1.0034x the error of 200 plain sweeps in 0.43x their time (RESULTS 28)
JOINT_POSITIONS = 49  # the run page's layer has at least 7x7 positions where one has them
JOINT_VALUES = 32 << 20  # the run's joint factorization holds at most this many activations
FOLDER = "explain"
QUALITY = 88


@dataclass
class ExplainOptions:
    cam: bool = True
    cam_layer: str | None = None
    parts: int = 5  # 0: no factorization
    parts_layers: list[str] = field(default_factory=list)  # globs; default: one layer per stage

    def check(self) -> None:
        if isinstance(self.parts, bool) or not isinstance(self.parts, int) or self.parts < 0:
            raise OptionError(f"{{parts}} must be 0 (no factorization) or a number of parts, got {self.parts!r}",
                              params=("parts",))


def _hex(colour: np.ndarray) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in colour)


def _jpeg(rgb: np.ndarray) -> bytes:
    from onnxviz.picture.encoding import encode_jpeg

    return encode_jpeg(np.ascontiguousarray(rgb[..., ::-1]), QUALITY)


class RenderExplainer:
    """The explanations of one render run."""

    def __init__(self, model: Path, info: ModelInfo, provider: str, options: ExplainOptions, top_k: int,
                 threads: int | None = None, long_run: bool = False) -> None:
        from onnxviz.model.selection import default_layers, select_layers

        options.check()
        self.options, self.info = options, info
        where = str(model)
        self.cam_layer: str | None = None
        self.cam_note: str | None = None
        self.k = max(1, min(CAM_CLASSES, top_k or CAM_CLASSES))
        # the head runs beside render's drawing threads: its ORT threads do not spin either
        self.explainer = Explainer(model, info, provider, threads, long_run=long_run, spinning=False)
        if options.cam_layer is not None:
            feature_layer(info, options.cam_layer, where, "cam_layer")
        if options.cam:
            try:
                self.k = min(self.k, self.explainer.classes)
                self.cam_layer = options.cam_layer or self.explainer.default_layer()
                # a head it cannot differentiate fails here; the head alone where it can be cut at the layer
                if self.explainer.head_session(self.cam_layer, self.k) is None:
                    self.explainer.session(self.cam_layer, self.k, False)
            except HeadError as exc:
                self.cam_layer, self.cam_note = None, f"no class activation maps: {exc}"
        self.parts_layers: list[LayerInfo] = []
        if options.parts:
            if options.parts_layers:
                chosen = select_layers(info, options.parts_layers, where)
            else:  # one layer per stage, from the first of at most 14 x 14 positions on (else the deepest)
                stages = default_layers(info)
                chosen = [layer for layer in stages if not isinstance(layer.shape[2], int)
                          or not isinstance(layer.shape[3], int) or layer.shape[2] * layer.shape[3] <= PARTS_MAX_POSITIONS]
                chosen = chosen or stages[-1:]
            # a layer of fewer channels or positions than parts is factorized into as many as it has (at least 2)
            self.parts_layers = [layer for layer in chosen if isinstance(layer.shape[2], int)
                                 and min(layer.shape[2] * layer.shape[3], int(layer.shape[1])) >= 2]
        self.joint_layer = self._joint_layer()
        self.joint: list[np.ndarray] = []  # the joint layer's maps of every image so far, in order
        self.joint_images: list[tuple[str, np.ndarray]] = []  # (folder, pixels) for its pictures
        self.joint_found: tuple[list[int], Parts] | None = None  # (images, their joint factorization)
        self.lock = threading.Lock()
        self.scale = _png(heat_scale())  # the colour scale's picture, beside every image's maps

    @property
    def layers(self) -> list[str]:
        """The maps `image` needs from render's session."""
        return [layer.name for layer in self.parts_layers]

    def _joint_layer(self) -> LayerInfo | None:
        """The deepest parts layer of at least 7x7 positions (else the deepest): deep enough for parts to be
        whole objects, fine enough to see where they are."""
        fine = [layer for layer in self.parts_layers if layer.shape[2] * layer.shape[3] >= JOINT_POSITIONS]
        return (fine or self.parts_layers or [None])[-1]

    def _parts(self, layer: LayerInfo) -> int:
        return min(self.options.parts, int(layer.shape[1]), int(layer.shape[2] * layer.shape[3]))

    # ------------------------------------------------------------ per batch and per image

    def batch(self, pixels: np.ndarray, outputs: dict[str, np.ndarray], folders: list[str]) -> "ExplainBatch":
        """A batch's share, made when an image first asks (`ExplainBatch`): the Grad-CAM of its top classes
        (none without class activation maps), from the layer's activations in `outputs` (the render's own
        run) through the head alone where the head can be cut there, else by running the whole graph with
        its gradient on `pixels`; and its parts layers' factorizations. The joint layer's maps are kept
        for the run's."""
        cam_maps = outputs[self.cam_layer] if self.cam_layer in outputs else None
        if self.joint_layer is not None:  # the run's joint factorization, made once every batch has run
            with self.lock:
                for n, folder in enumerate(folders):
                    self.joint_images.append((folder, np.asarray(pixels[n], np.uint8)))
                    self.joint.append(np.array(outputs[self.joint_layer.name][n], np.float32))
        return ExplainBatch(pixels, cam_maps, {name: outputs[name] for name in self.layers}, self)

    def _gradcam(self, pixels: np.ndarray, maps: np.ndarray | None) -> CamBatch | None:
        if self.cam_layer is None:
            return None
        cam = self.explainer.gradcam_of_maps(maps, self.cam_layer, self.k) if maps is not None else None
        return cam if cam is not None else self.explainer.gradcam(pixels, self.cam_layer, self.k)

    def image(self, write: Callable[[str, bytes], str], rgb: np.ndarray, batch: "ExplainBatch", n: int,
              layer_index: dict[str, int], folder: str, atlas: Callable[[str, int], str | None] | None = None) -> dict:
        """Image `n` of a batch: its pictures through `write(name, bytes)`, and its summary entry."""
        entry: dict = {}
        if batch.cam is not None:
            entry["cam"] = self._cam_entry(write, rgb, batch.cam, n)
        elif self.cam_note:
            entry["cam"] = {"note": self.cam_note}
        parts = []
        for layer, found in zip(self.parts_layers, batch.parts(n)):
            tops = found.maps.max(axis=(0, 2, 3))
            file = write(f"{FOLDER}/layer-{layer_index[layer.name]}.jpg", _jpeg(parts_overlay(rgb, found.maps[0], tops)))
            parts.append(self._parts_entry(layer, layer_index[layer.name], found, file, atlas))
        if parts:
            entry["parts"] = parts
        return entry

    def _cam_entry(self, write, rgb: np.ndarray, cam: CamBatch, n: int) -> dict:
        labels = self.info.labels
        maps = []
        for j, c in enumerate(cam.classes[n]):
            m = cam.maps[n, j]
            file = write(f"{FOLDER}/cam-{j}.jpg", _jpeg(heat_overlay(rgb, m)))
            maps.append({"class": int(c), "label": labels[c] if labels and c < len(labels) else str(int(c)),
                         "score": float(cam.scores[n, j]) if cam.scores is not None else None,
                         "max": float(m.max()), "file": file})
        entry = {"layer": self.cam_layer, "shape": list(cam.maps.shape[2:]), "method": "Grad-CAM", "maps": maps,
                 "scale": write(f"{FOLDER}/scale.png", self.scale)}
        if not cam.maps[n].any():
            entry["note"] = ("every map is zero: the layer is zero for this image, or no position of it raises these "
                             "classes' logits")
        return entry

    def _parts_entry(self, layer: LayerInfo, index: int, found, file: str, atlas) -> dict:
        share = found.maps.sum(axis=(0, 2, 3))
        share = share / share.sum() if share.sum() > 0 else share
        parts = []
        for j in range(found.channels.shape[0]):
            channels = strongest(found.channels, j, STRONGEST)
            parts.append({"colour": _hex(PALETTE[j % len(PALETTE)]), "share": round(float(share[j]), 4),
                          "channels": channels,
                          "atlas": [atlas(layer.name, c) for c in channels] if atlas else None})
        entry = {"layer": layer.name, "index": index, "shape": list(layer.shape[1:]), "file": file,
                 "error": round(found.error, 4), "parts": parts}
        if found.zero:
            entry["note"] = "the layer's activations are all zero for this image: no parts"
        elif found.clipped > 0:
            entry["clipped"] = round(found.clipped, 4)
        return entry

    # ------------------------------------------------------------ the run

    def _joint_of(self, folders: list[str]) -> tuple[list[int], Parts | None]:
        """Which of the collected images the joint factorization of `folders` holds (at most JOINT_VALUES
        activations), and the factorization: made once, again only for other images."""
        by_folder = {folder: k for k, (folder, _) in enumerate(self.joint_images)}
        kept = [by_folder[f] for f in folders if f in by_folder]
        per_image = int(np.prod(self.joint_layer.shape[1:]))
        if len(kept) * per_image > JOINT_VALUES:
            kept = kept[:max(1, JOINT_VALUES // per_image)]
        if self.joint_found is None or self.joint_found[0] != kept:
            maps = np.stack([self.joint[k] for k in kept])
            self.joint_found = (kept, factorize_maps(maps, self._parts(self.joint_layer), JOINT_SWEEPS, RENDER_PASSES))
        return self.joint_found

    def prepare_run(self) -> None:
        """Factorize the images of every batch jointly now (render calls it once the last batch has run,
        while its images are still being drawn), so that `run` need not."""
        if self.joint_layer is not None and self.joint:
            self._joint_of([folder for folder, _ in self.joint_images])

    def run(self, write: Callable[[str, bytes], str], order: list[str], index: dict[str, int],
            map_: Callable = map) -> dict | None:
        """The joint factorization of the run's images (in `order`, their folders), or None; each image's
        picture drawn through `map_` (render's threads)."""
        layer = self.joint_layer
        if layer is None or not self.joint:
            return None
        collected = {folder for folder, _ in self.joint_images}
        in_order = [folder for folder in order if folder in collected]
        # the images of this render in the order they ran, as prepare_run factorized them, when they all completed
        ran = [folder for folder, _ in self.joint_images]
        kept, found = self._joint_of(ran if sorted(in_order) == sorted(ran) else in_order)
        if not kept:
            return None
        tops = found.maps.max(axis=(0, 2, 3))

        def picture(i: int) -> dict:
            folder, rgb = self.joint_images[kept[i]]
            return {"folder": folder,
                    "file": write(f"{folder}/{FOLDER}/joint.jpg", _jpeg(parts_overlay(rgb, found.maps[i], tops)))}

        images = list(map_(picture, range(len(kept))))
        entry = self._parts_entry(layer, index[layer.name], found, "", None)
        entry.pop("file")
        entry["images"] = images
        if len(kept) < len(in_order):
            entry["note"] = f"the first {len(kept)} of {len(in_order)} images (a joint factorization holds at most " \
                            f"{JOINT_VALUES} activations)"
        return entry


class ExplainBatch:
    """One batch's explanations: its Grad-CAM (`cam`) and its images' parts, factorized for the whole
    batch in one pass (`factorize_each`). Made once, in a painting thread, by `prepare` (render queues
    it ahead of the batch's layers) or by the first image that asks, off render's inference thread
    (VGG16's Grad-CAM head runs while the next batch's network does)."""

    def __init__(self, pixels: np.ndarray, cam_maps: np.ndarray | None, maps: dict[str, np.ndarray],
                 owner: RenderExplainer) -> None:
        self.pixels, self.cam_maps, self.maps, self.owner = pixels, cam_maps, maps, owner
        self._made = False
        self._cam: CamBatch | None = None
        self._parts: list[list[Parts]] = []  # per parts layer, per image
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Make the batch's Grad-CAM and parts, once; a failure is raised again to the next that asks."""
        with self._lock:
            if self._made:
                return
            owner = self.owner
            self._cam = owner._gradcam(self.pixels, self.cam_maps)
            self._parts = [factorize_each(self.maps[layer.name], owner._parts(layer),
                                          render_sweeps(layer.shape[2] * layer.shape[3], layer.shape[1]), RENDER_PASSES)
                           for layer in owner.parts_layers]
            self._made = True

    @property
    def cam(self) -> CamBatch | None:
        """The batch's Grad-CAM (None without class activation maps)."""
        self.prepare()
        return self._cam

    def parts(self, n: int) -> list[Parts]:
        """Image `n`'s parts of each parts layer (one `Parts` each, in `owner.parts_layers` order)."""
        self.prepare()
        return [per_layer[n] for per_layer in self._parts]


def _png(rgb: np.ndarray) -> bytes:
    from onnxviz.picture.encoding import encode_png

    return encode_png(np.ascontiguousarray(rgb[..., ::-1]))
