"""Read an ONNX file without its large weights.

`onnx.load` parses every initializer: 0.7 s for VGG16's 553 MB, paid by `render` only to
draw the first convolution's 7 KB of filters and by `layers` only to read metadata. This
walks the protobuf wire format over a memory map, copies every field of the model and its
graph except initializers larger than `max_tensor_bytes`, and parses that. Large weights
are skipped by their length prefix, never read.
"""
from __future__ import annotations

import mmap
from pathlib import Path

import onnx

_MODEL_GRAPH = 7  # ModelProto.graph
_GRAPH_INITIALIZER = 5  # GraphProto.initializer


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


def _length_prefixed(field: int, payload: bytes) -> bytes:
    out = bytearray()
    key = (field << 3) | 2
    for value in (key, len(payload)):
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
    return bytes(out) + payload


def load_light(path: Path, max_tensor_bytes: int = 64 << 10) -> onnx.ModelProto:
    """The model with its graph, metadata and small initializers; large ones left out."""
    return scan(path, max_tensor_bytes)[0]


def scan(path: Path, max_tensor_bytes: int = 64 << 10) -> tuple[onnx.ModelProto, int]:
    """`load_light`, and how many initializers it left out (0: the model is complete, as a
    model whose weights are ONNX external data is)."""
    skipped = 0
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        model_parts: list[bytes] = []
        for field, tag_start, start, stop in _fields(buf, 0, len(buf)):
            if field != _MODEL_GRAPH:
                model_parts.append(buf[tag_start:stop])
                continue
            graph_parts = []
            for f, t, s, e in _fields(buf, start, stop):
                if f != _GRAPH_INITIALIZER or e - s <= max_tensor_bytes:
                    graph_parts.append(buf[t:e])
                else:
                    skipped += 1
            model_parts.append(_length_prefixed(_MODEL_GRAPH, b"".join(graph_parts)))
    return onnx.ModelProto.FromString(b"".join(model_parts)), skipped
