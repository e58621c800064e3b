"""Other ways to write the atlas's per-channel reductions in the graph, against the one
`graph.add_channel_reductions` writes (Reshape to [N, C, H*W], ReduceMax and ArgMax over the last
axis), on a fixed batch of 8: same outputs (checked), time alternating, medians.

- argmax_gather: ArgMax (keepdims) and GatherElements of the map at it: one pass over the map
  instead of two.
- maxpool_indices: a MaxPool over the whole map with its Indices output, then Mod H*W.
- nhwc: Transpose to NHWC first, which ONNX Runtime folds into the ReorderOutput it inserts
  anyway (from its blocked NCHWc layout), then both reductions over the H*W axis.

    python benchmarks/atlas_reductions.py /work/bigmodels/resnet50.onnx --runs 12
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxviz.atlas.options import AtlasOptions  # noqa: E402
from onnxviz.atlas.plan import make_plan  # noqa: E402
from onnxviz.model.graph import reduction_names  # noqa: E402
from onnxviz.run.session import session_options  # noqa: E402

VARIANTS = ("argmax_gather", "maxpool_indices", "nhwc")


def variant(reduced: bytes, layers: dict[str, list], kind: str) -> bytes:
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(reduced)
    graph = model.graph
    ours = {o for layer in layers for o in reduction_names(layer)}
    keep = [onnx.NodeProto.FromString(n.SerializeToString()) for n in graph.node
            if not (n.op_type in ("Reshape", "ReduceMax", "ReduceMean", "ArgMax")
                    and any(o in ours or o.startswith("onnxviz_flat:") for o in n.output))]
    del graph.node[:]
    graph.node.extend(keep)

    def const(name: str, value) -> str:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value, np.int64), name))
        return name

    for layer, (channels, height, width) in layers.items():
        score, position = reduction_names(layer)
        add = graph.node.append
        if kind == "argmax_gather":
            add(helper.make_node("Reshape", [layer, const(f"v_shape:{layer}", [0, 0, -1])], [f"v_flat:{layer}"]))
            add(helper.make_node("ArgMax", [f"v_flat:{layer}"], [f"v_arg:{layer}"], axis=2, keepdims=1))
            add(helper.make_node("GatherElements", [f"v_flat:{layer}", f"v_arg:{layer}"], [f"v_max:{layer}"], axis=2))
            add(helper.make_node("Squeeze", [f"v_max:{layer}", const(f"v_axis:{layer}", [2])], [score]))
            add(helper.make_node("Squeeze", [f"v_arg:{layer}", f"v_axis:{layer}"], [position]))
        elif kind == "maxpool_indices":
            add(helper.make_node("MaxPool", [layer], [f"v_max:{layer}", f"v_index:{layer}"],
                                 kernel_shape=[height, width]))
            add(helper.make_node("Squeeze", [f"v_max:{layer}", const(f"v_axes:{layer}", [2, 3])], [score]))
            add(helper.make_node("Mod", [f"v_index:{layer}", const(f"v_hw:{layer}", height * width)],
                                 [f"v_mod:{layer}"]))
            add(helper.make_node("Squeeze", [f"v_mod:{layer}", f"v_axes:{layer}"], [position]))
        else:  # nhwc
            add(helper.make_node("Transpose", [layer], [f"v_nhwc:{layer}"], perm=[0, 2, 3, 1]))
            add(helper.make_node("Reshape", [f"v_nhwc:{layer}", const(f"v_shape:{layer}", [0, -1, channels])],
                                 [f"v_flat:{layer}"]))
            add(helper.make_node("ReduceMax", [f"v_flat:{layer}"], [score], axes=[1], keepdims=0))
            add(helper.make_node("ArgMax", [f"v_flat:{layer}"], [position], axis=1, keepdims=0))
    return model.SerializeToString()


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser()
    parser.add_argument("model", type=Path)
    parser.add_argument("--runs", type=int, default=12)
    args = parser.parse_args()
    plan = make_plan(args.model, AtlasOptions(provider="cpu"))
    layers = {layer.name: [int(d) for d in layer.shape[1:]] for layer in plan.layers}
    x = np.random.default_rng(0).uniform(0, 255, (8, plan.info.height, plan.info.width, 3)).astype(np.float32)
    sessions = {"graph.add_channel_reductions": ort.InferenceSession(plan.reduced, session_options(),
                                                                     providers=["CPUExecutionProvider"])}
    for kind in VARIANTS:
        sessions[kind] = ort.InferenceSession(variant(plan.reduced, layers, kind), session_options(),
                                              providers=["CPUExecutionProvider"])
    ref = None
    for kind, s in sessions.items():  # same outputs, and a warm-up run each
        out = dict(zip([o.name for o in s.get_outputs()], s.run(None, {s.get_inputs()[0].name: x})))
        ref = ref or out
        assert all(np.array_equal(out[k], v) for k, v in ref.items()), f"{kind} gives other outputs"
    times = {kind: [] for kind in sessions}
    for _ in range(args.runs):
        for kind, s in sessions.items():
            t = time.perf_counter()
            s.run(None, {s.get_inputs()[0].name: x})
            times[kind].append(time.perf_counter() - t)
    base = times["graph.add_channel_reductions"]
    print(f"\n{args.model.stem}, batch of 8, {args.runs} alternating runs each; all outputs equal")
    print("| reductions | median ms | current time / this time, median of runs (above 1: faster) |\n|---|---|---|")
    for kind, t in times.items():
        print(f"| {kind} | {statistics.median(t) * 1e3:.1f} | {statistics.median(b / a for a, b in zip(t, base)):.3f} |")


if __name__ == "__main__":
    main()
