"""Where the time of exposing every feature map goes on ONNX Runtime CPU, and what bounds it.

    python benchmarks/extraction_cost.py models/resnet101v2.onnx --runs 18 \
        --exclude '*_conv' --exclude '*_bn' --exclude '*_pad'

For one onnxviz file at batch 1, timed in alternating blocks in one process (the same
schedule as `onnxviz bench`):
- `full`: every output of the file (what `onnxviz bench` times);
- `floor`: the final output only (the same network with no intermediate outputs);
- `selection` (with `--exclude`): the file with the outputs matching the globs
  stripped, e.g. the Conv and BatchNorm tensors between a convolution and its
  activation, so that ONNX Runtime can fuse Conv+BatchNorm+activation again.
Then ONNX Runtime's own profile of `full` and `floor`, summed per operator: where the
extra time goes. And two rates of this machine to compare with:
- memory: how fast it writes the feature maps' bytes (numpy copying the same number of
  bytes, in arrays of the same sizes), which bounds what any runtime can do when every
  map must be handed back;
- compute: GFLOP/s of the network's convolutions and matmuls in `floor`, against a
  float32 matrix product of 4096x4096 by numpy's BLAS and by ONNX Runtime (same threads).
Prints a table, then one JSON line. Timings only: nothing here fails on a number.
"""
from __future__ import annotations

import argparse
import collections
import fnmatch
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper, shape_inference

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxviz.run import session as runtime  # noqa: E402
from onnxviz.compare.bench import machine_info, time_alternately  # noqa: E402
from onnxviz.model.graph import strip_outputs  # noqa: E402
from onnxviz.model.info import ModelInfo  # noqa: E402

ort.set_default_logger_severity(3)


def session(model: onnx.ModelProto | Path, profile: str | None = None) -> ort.InferenceSession:
    options = runtime.session_options()
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    source = str(model) if isinstance(model, Path) else model.SerializeToString()
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def runner(sess: ort.InferenceSession, x: np.ndarray):
    name, outs = sess.get_inputs()[0].name, [o.name for o in sess.get_outputs()]
    return lambda: sess.run(outs, {name: x})


def op_profile(sess: ort.InferenceSession, call, runs: int) -> dict[str, float]:
    """ms per run spent in each operator type, from ORT's profile."""
    for _ in range(runs):
        call()
    path = sess.end_profiling()
    events = json.loads(Path(path).read_text())
    os.remove(path)
    totals: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            totals[e["args"]["op_name"]] += e["dur"]
    return {op: us / runs / 1e3 for op, us in totals.most_common()}


def conv_gflop(model: onnx.ModelProto, height: int, width: int) -> float:
    """GFLOP (2 per multiply-add) of the Conv, MatMul and Gemm nodes for one image."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = fixed.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, height, width, 3)):
        dim.Clear()
        dim.dim_value = value
    inferred = shape_inference.infer_shapes(fixed)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    weights = {t.name: list(t.dims) for t in model.graph.initializer}
    flop = 0.0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.input[1] in weights and node.output[0] in shapes:
            o, i, *kernel = weights[node.input[1]]
            out = shapes[node.output[0]]
            flop += 2.0 * np.prod(out[2:]) * o * i * np.prod(kernel)
        elif node.op_type in ("MatMul", "Gemm") and node.input[1] in weights:
            k, n = weights[node.input[1]][-2:]
            flop += 2.0 * k * n
    return flop / 1e9


def matmul_gflops(threads: int, size: int = 4096, runs: int = 5) -> dict[str, float]:
    """This CPU's float32 rate: a size^3 matrix product by numpy's BLAS and by ORT's MatMul."""
    a = np.random.rand(size, size).astype(np.float32)
    b = np.random.rand(size, size).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
        [helper.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [size, size])],
        [numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    sess = ort.InferenceSession(model.SerializeToString(), runtime.session_options(threads),
                                providers=["CPUExecutionProvider"])
    rates = {}
    for name, call in (("numpy", lambda: a @ b), ("onnxruntime", lambda: sess.run(None, {"a": a}))):
        call()
        best = float("inf")
        for _ in range(runs):
            t = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - t)
        rates[name] = 2.0 * size ** 3 / best / 1e9
    return rates


def copy_rate(sizes: list[int], rounds: int = 5) -> float:
    """GB/s numpy reaches copying arrays of these byte sizes into fresh ones (one thread)."""
    sources = [np.random.rand(max(1, s // 4)).astype(np.float32) for s in sizes]
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        copies = [s.copy() for s in sources]
        best = min(best, time.perf_counter() - t)
        del copies
    return sum(s.nbytes for s in sources) / best / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--exclude", action="append", default=[], help="glob of outputs to strip (repeatable)")
    parser.add_argument("--runs", type=int, default=18, help="timed runs per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--profile-runs", type=int, default=10)
    args = parser.parse_args()

    model = onnx.load(str(args.model))
    info = ModelInfo.from_props({p.key: p.value for p in model.metadata_props}, str(args.model))
    outputs = [o.name for o in model.graph.output]
    final = outputs[-1]
    variants = {"full": model, "floor": strip_outputs(model, [final])}
    if args.exclude:
        kept = [n for n in outputs if n == final or not any(fnmatch.fnmatchcase(n, g) for g in args.exclude)]
        variants["selection"] = strip_outputs(model, kept)
    x = (np.random.default_rng(0).random((1, info.height, info.width, 3)) * 255).astype(np.float32)

    sessions = {k: session(m) for k, m in variants.items()}
    calls = {k: runner(s, x) for k, s in sessions.items()}
    sizes = {k: [v.nbytes for v in calls[k]()] for k in calls}
    out_bytes = {k: sum(v) for k, v in sizes.items()}
    out_count = {k: len(s.get_outputs()) for k, s in sessions.items()}
    samples = dict(zip(calls, time_alternately(list(calls.values()), args.runs, args.warmup)))
    med = {k: statistics.median(v) for k, v in samples.items()}
    del sessions, calls

    with tempfile.TemporaryDirectory() as tmp:
        profiles = {}
        for k in ("full", "floor"):
            sess = session(variants[k], profile=str(Path(tmp) / k))
            profiles[k] = op_profile(sess, runner(sess, x), args.profile_runs)

    copy_gbs = copy_rate(sizes["full"])
    threads = runtime.physical_cores()
    peak = matmul_gflops(threads)
    gflop = conv_gflop(model, info.height, info.width)

    print(f"{args.model.name}: batch 1, {args.runs} runs per variant in alternating blocks, medians")
    print(f"{'variant':10s} {'outputs':>7s} {'maps MB':>8s} {'ms':>8s} {'x floor':>8s}")
    for k in samples:
        print(f"{k:10s} {out_count[k]:7d} {out_bytes[k] / 1e6:8.1f} {med[k]:8.1f} {med[k] / med['floor']:8.2f}")
    extra = {op: profiles["full"].get(op, 0.0) - profiles["floor"].get(op, 0.0)
             for op in set(profiles["full"]) | set(profiles["floor"])}
    print("ORT profile, ms per run (full / floor / extra):")
    for op, ms in sorted(extra.items(), key=lambda kv: -abs(kv[1])):
        if max(profiles["full"].get(op, 0), profiles["floor"].get(op, 0)) >= 0.3:
            print(f"  {op:16s} {profiles['full'].get(op, 0):7.1f} {profiles['floor'].get(op, 0):7.1f} {ms:+7.1f}")
    write_ms = out_bytes["full"] / 1e9 / copy_gbs * 1e3
    reorder = profiles["full"].get("ReorderOutput", 0.0)
    print(f"memory: numpy copies the {out_bytes['full'] / 1e6:.0f} MB of maps at {copy_gbs:.1f} GB/s = {write_ms:.1f} ms "
          f"({write_ms / med['floor']:.2f} of the floor); ORT's ReorderOutput wrote them at "
          f"{out_bytes['full'] / 1e9 / (reorder / 1e3) if reorder else float('nan'):.1f} GB/s in {reorder:.1f} ms")
    best = max(peak.values())
    print(f"compute: {gflop:.1f} GFLOP per image; floor {gflop / med['floor'] * 1e3:.0f} GFLOP/s; matrix product "
          f"4096^3: numpy {peak['numpy']:.0f}, ORT {peak['onnxruntime']:.0f} GFLOP/s on {threads} threads "
          f"(floor at {gflop / med['floor'] * 1e3 / best:.0%} of the faster)")
    print(json.dumps({
        "model": str(args.model), "exclude": args.exclude, "medians_ms": med, "samples_ms": samples,
        "outputs": out_count, "maps_bytes": out_bytes, "profile_ms": profiles, "copy_gb_s": copy_gbs,
        "gflop_per_image": gflop, "matmul_gflop_s": peak, "machine": machine_info(threads),
    }))


if __name__ == "__main__":
    main()
