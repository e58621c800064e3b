"""Model files on disk: a model and, for large weights, its data file beside it, kept as a pair;
and the one place that says why a file cannot be used as an ONNX model.

Measured (benchmarks/RESULTS.md, "Start-up"): ONNX Runtime maps weights stored as ONNX
external data instead of parsing them out of one protobuf, which makes a whole
`onnxviz render` of one image through VGG16 with its classifier several times quicker to
start, and lifts protobuf's 2 GB cap on models. Small models gain nothing measurable from it, so
`save_model` writes weights up to `SINGLE_FILE_UP_TO` bytes inside one `NAME.onnx`, and larger
ones (or when asked) as a pair:

- `NAME.onnx`: the graph, metadata and small tensors (a few hundred KB);
- `NAME.onnx.data`: every tensor of `EXTERNAL_FROM_BYTES` or more, each at an offset
  aligned to `ALIGNMENT` (so it can be memory-mapped), after a `HEADER_BYTES` header that
  carries a random token.

The model's `onnxviz.data` metadata names the data file, its size and the same token, so
`check_model_file` tells a missing, truncated or mismatched data file from a good one
(one `stat` and one 4 KB read) and names it, before ONNX Runtime gives its own less
readable error. Both files are written in a hidden folder and renamed into place, the
data file first; an interrupted save leaves the previous pair, or a pair whose tokens
differ, which `check_model_file` reports.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from onnxviz.errors import ModelError, OutputError
from onnxviz.files import existing_file, staged

EXTERNAL_FROM_BYTES = 1024
# Weights up to this size go inside the .onnx by default, above it into the pair: one image's whole
# render process was no faster from a pair at 2.7 MB of weights (0.99x and 1.10x the one file's time),
# and faster in every run from 12 MB on (0.68x to 0.92x; 0.44x at 408 MB): RESULTS section 24.
SINGLE_FILE_UP_TO = 8 * 1024 * 1024
SINGLE_FILE_MAX = 2 * 1024 ** 3 - 64 * 1024 * 1024  # protobuf's 2 GB cap, less room for the graph
ALIGNMENT = 4096
HEADER_BYTES = 4096
MAGIC = b"onnxviz external data\n"
DATA_KEY = "onnxviz.data"
DATA_SUFFIX = ".data"


def data_path(path: Path) -> Path:
    """The data file that goes with model `path`: `NAME.onnx` -> `NAME.onnx.data`."""
    path = Path(path)
    return path.with_name(path.name + DATA_SUFFIX)


def _without(message, skip: str):
    """A new message of the same type with every field of `message` but `skip` copied."""
    out = type(message)()
    for fd, value in message.ListFields():
        if fd.name == skip:
            continue
        if fd.is_repeated:
            getattr(out, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(out, fd.name).CopyFrom(value)
        else:
            setattr(out, fd.name, value)
    return out


def _tensor_bytes(tensor) -> bytes:
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    from onnx import numpy_helper

    array = numpy_helper.to_array(tensor)
    return array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def _fsync_write(fh, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = fh.write(view)
        view = view[n:]


def _no_space(exc: OSError, path: Path) -> OutputError:
    return OutputError(f"cannot write '{path}': {exc.strerror or exc}; free some space or choose "
                       f"another {{output}}", params=("output",))


def weight_bytes(model) -> int:
    """Bytes of `model`'s initializers (an `onnx.ModelProto`), as they would be stored."""
    return sum(len(t.raw_data) if t.HasField("raw_data") else t.ByteSize() for t in model.graph.initializer)


def save_model(model, path: Path, external: bool | None = None) -> int:
    """Write `model` (an `onnx.ModelProto`) to `path`; bytes written.

    `external`: True puts large tensors into the data file beside it (works for models over
    2 GB: only the small model file is one protobuf); False keeps everything in `path`; None
    (default) chooses the pair from `SINGLE_FILE_UP_TO` bytes of weights. Nothing is
    replaced until every file is complete (`files.staged`: the data file is renamed into
    place first, then the model).
    """
    weights = weight_bytes(model)
    if external is None:
        external = weights > SINGLE_FILE_UP_TO
    elif not external and weights > SINGLE_FILE_MAX:
        raise OutputError(f"the weights ({weights / 1e9:.1f} GB) do not fit in one ONNX file (protobuf's 2 GB "
                          f"limit); write them as a data file beside it ({{external_data}})", params=("external_data",))
    path = Path(path)
    data_file = data_path(path)
    try:
        with staged(path) as target:
            external, written = _write_pair(model, target, data_file.name, external)
    except OSError as exc:
        raise _no_space(exc, path) from exc
    if not external and data_file.exists() and _is_ours(data_file):
        data_file.unlink()  # a data file left from an earlier, larger export of the same name
    return written


def _write_pair(model, path: Path, data_name: str, apart: bool = True) -> tuple[int, int]:
    """`model` as `path` and, when it has large tensors and `apart`, `path`'s data file, which the
    model names `data_name`; (tensors stored in the data file, bytes written)."""
    from onnx import TensorProto

    token = secrets.token_hex(16)
    graph = _without(model.graph, "initializer")
    light = _without(model, "graph")
    external = 0
    with open(data_path(path), "wb") as fh:
        header = MAGIC + token.encode() + b"\n"
        _fsync_write(fh, header + b"\0" * (HEADER_BYTES - len(header)))
        offset = HEADER_BYTES
        for tensor in model.graph.initializer:
            nbytes = len(tensor.raw_data) if tensor.HasField("raw_data") else tensor.ByteSize()
            if not apart or nbytes < EXTERNAL_FROM_BYTES or tensor.data_type == TensorProto.STRING:
                graph.initializer.add().CopyFrom(tensor)
                continue
            data = _tensor_bytes(tensor)
            pad = -offset % ALIGNMENT
            if pad:
                _fsync_write(fh, b"\0" * pad)
                offset += pad
            _fsync_write(fh, data)
            ref = graph.initializer.add()
            ref.name, ref.data_type = tensor.name, tensor.data_type
            ref.dims.extend(tensor.dims)
            ref.data_location = TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(data)))):
                entry = ref.external_data.add()
                entry.key, entry.value = key, value
            offset += len(data)
            external += 1
        fh.flush()
        os.fsync(fh.fileno())
    if not external:
        data_path(path).unlink()
    light.graph.CopyFrom(graph)
    keep = [(p.key, p.value) for p in light.metadata_props if p.key != DATA_KEY]
    del light.metadata_props[:]
    for key, value in keep:
        entry = light.metadata_props.add()
        entry.key, entry.value = key, value
    if external:
        entry = light.metadata_props.add()
        entry.key, entry.value = DATA_KEY, json.dumps({"file": data_name, "bytes": offset, "token": token})
    payload = light.SerializeToString()
    with open(path, "wb") as fh:
        _fsync_write(fh, payload)
        fh.flush()
        os.fsync(fh.fileno())
    return external, len(payload) + (offset if external else 0)


def drop_stale_data(path: Path) -> None:
    """Remove the data file beside `path` when it is one of ours and the model there no longer
    refers to it (a single-file export over an earlier pair of the same name)."""
    stale = data_path(path)
    if stale.is_file() and _is_ours(stale) and not read_outline(path).external:
        stale.unlink()


def _is_ours(data_file: Path) -> bool:
    try:
        with open(data_file, "rb") as fh:
            return fh.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


@dataclass
class ModelFile:
    """What `check_model_file` found: the model, its data file (None when it has none), bytes."""

    path: Path
    data: Path | None
    external_tensors: int
    data_bytes: int


def check_model_file(path: Path) -> ModelFile:
    """Check that `path` and the data files it refers to are all there and complete.

    Raises ModelError naming the missing, truncated or mismatched data file (read from the
    wire format, `protoscan.outline`: no `onnx` import, nothing parsed).
    """
    path = existing_file(Path(path), "model file")
    found = read_outline(path)
    needs: dict[str, int] = {}
    count = 0
    for info in found.external:
        count += 1
        location = info.get("location", "")
        end = int(info.get("offset", 0)) + int(info.get("length", 0) or 0)
        needs[location] = max(needs.get(location, 0), end)
    props = found.props
    recorded = json.loads(props[DATA_KEY]) if DATA_KEY in props else None
    first: Path | None = None
    total = 0
    for location, end in needs.items():
        target = path.parent / location
        first = first or target
        again = (f"; it must lie beside '{path.name}' as written by export (copy and move the two together), "
                 f"or export the model again")
        if not target.is_file():
            raise ModelError(f"'{path}' keeps its weights in '{target}', which is missing{again}")
        size = target.stat().st_size
        total += size
        if recorded and recorded.get("file") == location:
            if size != recorded["bytes"]:
                raise ModelError(f"the weights file '{target}' is truncated or damaged: {size} bytes where "
                                 f"'{path.name}' expects {recorded['bytes']}{again}")
            with open(target, "rb") as fh:
                head = fh.read(len(MAGIC) + 33)
            if head != MAGIC + recorded["token"].encode() + b"\n":
                raise ModelError(f"the weights file '{target}' does not belong to '{path}' (it comes from "
                                 f"another export){again}")
        if size < end:
            raise ModelError(f"the weights file '{target}' is truncated: {size} bytes where '{path.name}' needs "
                             f"{end}{again}")
    return ModelFile(path, first, count, total)


def unreadable(path: Path, detail: str = "") -> ModelError:
    """The error for a model file that failed to load, the same whichever command read it.

    It looks again at the file to name the cause: missing, a folder, not an ONNX protobuf
    (truncated, or another kind of file), or its external weights file missing or
    truncated; `detail` (the loader's own words) is used only when the file looks sound.
    """
    import onnx

    path = existing_file(Path(path), "model file")  # raises for a missing file or a folder
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf's DecodeError and friends
        model = None
    if model is None or not model.graph.node or not model.opset_import:
        return _not_onnx(path)
    try:
        check_model_file(path)
    except ModelError as exc:
        return exc
    return ModelError(f"'{path}' is an ONNX model that cannot be opened: {detail or 'unknown reason'}")


def read_outline(path: Path):
    """`protoscan.outline` of an existing file, or the error for a file that is not an ONNX model."""
    from onnxviz.model.protoscan import outline

    try:
        return outline(path)
    except (ValueError, IndexError) as exc:  # a truncated or foreign file (UnicodeDecodeError is a ValueError)
        raise _not_onnx(path) from exc


def _not_onnx(path: Path) -> ModelError:
    return ModelError(f"'{path}' is not an ONNX model: it does not parse as one (a truncated file, or another "
                      f"kind of file); give a .onnx file written by an ONNX exporter or 'onnxviz export'")
