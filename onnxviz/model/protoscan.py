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


def outline(path: Path) -> Outline:
    """The metadata, node and opset counts and external-data entries of the ONNX file `path`,
    from the wire format (raises ValueError, or OSError, for a file that is not one)."""
    found = Outline()
    with open(path, "rb") as fh:
        if fh.seek(0, 2) == 0:
            raise ValueError("empty file")
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
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
