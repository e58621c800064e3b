"""What both engines run: the chosen layers, their receptive fields and the onnxviz file extended
with per-channel reductions (`graph.add_channel_reductions`), so that only a score and a position
per channel leave ONNX Runtime."""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from onnx import TensorProto
from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

from onnxviz.atlas.options import AtlasOptions
from onnxviz.errors import LayerSelectionError
from onnxviz.files import existing_file
from onnxviz.model.graph import add_channel_reductions
from onnxviz.model.info import LayerInfo, ModelInfo, read_info
from onnxviz.model.modelfile import check_model_file, unreadable
from onnxviz.model.protoscan import join, split
from onnxviz.model.receptive import Field, receptive_fields
from onnxviz.model.selection import default_layers, select_layers
from onnxviz.run.session import Session, open_session

LIGHT_TENSOR_BYTES = 64 << 10  # make_plan rewrites the graph with larger initializers left hollow


def choose_layers(info: ModelInfo, patterns: list[str], where: str) -> list[LayerInfo]:
    """The layers `patterns` select (globs), or `default_layers` when there are none."""
    maps = info.feature_maps
    if not maps:
        raise LayerSelectionError(f"'{where}' has no 4-D feature maps, so there are no channels to collect; "
                                  f"export it again with feature maps exposed (see 'onnxviz export --help')")
    if not patterns:
        return default_layers(info)
    return select_layers(info, patterns, where)


@dataclass
class Plan:
    """What both engines need: the layers, their receptive fields and the reduced model."""

    model: Path
    info: ModelInfo
    layers: list[LayerInfo]
    fields: dict[str, Field]
    reduced: bytes = field(repr=False)  # the onnxviz file with per-channel score and position outputs
    fingerprint: dict


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_plan(model: Path, options: AtlasOptions) -> Plan:
    """Read the model, choose the layers, add the reductions and compute the receptive fields.

    The graph is rewritten without its large weights (`protoscan.split`: VGG16's 553 MB are
    never parsed or copied); the reduced model's bytes take the weights it still uses straight
    from the file (`protoscan.join`), while the file's SHA-256 is computed in a second thread.
    """
    model = existing_file(Path(model), "model file")
    with ThreadPoolExecutor(1) as pool:
        digest = pool.submit(_sha256, model)
        try:
            light, spans = split(model, LIGHT_TENSOR_BYTES)
        except Exception as exc:  # DecodeError, a truncated or foreign file
            raise unreadable(model, type(exc).__name__) from exc
        check_model_file(model)  # names a missing or truncated weights file
        info = read_info(light, str(model))
        layers = choose_layers(info, options.layers, str(model))
        names = [layer.name for layer in layers]
        reduced = add_channel_reductions(light, names, options.score)
        del light
        for tensor in reduced.graph.initializer:  # weights in external files: into the bytes ORT gets
            if uses_external_data(tensor):
                load_external_data_for_tensor(tensor, str(model.parent))
                tensor.data_location = TensorProto.DEFAULT
                del tensor.external_data[:]
                spans.pop(tensor.name, None)  # loaded: join must not put the file's reference back
        fields = receptive_fields(reduced, names)
        data = join(reduced, model, spans)
        fingerprint = {"model_sha256": digest.result(), "layers": names, "top": options.top,
                       "score": options.score, "resize": options.resize}
    return Plan(model, info, layers, fields, data, fingerprint)


def open_reduced(reduced: bytes, provider: str, threads: int | None = None,
                 name: str = "the atlas's reduced model") -> Session:
    """An ORT session (`session.open_session`) on the reduced model held in memory; `name` names it
    in messages."""
    return open_session(Path(name), provider, threads=threads, model_bytes=reduced)
