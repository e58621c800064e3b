"""PyTorch module names for the tensors of an ONNX file exported by `torch.onnx.export`.

Both of torch's exporters leave the module hierarchy in the file:

- the dynamo exporter (`dynamo=True`, the default since torch 2.9) in each node's
  `metadata_props`: `pkg.torch.onnx.name_scopes` (`['', 'layer1', 'layer1.0',
  'layer1.0.bn2', '_native_batch_norm_legit_no_training_2']`: the module paths from the
  root, then the traced op) and `pkg.torch.onnx.class_hierarchy` (the classes, in step);
- the TorchScript exporter (`dynamo=False`) in node names: `/layer1/layer1.0/conv2/Conv`.

A tensor is named after a module when it is that module's output: made by a node of the
module and read outside the module's subtree (or a graph output). A module called more
than once gets its call number: `layer1.0.relu#2`. A tensor made inside a module that is
not its output (the residual Add of a ResNet block) is `layer1.0:add`. Tensors made
outside every module keep their names.

Folds. Both exporters fold BatchNorm into the convolution before it; the Conv node then
holds the BatchNorm's output. The dynamo exporter records the BatchNorm module as the
node's scope and keeps the convolution's weight names (`layer1.0.conv2.weight`) although
no node belongs to `layer1.0.conv2`: the tensor is `layer1.0.bn2` (BatchNorm2d) with
`layer1.0.conv2` folded into it. The TorchScript exporter keeps only the convolution's
scope and replaces both its weight and bias by new constants (`onnx::Conv_66`) instead of
the module's parameters: the BatchNorm's name is not in the file, so the tensor is
`layer1.0.conv2+bn`, folded `["layer1.0.conv2"]`, class unknown.

Everything here is a pure function of the `ModelProto`.
"""
from __future__ import annotations

import ast
import re
from collections import Counter
from dataclasses import dataclass, field, replace

from onnx import ModelProto, NodeProto

from onnxviz.model.graph import rename_tensors, used_names
from onnxviz.model.info import LayerInfo

SCOPES = "pkg.torch.onnx.name_scopes"
CLASSES = "pkg.torch.onnx.class_hierarchy"
PARAM_SUFFIXES = (".weight_bias", ".weight", ".bias")
_LEGACY_NODE = re.compile(r"^/(?:[^/]+/)*[A-Za-z][A-Za-z0-9]*(?:_\d+)?$")
_LEGACY_OUTPUT = re.compile(r"^(?P<node>/.+)_output_\d+$")
_CALL = re.compile(r"^(?P<base>.+)_(?P<n>\d+)$")


@dataclass
class ModuleIdentity:
    """Which module a tensor is the output of (after the exporter's folds)."""

    name: str  # `layer1.0.bn2`, `layer1.0.relu#2`, `layer1.0:add` (an op inside a module)
    cls: str = ""  # the module's class (`BatchNorm2d`); "" when the file does not say
    folded: list[str] = field(default_factory=list)  # modules the exporter folded into this one


@dataclass
class ModuleNames:
    """The module identity of each tensor a module path could be found for."""

    exporter: str | None  # "dynamo", "torchscript", or None when the file has no module paths
    identities: dict[str, ModuleIdentity]  # by tensor name in the source file
    note: str | None = None  # why some tensors keep their names, said once


def module_names(model: ModelProto) -> ModuleNames:
    """Module identities of a torch-exported model; empty for any other ONNX file."""
    nodes = list(model.graph.node)
    if any(_meta(n, SCOPES) is not None for n in nodes):
        return _dynamo(model)
    if model.producer_name == "pytorch" and any(_LEGACY_NODE.match(n.name) for n in nodes):
        return _torchscript(model)
    return ModuleNames(None, {})


def apply_module_names(model: ModelProto) -> tuple[ModelProto, dict[str, ModuleIdentity], str | None]:
    """`model` with each tensor that is a module's output renamed after it.

    Returns the renamed model, the identities by their new names and a note (or None)
    saying which tensors keep their names and why. A module name that is already used by
    another tensor leaves that tensor's name as it was.
    """
    found = module_names(model)
    if not found.identities:
        return model, {}, found.note
    taken = used_names(model.graph)
    renamed = set(found.identities)
    mapping: dict[str, str] = {}
    wanted = Counter(ident.name for ident in found.identities.values())
    for tensor, ident in found.identities.items():
        new = ident.name
        if wanted[new] > 1 or (new in taken and new not in renamed):
            continue
        mapping[tensor] = new
    # Two steps, so that tensors can trade names (`relu` -> `layer1.0.relu`, `x` -> `relu`).
    temp = {old: f"\x00onnxviz{i}" for i, old in enumerate(mapping)}
    out = rename_tensors(rename_tensors(model, temp), {temp[old]: new for old, new in mapping.items()})
    return out, {mapping[t]: found.identities[t] for t in mapping}, found.note


def with_identity(layer: LayerInfo, identities: dict[str, ModuleIdentity]) -> LayerInfo:
    """`layer` with the class of its module and what was folded into it, when known."""
    ident = identities.get(layer.name)
    if ident is None:
        return layer
    return replace(layer, cls=ident.cls, folded=list(ident.folded))


# ---------------------------------------------------------------- dynamo exporter

def _meta(node: NodeProto, key: str) -> str | None:
    for p in node.metadata_props:
        if p.key == key:
            return p.value
    return None


def _dynamo(model: ModelProto) -> ModuleNames:
    graph = model.graph
    paths: dict[int, list[str]] = {}  # node index -> module paths, root first ('' dropped)
    classes: dict[int, str] = {}
    missing = bad = 0
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" or not node.output:
            continue
        raw_scopes, raw_classes = _meta(node, SCOPES), _meta(node, CLASSES)
        if raw_scopes is None:
            missing += 1
            continue
        parsed = _parse_scopes(raw_scopes, raw_classes)
        if parsed is None:
            bad += 1
            continue
        paths[i], classes[i] = parsed
    identities = _identities(model, paths, classes, "dynamo")
    note = None
    if missing or bad:
        parts = [f"{missing} without {SCOPES}" if missing else "", f"{bad} with inconsistent module metadata" if bad else ""]
        note = (f"{' and '.join(p for p in parts if p)} of {len(graph.node)} nodes: the maps they make keep "
                f"their tensor names")
    return ModuleNames("dynamo", identities, note)


def _parse_scopes(raw_scopes: str, raw_classes: str | None) -> tuple[list[str], str] | None:
    """(module paths from the root, innermost class) or None when the metadata does not hold together."""
    try:
        scopes = ast.literal_eval(raw_scopes)
        hierarchy = ast.literal_eval(raw_classes) if raw_classes is not None else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None
    if not isinstance(scopes, list) or not scopes or not all(isinstance(s, str) for s in scopes):
        return None
    if hierarchy is not None and (not isinstance(hierarchy, list) or len(hierarchy) != len(scopes)):
        return None
    modules = scopes[1:-1]  # scopes[0] is the root module (''), scopes[-1] the traced op
    if scopes[0] != "":
        return None
    for outer, inner in zip(modules, modules[1:]):  # each path lies inside the one before
        if not inner.startswith(outer + "."):
            return None
    cls = str(hierarchy[-2]).rsplit(".", 1)[-1] if hierarchy is not None and len(hierarchy) >= 2 and modules else ""
    return modules, cls


# ---------------------------------------------------------------- TorchScript exporter

def _torchscript(model: ModelProto) -> ModuleNames:
    graph = model.graph
    paths: dict[int, list[str]] = {}
    seen: dict[str, set[str]] = {}  # module path -> child scope names met so far
    unmatched = 0
    outputs = {o.name for o in graph.output}
    for i, node in enumerate(graph.node):
        if node.op_type == "Constant" or not node.output:
            continue
        if not _LEGACY_NODE.match(node.name) or not all(_LEGACY_OUTPUT.match(o) or o in outputs
                                                        for o in node.output if o):
            unmatched += 1
            continue
        paths[i] = _legacy_paths(node.name.split("/")[1:-1], seen)
    identities = _identities(model, paths, {}, "torchscript")
    note = None
    if unmatched:
        note = (f"{unmatched} of {len(graph.node)} nodes have no scope path in their names: the maps they make "
                f"keep their tensor names")
    return ModuleNames("torchscript", identities, note)


def _legacy_paths(parts: list[str], seen: dict[str, set[str]]) -> list[str]:
    """`['layer1', 'layer1.0', 'relu_1']` -> `['layer1', 'layer1.0', 'layer1.0.relu#2']`.

    A container's children appear with the container's name in front (`block`, `block.0`,
    `block.0.0`); a module called again gets `_1`, `_2`, ... after its scope name, which is
    read as a call number only when the module's first call was met before in the same parent.
    """
    paths: list[str] = []
    current = ""
    last = ""
    for part in parts:
        base, call = part, 1
        m = _CALL.match(part)
        if m and m.group("base") in seen.get(current, set()):
            base, call = m.group("base"), int(m.group("n")) + 1
        if last and base.startswith(last + "."):
            full = current[: len(current) - len(last)] + base
        else:
            full = f"{current}.{base}" if current else base
        seen.setdefault(current, set()).add(base)
        paths.append(full if call == 1 else f"{full}#{call}")
        current, last = full, base
    return paths


# ---------------------------------------------------------------- shared

def _identities(model: ModelProto, paths: dict[int, list[str]], classes: dict[int, str],
                exporter: str) -> dict[str, ModuleIdentity]:
    """Tensor -> identity, from each node's module paths (root first)."""
    graph = model.graph
    nodes = list(graph.node)
    outputs = {o.name for o in graph.output}
    initializers = {t.name for t in graph.initializer}
    readers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in dict.fromkeys(x for x in node.input if x):
            readers.setdefault(name, []).append(i)
    with_nodes = {p.split("#")[0] for ps in paths.values() for p in ps}

    def inside(reader: int, module: str) -> bool:
        """Whether node `reader` belongs to `module`'s subtree."""
        rpaths = paths.get(reader)
        return rpaths is not None and any(p.split("#")[0] == module for p in rpaths)

    # Calls: the nodes of one module path joined by the tensors they pass each other.
    parent = {i: i for i in paths}

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    producer = {o: i for i, node in enumerate(nodes) for o in node.output if o}
    for i, node in enumerate(nodes):
        if i not in paths or not paths[i]:
            continue
        for name in node.input:
            j = producer.get(name)
            if j is not None and j in paths and paths[j] and paths[j][-1] == paths[i][-1]:
                parent[find(i)] = find(j)
    call_of: dict[int, int] = {}
    counts: dict[str, int] = {}
    roots_seen: dict[int, int] = {}
    for i in sorted(paths):
        if not paths[i]:
            continue
        root = find(i)
        if root not in roots_seen:
            module = paths[i][-1]
            counts[module] = counts.get(module, 0) + 1
            roots_seen[root] = counts[module]
        call_of[i] = roots_seen[root]

    ops_in: dict[tuple[str, str], int] = {}
    found: dict[str, ModuleIdentity] = {}
    for i, node in enumerate(nodes):
        if i not in paths or not paths[i]:
            continue
        module = paths[i][-1]
        plain = module.split("#")[0]
        for name in node.output:
            if not name:
                continue
            leaves = name in outputs or any(not inside(r, plain) for r in readers.get(name, []))
            if not leaves:
                key = (module, node.op_type.lower())
                ops_in[key] = ops_in.get(key, 0) + 1
                n = ops_in[key]
                found[name] = ModuleIdentity(f"{module}:{node.op_type.lower()}" + (f"#{n}" if n > 1 else ""))
                continue
            call = call_of[i]
            label = module if "#" in module or call == 1 else f"{module}#{call}"
            ident = ModuleIdentity(label, classes.get(i, ""))
            _mark_fold(ident, node, plain, initializers, with_nodes, exporter)
            found[name] = ident
    return found


def _mark_fold(ident: ModuleIdentity, node: NodeProto, module: str, initializers: set[str],
               with_nodes: set[str], exporter: str) -> None:
    """Name what the exporter folded into a node, from the weights it reads."""
    params = [n for n in node.input[1:] if n in initializers]
    if exporter == "dynamo":
        # The weights keep the names of the module they came from; a module of theirs that has
        # no node of its own and is not the node's module was folded into it.
        owners = []
        for p in params:
            owner = next((p[: -len(s)] for s in PARAM_SUFFIXES if p.endswith(s)), None)
            if owner and owner != module and owner not in with_nodes and owner not in owners:
                owners.append(owner)
        ident.folded = owners
    elif node.op_type == "Conv" and len(params) == 2 and all(p.startswith("onnx::") for p in params):
        # TorchScript: weight and bias both made by the exporter, not the module's parameters:
        # its Conv+BatchNorm fusion. The BatchNorm's own name is lost.
        ident.folded = [ident.name]
        ident.name = f"{ident.name}+bn"
