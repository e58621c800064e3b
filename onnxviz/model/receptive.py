"""Receptive fields from the graph: which input pixels can influence one position of a map.

Walked from the image input through every node: each spatial axis of a tensor carries a
`Span` saying that its index `i` reads input pixels `start + i*jump ... start + i*jump + size - 1`.
Convolutions and pools grow it by their (dilated) kernel and multiply the jump by their
stride; padding (Pad nodes, `pads`, `auto_pad`) shifts the start; Transpose moves axes;
elementwise ops and channel concatenation take the union of their inputs' spans. Anything
that mixes every position (global pools, reshapes, matrix products, resizes, a
squeeze-and-excitation scale) makes the field the whole image, which is always true if
not tight: such a field is marked `exact=False`. Where a box is clipped by the image border,
strides and dilation may skip its outermost rows there; the box never misses a pixel that matters.

Nothing here runs a model; tests check the boxes by perturbing pixels inside and outside.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from onnx import ModelProto, NodeProto, helper

from onnxviz.model.graph import constant_value, constants, dims_of, image_inputs, infer_types


@dataclass(frozen=True)
class Span:
    """Along one axis, index `i` reads input pixels `[start + i*jump, start + i*jump + size)`."""

    jump: int
    start: int
    size: int

    def union(self, other: "Span") -> "Span | None":
        if self.jump != other.jump:
            return None
        start = min(self.start, other.start)
        end = max(self.start + self.size, other.start + other.size)
        return Span(self.jump, start, end - start)


@dataclass(frozen=True)
class Field:
    """The receptive field of one map: where each of its positions reads the input image."""

    height: Span
    width: Span
    exact: bool  # False: the graph mixes all positions before this map; the field is the whole image

    def box(self, y: int, x: int, image_height: int, image_width: int) -> tuple[int, int, int, int]:
        """`(x0, y0, x1, y1)`, end exclusive, of the input pixels that can influence position (y, x),
        clipped to the image."""
        x0, y0, x1, y1 = self.boxes(np.array([y]), np.array([x]), image_height, image_width)[0].tolist()
        return x0, y0, x1, y1

    def boxes(self, y: np.ndarray, x: np.ndarray, image_height: int, image_width: int) -> np.ndarray:
        """`box` for many positions at once: int64 `[n, 4]`."""
        y, x = np.asarray(y, np.int64), np.asarray(x, np.int64)
        if not self.exact:
            return np.tile(np.array([0, 0, image_width, image_height], np.int64), (len(y), 1))
        y0 = self.height.start + y * self.height.jump
        x0 = self.width.start + x * self.width.jump
        return np.stack([np.maximum(0, x0), np.maximum(0, y0), np.minimum(image_width, x0 + self.width.size),
                         np.minimum(image_height, y0 + self.height.size)], 1).astype(np.int64)


# A tensor's spatial axes: {tensor axis: Span} for the image's height (key "h") and width ("w"),
# or WHOLE when every position may depend on every pixel.
WHOLE = "whole"

_ELEMENTWISE = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Clip", "Elu", "Selu", "Celu",
    "Softplus", "Softsign", "Mish", "Gelu", "Erf", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Floor", "Ceil",
    "Round", "Sign", "Identity", "Cast", "Dropout", "BatchNormalization", "Add", "Sub", "Mul", "Div", "Pow", "Max",
    "Min", "Sum", "Mean", "ThresholdedRelu", "Not", "And", "Or", "Xor", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "Where", "QuantizeLinear", "DequantizeLinear", "LRN",
})
_WINDOWED = frozenset({"Conv", "MaxPool", "AveragePool", "LpPool"})


@dataclass
class _Track:
    axes: dict[int, tuple[str, Span]]  # tensor axis -> ("h" | "w", span)
    rank: int


def _attr(node: NodeProto, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def receptive_fields(model: ModelProto, names: Sequence[str]) -> dict[str, Field]:
    """The `Field` of each tensor in `names`, for a model whose one input is an NHWC image.

    A name that does not depend on the input at all gets the whole image (`exact=False`).
    """
    graph = model.graph
    inputs = image_inputs(graph)
    if len(inputs) != 1:
        raise ValueError(f"expected one image input, found {[v.name for v in inputs]}")
    dims = dims_of(inputs[0].type)
    if dims is None or len(dims) != 4:
        raise ValueError(f"input {inputs[0].name!r} is not a 4-D NHWC image")
    types = infer_types(model)
    inits, producers = constants(graph)
    unit = Span(1, 0, 1)
    state: dict[str, _Track | str] = {inputs[0].name: _Track({1: ("h", unit), 2: ("w", unit)}, 4)}
    for node in graph.node:
        tracked = [state[i] for i in node.input if i in state]
        if not tracked:
            continue
        result = _step(node, state, types, inits, producers)
        for o in node.output:
            if o:
                state[o] = result
    fields: dict[str, Field] = {}
    for name in names:
        track = state.get(name)
        fields[name] = _field(track)
    return fields


def _field(track: _Track | str | None) -> Field:
    whole = Field(Span(1, 0, 1), Span(1, 0, 1), exact=False)
    if not isinstance(track, _Track):
        return whole
    spans = {key: span for key, span in track.axes.values()}
    if set(spans) != {"h", "w"}:
        return whole
    return Field(spans["h"], spans["w"], exact=True)


def _rank(name: str, types) -> int | None:
    dims = dims_of(types[name]) if name in types else None
    return len(dims) if dims is not None else None


def _step(node: NodeProto, state, types, inits, producers) -> _Track | str:
    op = node.op_type
    ins = [state.get(i) if i else None for i in node.input]
    if any(t == WHOLE for t in ins):
        return WHOLE
    if node.domain not in ("", "ai.onnx"):
        return WHOLE
    if op in _WINDOWED:
        return _windowed(node, ins[0], types, inits, producers)
    if op == "Pad":
        return _pad(node, ins[0], inits, producers)
    if op == "Transpose":
        track = ins[0]
        perm = _attr(node, "perm") or list(reversed(range(track.rank)))
        return _Track({perm.index(a): v for a, v in track.axes.items()}, track.rank)
    if op in _ELEMENTWISE:
        return _broadcast_union([t for t in ins if isinstance(t, _Track)], _rank(node.output[0], types))
    if op == "Concat":
        track = _broadcast_union([t for t in ins if isinstance(t, _Track)], None)
        if not isinstance(track, _Track):
            return WHOLE
        axis = _attr(node, "axis", 0) % track.rank
        return WHOLE if axis in track.axes else track
    if op == "Split":
        track = ins[0]
        axis = _attr(node, "axis", 0) % track.rank
        return WHOLE if axis in track.axes else track
    if op == "Slice":
        return _slice(node, ins[0], ins[1:], inits, producers)
    if op == "Gather":
        track = ins[0]
        if not isinstance(track, _Track) or ins[1] is not None:
            return WHOLE
        axis = _attr(node, "axis", 0) % track.rank
        indices = constant_value(node.input[1], inits, producers)
        if axis in track.axes or indices is None or indices.ndim != 1:
            return WHOLE
        return track
    return WHOLE


def _broadcast_union(tracks: list[_Track], rank: int | None) -> _Track | str:
    """Union of the inputs' spans, axes aligned from the right as in broadcasting."""
    rank = rank or max(t.rank for t in tracks)
    merged: dict[int, tuple[str, Span]] = {}
    for t in tracks:
        for axis, (key, span) in t.axes.items():
            a = axis + rank - t.rank
            if a in merged:
                if merged[a][0] != key:
                    return WHOLE
                union = merged[a][1].union(span)
                if union is None:
                    return WHOLE
                merged[a] = (key, union)
            else:
                merged[a] = (key, span)
    keys = [k for k, _ in merged.values()]
    if len(keys) != len(set(keys)):
        return WHOLE
    return _Track(merged, rank)


def _ints(node: NodeProto, name: str, n: int, default: int) -> list[int]:
    value = _attr(node, name)
    return list(value) if value else [default] * n


def _windowed(node: NodeProto, track, types, inits, producers) -> _Track | str:
    if not isinstance(track, _Track) or track.rank != 4 or set(track.axes) != {2, 3}:
        return WHOLE
    kernel = _attr(node, "kernel_shape")
    if not kernel and node.op_type == "Conv":
        weight = node.input[1]
        if weight in types and dims_of(types[weight]) is not None:
            kernel = dims_of(types[weight])[2:]
        else:
            value = constant_value(weight, inits, producers)
            kernel = list(value.shape[2:]) if value is not None else None
    if not kernel or not all(isinstance(k, int) for k in kernel) or len(kernel) != 2:
        return WHOLE
    strides = _ints(node, "strides", 2, 1)
    dilations = _ints(node, "dilations", 2, 1)
    pads = _ints(node, "pads", 4, 0)
    auto_pad = _attr(node, "auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    size = dims_of(types[node.input[0]]) if node.input[0] in types else None
    axes = {}
    for i, axis in enumerate((2, 3)):
        key, span = track.axes[axis]
        effective = dilations[i] * (kernel[i] - 1) + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            length = size[axis] if size is not None else None
            if not isinstance(length, int):
                return WHOLE
            out = -(-length // strides[i])
            total = max((out - 1) * strides[i] + effective - length, 0)
            begin = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        elif auto_pad == "VALID":
            begin = 0
        else:
            begin = pads[i]
        axes[axis] = (key, Span(span.jump * strides[i], span.start - begin * span.jump,
                                span.size + (effective - 1) * span.jump))
    return _Track(axes, 4)


def _slice(node: NodeProto, track, others, inits, producers) -> _Track | str:
    """Slice with constant starts: a spatial axis cut from a non-negative start with step 1 shifts its span."""
    if not isinstance(track, _Track) or any(o is not None for o in others) or len(node.input) < 3:
        return WHOLE
    def value(k):
        if len(node.input) > k and node.input[k]:
            v = constant_value(node.input[k], inits, producers)
            return None if v is None else [int(x) for x in np.asarray(v).ravel()]
        return []
    starts, axes, steps = value(1), value(3), value(4)
    if starts is None or axes is None or steps is None:
        return WHOLE
    axes = [a % track.rank for a in axes] if axes else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    moved = dict(track.axes)
    for axis, start, step in zip(axes, starts, steps):
        if axis in moved:
            if step != 1 or start < 0:
                return WHOLE
            key, span = moved[axis]
            moved[axis] = (key, Span(span.jump, span.start + start * span.jump, span.size))
    return _Track(moved, track.rank)


def _pad(node: NodeProto, track, inits, producers) -> _Track | str:
    if not isinstance(track, _Track):
        return WHOLE
    mode = _attr(node, "mode", b"constant")
    if (mode.decode() if isinstance(mode, bytes) else mode) != "constant":
        return WHOLE  # reflect/edge padding copies border pixels into the pad
    if len(node.input) > 1 and node.input[1]:
        pads = constant_value(node.input[1], inits, producers)
        if pads is None:
            return WHOLE
        pads = [int(p) for p in np.asarray(pads).ravel()]
    else:
        pads = list(_attr(node, "pads", []) or [])
    axes_input = constant_value(node.input[3], inits, producers) if len(node.input) > 3 and node.input[3] else None
    which = ([int(a) % track.rank for a in np.asarray(axes_input).ravel()] if axes_input is not None
             else list(range(track.rank)))
    if len(pads) != 2 * len(which):
        return WHOLE
    axes = dict(track.axes)
    for k, axis in enumerate(which):
        if axis in axes:
            key, span = axes[axis]
            axes[axis] = (key, Span(span.jump, span.start - pads[k] * span.jump, span.size))
    return _Track(axes, track.rank)

