"""Read an ONNX file without its large weights.

`onnx.load` parses every initializer: 0.7 s for VGG16's 553 MB, paid by `render` only to
draw the first convolution's 7 KB of filters and by `layers` only to read metadata. This
walks the protobuf wire format over a memory map, copies every field of the model and its
graph except initializers larger than `max_tensor_bytes`, and parses that. Large weights
are skipped by their length prefix, never read.

`outline` reads what `render` and `layers` need to start (the metadata, whether the graph
has nodes, the external-data entries) from the wire format alone, without importing `onnx`
(80 ms of a one-image render, benchmarks/RESULTS.md 20).
"""
from __future__ import annotations

import contextlib
import mmap
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

_MODEL_GRAPH = 7  # ModelProto.graph
_MODEL_OPSET_IMPORT = 8  # ModelProto.opset_import
_MODEL_METADATA = 14  # ModelProto.metadata_props
_GRAPH_NODE = 1  # GraphProto.node
_GRAPH_INITIALIZER = 5  # GraphProto.initializer
_ENTRY_KEY, _ENTRY_VALUE = 1, 2  # StringStringEntryProto
_TENSOR_EXTERNAL_DATA = 13  # TensorProto.external_data
_TENSOR_DATA_LOCATION = 14  # TensorProto.data_location
_EXTERNAL = 1  # TensorProto.EXTERNAL


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, start of the whole field incl. its tag, start of payload, end)."""
    pos = start
    while pos < end:
        tag_start = pos
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            _, stop = _varint(buf, pos)
        elif wire == 1:
            stop = pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            stop = pos + length
        elif wire == 5:
            stop = pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if stop > end:
            raise ValueError("truncated protobuf")
        yield field, tag_start, pos, stop
        pos = stop


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _length_prefixed(field: int, payload: bytes) -> bytes:
    return _varint_bytes((field << 3) | 2) + _varint_bytes(len(payload)) + payload


@dataclass
class Outline:
    """What a model file says about itself, read without parsing it."""

    props: dict[str, str] = dataclass_field(default_factory=dict)  # metadata_props
    nodes: int = 0
    opsets: int = 0
    external: list[dict[str, str]] = dataclass_field(default_factory=list)  # each external tensor's entries


def _entry(buf, start: int, end: int) -> tuple[str, str]:
    key = value = ""
    for f, _, s, e in _fields(buf, start, end):
        if f == _ENTRY_KEY:
            key = bytes(buf[s:e]).decode("utf-8")
        elif f == _ENTRY_VALUE:
            value = bytes(buf[s:e]).decode("utf-8")
    return key, value


@contextlib.contextmanager
def _mapped(path: Path):
    """The bytes of the file `path`, memory-mapped (ValueError for an empty file)."""
    with open(path, "rb") as fh:
        if fh.seek(0, 2) == 0:
            raise ValueError("empty file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            yield buf


def outline(path: Path) -> Outline:
    """The metadata, node and opset counts and external-data entries of the ONNX file `path`,
    from the wire format (raises ValueError, or OSError, for a file that is not one)."""
    found = Outline()
    with _mapped(path) as buf:
        for field, _, start, stop in _fields(buf, 0, len(buf)):
            if field == _MODEL_METADATA:
                key, value = _entry(buf, start, stop)
                found.props[key] = value
            elif field == _MODEL_OPSET_IMPORT:
                found.opsets += 1
            elif field == _MODEL_GRAPH:
                for f, _, s, e in _fields(buf, start, stop):
                    if f == _GRAPH_NODE:
                        found.nodes += 1
                    elif f == _GRAPH_INITIALIZER:
                        entries, location = {}, 0
                        for tf, _, ts, te in _fields(buf, s, e):
                            if tf == _TENSOR_EXTERNAL_DATA:
                                key, value = _entry(buf, ts, te)
                                entries[key] = value
                            elif tf == _TENSOR_DATA_LOCATION:
                                location = _varint(buf, ts)[0]
                        if location == _EXTERNAL:
                            found.external.append(entries)
    return found


def _rebuild(path: Path, max_tensor_bytes: int, large) -> onnx.ModelProto:
    """The model of `path` with every initializer over `max_tensor_bytes` replaced by what
    `large(buf, field_start, payload_start, stop)` returns for it (None: left out)."""
    import onnx

    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        model_parts: list[bytes] = []
        for field, tag_start, start, stop in _fields(buf, 0, len(buf)):
            if field != _MODEL_GRAPH:
                model_parts.append(buf[tag_start:stop])
                continue
            graph_parts = []
            for f, t, s, e in _fields(buf, start, stop):
                kept = buf[t:e] if f != _GRAPH_INITIALIZER or e - s <= max_tensor_bytes else large(buf, t, s, e)
                if kept is not None:
                    graph_parts.append(kept)
            model_parts.append(_length_prefixed(_MODEL_GRAPH, b"".join(graph_parts)))
    return onnx.ModelProto.FromString(b"".join(model_parts))


def load_light(path: Path, max_tensor_bytes: int = 64 << 10) -> onnx.ModelProto:
    """The model with its graph, metadata and small initializers; large ones left out."""
    return _rebuild(path, max_tensor_bytes, lambda buf, t, s, e: None)


# TensorProto fields that hold the values (float_data .. uint64_data); the rest (dims, data_type,
# name, segment, doc_string, external_data, data_location) describe the tensor and are kept.
_TENSOR_DATA_FIELDS = frozenset({4, 5, 6, 7, 9, 10, 11})
_TENSOR_NAME = 8
_TENSOR_DATA_TYPE = 2
# Weights: the only tensors left hollow. Integer tensors (shapes, pads, indices) stay whole, since
# graph rewrites and receptive fields read their values.
_FLOAT_TYPES = frozenset({1, 10, 16, 11})  # TensorProto.FLOAT, FLOAT16, BFLOAT16, DOUBLE


def split(path: Path, max_tensor_bytes: int = 64 << 10) -> tuple[onnx.ModelProto, dict[str, tuple[int, int]]]:
    """The model with every floating-point initializer over `max_tensor_bytes` hollow (name, type
    and dims, no values), and where each hollow one's field lies in the file: `(start, stop)` byte
    offsets.

    Graph rewrites and shape inference need only the tensors' shapes; `join` puts the values
    back from the file for the initializers that a rewritten model still has. The large values
    are skipped by their length prefix here, never read or copied.
    """
    spans: dict[str, tuple[int, int]] = {}

    def hollow(buf, t, s, e) -> bytes:
        header, name, dtype = [], None, None
        for tf, tt, ts, te in _fields(buf, s, e):
            if tf in _TENSOR_DATA_FIELDS:
                continue
            header.append(buf[tt:te])
            if tf == _TENSOR_NAME:
                name = bytes(buf[ts:te]).decode("utf-8")
            elif tf == _TENSOR_DATA_TYPE:
                dtype = _varint(buf, ts)[0]
        if name is None or name in spans or dtype not in _FLOAT_TYPES:  # kept whole
            return buf[t:e]
        spans[name] = (t, e)
        return _length_prefixed(_GRAPH_INITIALIZER, b"".join(header))

    return _rebuild(path, max_tensor_bytes, hollow), spans


def join(model: onnx.ModelProto, path: Path, spans: dict[str, tuple[int, int]]) -> bytes:
    """`model` (made from `split(path)`'s light model) serialized with the values of its hollow
    initializers read back from `path`: the bytes of the complete model, for ONNX Runtime.

    Protobuf appends repeated fields in the order they come, so the full initializer fields from
    the file go after the rest of the graph; nothing of `model` is modified.
    """
    import onnx

    light = onnx.ModelProto()
    light.CopyFrom(model)
    graph = light.graph
    hollow = [t.name for t in graph.initializer if t.name in spans]
    for i in reversed(range(len(graph.initializer))):
        if graph.initializer[i].name in spans:
            del graph.initializer[i]
    data = light.SerializeToString()
    fields = list(_fields(data, 0, len(data)))
    if hollow and not any(f == _MODEL_GRAPH for f, *_ in fields):  # only hollow initializers: graph not written
        data += _varint_bytes((_MODEL_GRAPH << 3) | 2) + _varint_bytes(0)
        fields = list(_fields(data, 0, len(data)))
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        extra = [memoryview(buf)[s:e] for s, e in (spans[name] for name in hollow)]
        parts: list = []
        for field, tag_start, start, stop in fields:
            if field == _MODEL_GRAPH:
                length = stop - start + sum(len(v) for v in extra)
                parts += [_varint_bytes((_MODEL_GRAPH << 3) | 2), _varint_bytes(length), data[start:stop], *extra]
            else:
                parts.append(data[tag_start:stop])
        out = b"".join(parts)
        for v in extra:  # the map cannot close while views of it exist
            v.release()
        del parts, extra
    return out


# ---------------------------------------------------------------- the graph's nodes, read lightly

_GRAPH_INPUT = 11  # GraphProto.input (ValueInfoProto, name = 1)
_NODE_INPUT, _NODE_OUTPUT, _NODE_NAME, _NODE_OP_TYPE, _NODE_ATTRIBUTE, _NODE_DOMAIN = 1, 2, 3, 4, 5, 7
_ATTR_G, _ATTR_GRAPHS = 6, 11  # AttributeProto's subgraph fields
_TENSOR_DIMS, _TENSOR_FLOAT_DATA, _TENSOR_RAW_DATA = 1, 4, 9
FLOAT = 1  # TensorProto.FLOAT


@dataclass
class ScannedNode:
    """A node's identity and wiring (the attributes are not read); has the attributes of an
    `onnx.NodeProto` that code walking a graph reads."""

    name: str = ""
    op_type: str = ""
    domain: str = ""
    input: list[str] = dataclass_field(default_factory=list)
    output: list[str] = dataclass_field(default_factory=list)
    subgraphs: bool = False  # If, Loop, Scan and the like: a graph inside


@dataclass
class ScannedTensor:
    """An initializer's name, type, shape and where its values lie (nothing of them read)."""

    name: str = ""
    data_type: int = 0
    dims: list[int] = dataclass_field(default_factory=list)
    raw: tuple[int, int] | None = None  # raw_data's byte span in the file
    floats: tuple[int, int] | None = None  # packed float_data's byte span
    external: dict[str, str] | None = None  # external_data entries


@dataclass
class GraphScan:
    """What `scan_graph` read: metadata, graph inputs, nodes in order, initializers by name."""

    props: dict[str, str] = dataclass_field(default_factory=dict)
    inputs: list[str] = dataclass_field(default_factory=list)
    nodes: list[ScannedNode] = dataclass_field(default_factory=list)
    initializers: dict[str, ScannedTensor] = dataclass_field(default_factory=dict)


def _text(buf, s: int, e: int) -> str:
    return bytes(buf[s:e]).decode("utf-8")


def _node(buf, start: int, end: int) -> ScannedNode:
    node = ScannedNode()
    for f, _, s, e in _fields(buf, start, end):
        if f == _NODE_INPUT:
            node.input.append(_text(buf, s, e))
        elif f == _NODE_OUTPUT:
            node.output.append(_text(buf, s, e))
        elif f == _NODE_NAME:
            node.name = _text(buf, s, e)
        elif f == _NODE_OP_TYPE:
            node.op_type = _text(buf, s, e)
        elif f == _NODE_DOMAIN:
            node.domain = _text(buf, s, e)
        elif f == _NODE_ATTRIBUTE and not node.subgraphs:
            node.subgraphs = any(af in (_ATTR_G, _ATTR_GRAPHS) for af, *_ in _fields(buf, s, e))
    return node


def _tensor(buf, start: int, end: int) -> ScannedTensor:
    tensor = ScannedTensor()
    entries, location = {}, 0
    for f, _, s, e in _fields(buf, start, end):
        if f == _TENSOR_NAME:
            tensor.name = _text(buf, s, e)
        elif f == _TENSOR_DATA_TYPE:
            tensor.data_type = _varint(buf, s)[0]
        elif f == _TENSOR_DIMS:
            pos = s
            while pos < e:  # packed (wire type 2) or one varint (wire type 0)
                value, pos = _varint(buf, pos)
                tensor.dims.append(value)
        elif f == _TENSOR_RAW_DATA:
            tensor.raw = (s, e)
        elif f == _TENSOR_FLOAT_DATA:
            tensor.floats = (s, e) if tensor.floats is None else (-1, -1)  # unpacked floats: not handled here
        elif f == _TENSOR_EXTERNAL_DATA:
            key, value = _entry(buf, s, e)
            entries[key] = value
        elif f == _TENSOR_DATA_LOCATION:
            location = _varint(buf, s)[0]
    if location == _EXTERNAL:
        tensor.external = entries
    return tensor


def scan_graph(path: Path) -> GraphScan:
    """The metadata, graph inputs, nodes and initializers' descriptions of the ONNX file `path`,
    from the wire format without importing `onnx` (raises ValueError or OSError for a file that
    is not one). No tensor's values are read."""
    found = GraphScan()
    with _mapped(path) as buf:
        for field, _, start, stop in _fields(buf, 0, len(buf)):
            if field == _MODEL_METADATA:
                key, value = _entry(buf, start, stop)
                found.props[key] = value
            elif field == _MODEL_GRAPH:
                for f, _, s, e in _fields(buf, start, stop):
                    if f == _GRAPH_NODE:
                        found.nodes.append(_node(buf, s, e))
                    elif f == _GRAPH_INITIALIZER:
                        tensor = _tensor(buf, s, e)
                        found.initializers[tensor.name] = tensor
                    elif f == _GRAPH_INPUT:
                        found.inputs += [_text(buf, vs, ve) for vf, _, vs, ve in _fields(buf, s, e) if vf == 1]
    return found


def float_values(path: Path, tensor: ScannedTensor):
    """A float32 initializer's values as a numpy array of its shape, read from `path` (or its
    external data file beside it); None for any other storage (the caller falls back to onnx)."""
    import numpy as np

    if tensor.data_type != FLOAT:
        return None
    count = 1
    for d in tensor.dims:
        count *= d
    if tensor.external is not None:
        if tensor.external.get("location") is None or set(tensor.external) - {"location", "offset", "length"}:
            return None
        source = Path(path).parent / tensor.external["location"]
        offset = int(tensor.external.get("offset", 0))
        with open(source, "rb") as fh:
            fh.seek(offset)
            data = fh.read(count * 4)
    elif tensor.raw is not None or (tensor.floats is not None and tensor.floats[0] >= 0):
        start, stop = tensor.raw if tensor.raw is not None else tensor.floats
        with open(path, "rb") as fh:
            fh.seek(start)
            data = fh.read(stop - start)
    else:
        return None
    if len(data) != count * 4:
        return None
    return np.frombuffer(data, dtype="<f4").reshape(tensor.dims).copy()
