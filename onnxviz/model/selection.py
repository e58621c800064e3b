"""Choosing layers by glob: the one rule behind `export --layers/--exclude`, `render --layers`,
`atlas --layers` and `Model.activations(layers=...)`.

A candidate has a name (what the layer is called in the file) and may answer to other
keys too (an ONNX node name, a module path): a glob selects it when it matches any of
them. A glob that matches nothing is an error that lists what exists, never ignored.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Sequence

from onnxviz.errors import LayerSelectionError

if TYPE_CHECKING:
    from onnxviz.model.info import LayerInfo, ModelInfo

SHOWN = 12  # names listed in an error message
PADDING_OPS = frozenset({"ZeroPadding2D", "Pad"})


@dataclass(frozen=True)
class Candidate:
    name: str
    keys: tuple[str, ...] = field(default=())  # more names it answers to

    def matches(self, pattern: str) -> bool:
        return any(fnmatch.fnmatchcase(key, pattern) for key in (self.name, *self.keys) if key)


def listing(names: Sequence[str], limit: int = SHOWN) -> str:
    """`a, b, c, ...` with at most `limit` names."""
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def select(candidates: Iterable[Candidate], include: Sequence[str] = (), exclude: Sequence[str] = (),
           default: Iterable[str] | None = None, *, where: str = "the model",
           params: tuple[str, str] = ("layers", "exclude"), hint: str = "",
           listed: Sequence[str] | None = None) -> list[str]:
    """Names of the candidates chosen, in candidate order.

    `include` globs pick candidates (every glob must match one); without them `default`
    (names) is taken, or every candidate. `exclude` globs then remove candidates (each
    must match one). `params` name the two arguments in messages, `listed` the names an
    error lists (default: every candidate); `hint` is appended.
    """
    candidates = list(candidates)
    names = list(listed) if listed is not None else [c.name for c in candidates]

    def nothing(param: str, pattern: str) -> LayerSelectionError:
        text = f"'{pattern}' matches no layer of {where}; it has {len(names)}: {listing(names)}{hint}"
        return LayerSelectionError("{" + param + "} " + text, params=(param,))

    if include:
        for pattern in include:
            if not any(c.matches(pattern) for c in candidates):
                raise nothing(params[0], pattern)
        chosen = [c for c in candidates if any(c.matches(p) for p in include)]
    elif default is not None:
        wanted = set(default)
        chosen = [c for c in candidates if c.name in wanted]
    else:
        chosen = candidates
    for pattern in exclude:
        if not any(c.matches(pattern) for c in candidates):
            raise nothing(params[1], pattern)
    chosen = [c for c in chosen if not any(c.matches(p) for p in exclude)]
    if not chosen:
        raise LayerSelectionError("the layer selection leaves nothing of " + where + " to use; loosen {"
                                  + params[0] + "} or {" + params[1] + "}" + hint, params=params)
    return [c.name for c in chosen]


def select_layers(info: ModelInfo, patterns: Sequence[str], where: str, *, every_output: bool = False,
                  hint: str | None = None) -> list[LayerInfo]:
    """The layers of an onnxviz file that `patterns` (globs) select, in network order; all of
    them without patterns. Among the file's 4-D feature maps, or with `every_output` among all
    its outputs (vectors too). The one way render, atlas and the API choose layers of a file.
    `hint` ends a message about a glob that matches nothing (default: run `onnxviz layers`)."""
    layers = info.layers if every_output else info.feature_maps
    if not layers:
        raise LayerSelectionError(f"'{where}' exposes no 4-D feature maps; export it again with {{layers}}",
                                  params=("layers",))
    hint = f". Run 'onnxviz layers {where}'" if hint is None else hint
    chosen = set(select([Candidate(layer.name) for layer in layers], patterns, where=where, hint=hint))
    return [layer for layer in layers if layer.name in chosen]


def default_layers(info: ModelInfo) -> list[LayerInfo]:
    """At each spatial resolution, the last of its widest maps (padding left out): one layer per stage,
    where the stage's representation is richest (the atlas's layers and render's factorized parts).
    VGG16: block1_conv2, block2_conv2, block3_conv3, block4_conv3, block5_conv3, block5_pool; ResNet50:
    conv1_relu and each stage's last block output; ResNet101V2 (whose stages shrink inside their last
    block): conv1_conv and each stage's last `preact_relu`, then post_relu."""
    best: dict[tuple, LayerInfo] = {}
    for layer in info.feature_maps:
        if layer.op in PADDING_OPS:
            continue
        key = tuple(layer.shape[2:])
        if key not in best or int(layer.shape[1]) >= int(best[key].shape[1]):
            best[key] = layer
    chosen = {layer.name for layer in best.values()}
    return [layer for layer in info.feature_maps if layer.name in chosen]
