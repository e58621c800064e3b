"""Class activation maps and layer factorizations of an onnxviz file, batch by batch.

`Explainer` holds one ONNX Runtime session per Grad-CAM graph it was asked for (the file with
`gradient.add_gradcam`'s nodes, only the outputs Grad-CAM needs kept), built from the file's
light graph (`protoscan.split`: large weights are never parsed, and ORT gets them from the file).
Eigen-CAM and factorizations read plain activations, from the caller's session.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from onnxviz.errors import LayerSelectionError, OptionError
from onnxviz.explain.errors import HeadError
from onnxviz.model.info import LayerInfo, ModelInfo

LIGHT_TENSOR_BYTES = 64 << 10
METHODS = ("gradcam", "eigencam")


@dataclass
class CamBatch:
    maps: np.ndarray  # [n, K, h, w]
    classes: np.ndarray | None  # [n, K] (None for Eigen-CAM)
    scores: np.ndarray | None  # [n, K] the class scores as the file gives them
    notes: list[str] = field(default_factory=list)  # per-image remarks (all-zero activations)


def feature_layer(info: ModelInfo, name: str, where: str, param: str = "layer") -> LayerInfo:
    """The 4-D feature map called `name`, or an error that lists what exists."""
    from onnxviz.model.selection import listing

    names = [layer.name for layer in info.layers]
    if name not in names:
        maps = [layer.name for layer in info.feature_maps]
        raise LayerSelectionError(f"{{{param}}} '{name}' is not a layer of {where}; its {len(maps)} feature maps are "
                                  f"{listing(maps)}. See model.layers or 'onnxviz layers'", params=(param,))
    layer = info.layer(name)
    if not layer.is_feature_map:
        raise LayerSelectionError(f"{{{param}}} '{name}' of {where} is not a 4-D feature map (shape {layer.shape}, "
                                  f"layout {layer.layout or 'unknown'}); choose a layer [N, C, H, W]", params=(param,))
    return layer


def check_classes(classes: object, n_images: int, n_classes: int) -> np.ndarray:
    """`classes` (an int, a list for every image, or one list per image) as int64 `[N, K]`."""
    bad = OptionError(f"{{classes}} must be a class index, a list of them, or one list per image; got {classes!r}",
                      params=("classes",))
    try:
        array = np.asarray(classes)
    except Exception as exc:  # ragged lists
        raise bad from exc
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer) or array.size == 0:
        raise bad
    if array.ndim == 0:
        array = array.reshape(1)
    if array.ndim == 1:
        array = np.broadcast_to(array, (n_images, array.size))
    if array.ndim != 2 or array.shape[0] != n_images:
        raise OptionError(f"{{classes}} has shape {list(np.shape(classes))}; give one list per image ({n_images})",
                          params=("classes",))
    out = array[(array < 0) | (array >= n_classes)]
    if out.size:
        raise OptionError(f"{{classes}} {int(out[0])} is out of range; the model has {n_classes} classes "
                          f"(0..{n_classes - 1})", params=("classes",))
    return np.ascontiguousarray(array, np.int64)


class Explainer:
    """Grad-CAM graphs of one onnxviz file, opened on `provider` when first asked for."""

    def __init__(self, path: Path, info: ModelInfo, provider: str = "auto", threads: int | None = None, *,
                 long_run: bool = False, spinning: bool | None = None) -> None:
        """`long_run`, `spinning`: as for `session.open_session`; a render of many batches opens its
        Grad-CAM head for a long run (VGG16's: 1.7 s more to open, then 0.08-0.12 s a batch of 4 instead
        of 0.20-0.24 s, its 400 MB classifier weights repacked once)."""
        self.path = Path(path)
        self.long_run, self.spinning = long_run, spinning
        self.info = info
        self.provider = provider
        self.threads = threads
        self._light = None
        self._spans: dict = {}
        self._sessions: dict[tuple[str, int, bool], object] = {}
        self._heads: dict[tuple[str, int], object] = {}  # (layer, k): (session, fed tensor, its axes) or None
        self._logits: str | None = None
        self._classes: int | None = None

    # ------------------------------------------------------------ the graph

    def _model(self):
        if self._light is None:
            from onnxviz.model.modelfile import unreadable
            from onnxviz.model.protoscan import split

            try:
                self._light, self._spans = split(self.path, LIGHT_TENSOR_BYTES)
            except Exception as exc:  # a truncated or foreign file
                raise unreadable(self.path, type(exc).__name__) from exc
        return self._light

    @property
    def logits(self) -> str:
        if self._logits is None:
            from onnxviz.explain.gradient import logits_of

            self._logits = logits_of(self._model(), self.info.prediction_output, self.info.prediction_is_probability,
                                     f"'{self.path.name}'")
        return self._logits

    @property
    def classes(self) -> int:
        """How many classes the logits have."""
        if self._classes is not None:
            return self._classes
        from onnxviz.model.graph import dims_of, infer_types

        dims = dims_of(infer_types(self._model())[self.logits]) if self.logits else None
        if not dims or not all(isinstance(d, int) for d in dims[1:]):
            raise HeadError(f"the class logits of '{self.path.name}' ('{self.logits}') have no fixed size ({dims})")
        self._classes = int(np.prod(dims[1:]))
        return self._classes

    def default_layer(self) -> str:
        """The last feature map larger than 1x1 that the class logits depend on."""
        from onnxviz.explain.gradient import logit_sources

        candidates = [layer for layer in self.info.feature_maps
                      if all(isinstance(d, int) for d in layer.shape[2:]) and layer.shape[2] * layer.shape[3] > 1]
        logits = self.logits
        feeding = logit_sources(self._model(), logits)  # a walk over the graph, no shape inference
        for layer in reversed(candidates):
            if layer.name in feeding:
                return layer.name
        raise HeadError(f"no feature map of '{self.path.name}' feeds its class logits ('{logits}'); "
                        f"use the class-agnostic map (method='eigencam') with a layer")

    def _graph(self, layer: str, k: int, chosen: bool):
        from onnxviz.explain.gradient import CAM_OUTPUT, CLASSES_OUTPUT, PEAK_OUTPUT, add_gradcam
        from onnxviz.model.graph import strip_outputs

        model = add_gradcam(self._model(), layer, self.logits, k, chosen=chosen)
        keep = [CAM_OUTPUT, CLASSES_OUTPUT, PEAK_OUTPUT] + ([self.info.prediction_output] if self.info.prediction_output else [])
        return strip_outputs(model, keep)

    def session(self, layer: str, k: int, chosen: bool):
        key = (layer, k, chosen)
        if key not in self._sessions:
            self._sessions[key] = self._open(f"Grad-CAM of {layer}", self._graph(layer, k, chosen))
        return self._sessions[key]

    def _open(self, name: str, graph):
        """An ORT session on `graph` (made from the light model): its inline weights joined back from the
        file, its external data references kept, for ORT to read from the file's folder as it does for the
        file itself (VGG16's head: 2.2 s to open instead of 9 s copying 553 MB of weights into the bytes)."""
        from onnxviz.model.protoscan import join
        from onnxviz.run.session import open_session

        spinning = {} if self.spinning is None else {"spinning": self.spinning}
        return open_session(Path(f"{self.path.name} ({name})"), self.provider, threads=self.threads,
                            long_run=self.long_run, model_bytes=join(graph, self.path, self._spans),
                            data_folder=self.path.parent, **spinning)

    def head_session(self, layer: str, k: int):
        """The Grad-CAM graph cut at `layer`: fed the layer's activations that the caller's own run
        already computed, ONNX Runtime runs the head and its gradient, not the network a second time.
        (session, fed tensor, axes from NCHW to it), or None when the head reads more of the network
        than the layer (a skip connection around it): then `gradcam` runs the whole graph."""
        key = (layer, k)
        if key not in self._heads:
            from onnx import helper

            from onnxviz.explain.gradient import CAM_OUTPUT, CLASSES_OUTPUT, PEAK_OUTPUT

            model = self._graph(layer, k, False)
            graph = model.graph
            producers = {o: n for n in graph.node for o in n.output if o}
            # The layer's values may come through Transposes (an exposed NCHW copy of the NHWC tensor a
            # Keras head reads, or of the NCHW tensor an exporter transposed): feed the first tensor of
            # that chain, holding the same values, so that whatever the head reads of it (its shape
            # included) comes from the fed tensor, and the graph remakes the copies.
            feed, axes = layer, [0, 1, 2, 3]
            while True:
                made = producers.get(feed)
                if made is None or made.op_type not in ("Transpose", "Identity") or not made.input[0]:
                    break
                if made.op_type == "Transpose":
                    perm = next((list(a.ints) for a in made.attribute if a.name == "perm"), None)
                    if not perm or len(perm) != 4:
                        break
                    axes = [axes[perm.index(i)] for i in range(4)]
                feed = made.input[0]
            feedable = {feed: None if axes == [0, 1, 2, 3] else axes}
            constant = {t.name for t in graph.initializer}
            fed: set[str] = set()
            kept: set[int] = set()
            index = {id(n): i for i, n in enumerate(graph.node)}
            todo = [o.name for o in graph.output]
            seen: set[str] = set()
            cut = True
            while todo and cut:
                name = todo.pop()
                if not name or name in seen:
                    continue
                seen.add(name)
                if name in feedable:
                    fed.add(name)
                    continue
                if name in constant:
                    continue
                node = producers.get(name)
                if node is None or any(a.type in (5, 10) for a in node.attribute):  # a graph input, a subgraph
                    cut = False
                    break
                kept.add(index[id(node)])
                todo.extend(node.input)
            if not cut or len(fed) != 1:
                self._heads[key] = None
                return None
            feed = fed.pop()
            nodes = [n for i, n in enumerate(graph.node) if i in kept]
            used = {i for n in nodes for i in n.input}
            inits = [t for t in graph.initializer if t.name in used]
            del graph.node[:]
            graph.node.extend(nodes)
            del graph.initializer[:]
            graph.initializer.extend(inits)
            del graph.input[:]
            graph.input.append(helper.make_tensor_value_info(feed, 1, None))  # float32
            keep = {CAM_OUTPUT, CLASSES_OUTPUT, PEAK_OUTPUT, self.info.prediction_output}
            outputs = [o for o in graph.output if o.name in keep]
            del graph.output[:]
            graph.output.extend(outputs)
            session = self._open(f"Grad-CAM of {layer}, its head", model)
            self._heads[key] = (session, feed, feedable[feed])
        return self._heads[key]

    def gradcam_of_maps(self, maps: np.ndarray, layer: str, k: int, start: int = 0) -> CamBatch | None:
        """Grad-CAM of the top `k` classes from `layer`'s activations `[n, C, h, w]` (NCHW, as the file
        exposes them), through `head_session`; None when the head cannot be cut there."""
        head = self.head_session(layer, k)
        if head is None:
            return None
        session, feed, axes = head
        values = np.asarray(maps, np.float32)
        if axes is not None:
            values = np.ascontiguousarray(values.transpose(axes))
        return self._cam_batch(session.session.run(self._cam_names(), {feed: values}), len(maps), start)

    def _cam_names(self) -> list[str]:
        from onnxviz.explain.gradient import CAM_OUTPUT, CLASSES_OUTPUT, PEAK_OUTPUT

        return [CAM_OUTPUT, CLASSES_OUTPUT, PEAK_OUTPUT] + ([self.info.prediction_output]
                                                          if self.info.prediction_output else [])

    def _cam_batch(self, values: list, n: int, start: int) -> CamBatch:
        maps, picked, peak = values[0], values[1], values[2]
        scores = None
        if len(values) > 3:
            flat = values[3].reshape(n, -1)
            scores = np.take_along_axis(flat, picked, axis=1)
        notes = [f"image {start + i}: the layer's activations are all zero, so its map is zero"
                 for i in np.flatnonzero(peak == 0)]
        return CamBatch(maps, picked, scores, notes)

    # ------------------------------------------------------------ running

    def gradcam(self, pixels: np.ndarray, layer: str, k: int, classes: np.ndarray | None = None,
                start: int = 0) -> CamBatch:
        """Grad-CAM of a batch `[n, H, W, 3]` at `layer` for its top `k` classes, or for `classes` `[n, K]`;
        `start`: the first image's number in notes."""
        from onnxviz.explain.gradient import CLASSES_INPUT

        chosen = classes is not None
        session = self.session(layer, int(classes.shape[1]) if chosen else k, chosen)
        feeds = {session.input_name: np.asarray(pixels, np.float32)}
        if chosen:
            feeds[CLASSES_INPUT] = classes
        return self._cam_batch(session.session.run(self._cam_names(), feeds), len(pixels), start)


def eigencam_batch(maps: np.ndarray) -> CamBatch:
    """Eigen-CAM of a batch of one layer's maps `[n, C, h, w]`: maps `[n, 1, h, w]`."""
    from onnxviz.explain.factorize import eigen_cam

    out, notes = [], []
    for i, m in enumerate(maps):
        projection, varies = eigen_cam(m)
        out.append(projection[None])
        if not varies:
            notes.append(f"image {i}: the layer's activations are the same at every position, so there is no map")
    return CamBatch(np.stack(out), None, None, notes)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise OptionError(f"{{method}} '{method}' is not valid; choose one of {', '.join(METHODS)}", params=("method",))
    return method


def check_top_k(top_k: object, n_classes: int) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise OptionError(f"{{top_k}} must be a positive integer, got {top_k!r}", params=("top_k",))
    if top_k > n_classes:
        raise OptionError(f"{{top_k}} is {top_k} but the model has {n_classes} classes", params=("top_k",))
    return int(top_k)

