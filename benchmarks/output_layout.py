"""Why onnxviz files give their feature maps as NCHW: the same Keras model exported with
NHWC outputs (as TensorFlow holds them) and with NCHW outputs, timed side by side on
ONNX Runtime CPU.

    python benchmarks/output_layout.py inceptionv3 --runs 20

Needs the export extra. Prints a table and writes JSON with --json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np


def export_both(name: str, folder: Path) -> dict[str, Path]:
    from onnxviz.exporter.sources.base import ExportOptions
    from onnxviz.exporter.sources import keras as ke

    opts = ExportOptions(weights="none")
    app = ke.resolve_application(name)
    model, _ = ke.build_application(app, opts)
    tf, keras = ke._import_keras()
    shape = ke._model_input_shape(model, opts)
    inp, finals, traced = ke.flatten_model(model, shape)
    final_names = [t.name for t in traced if any(t.tensor is f for f in finals)]
    chosen = ke.choose_traced(traced, final_names, [], [])
    flat = keras.Model(inp, [t.tensor for t in chosen])
    four_d = [len(t.tensor.shape) == 4 for t in chosen]
    paths = {}
    for layout, flags in (("NCHW", four_d), ("NHWC", [False] * len(chosen))):
        proto = ke._convert(keras, tf, flat, inp.name, shape, flags)
        path = folder / f"{name}_{layout}.onnx"
        path.write_bytes(proto.SerializeToString())
        paths[layout] = path
    return paths


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="keras.applications name, e.g. inceptionv3")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        paths = export_both(args.model, Path(tmp))
        sessions, transposes = {}, {}
        for layout, path in paths.items():
            model = onnx.load(str(path))
            transposes[layout] = Counter(n.op_type for n in model.graph.node)["Transpose"]
            sessions[layout] = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        feed_name = sessions["NCHW"].get_inputs()[0].name
        shape = sessions["NCHW"].get_inputs()[0].shape
        x = np.random.default_rng(0).uniform(0, 1, (args.batch_size, *shape[1:])).astype(np.float32)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for s in sessions.values():
            s.run(None, {feed_name: x})
        for _ in range(args.runs):  # alternate, so both see the same machine
            for layout, s in sessions.items():
                t = time.perf_counter()
                s.run(None, {feed_name: x})
                times[layout].append(time.perf_counter() - t)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    result = {"model": args.model, "batch_size": args.batch_size, "runs": args.runs,
              "outputs": len(sessions["NCHW"].get_outputs()), "transposes": transposes,
              "median_ms": med, "nhwc_over_nchw": med["NHWC"] / med["NCHW"]}
    print(f"{args.model}, batch {args.batch_size}, {result['outputs']} outputs, median of {args.runs} runs (ORT CPU)")
    for layout in ("NCHW", "NHWC"):
        print(f"  {layout} outputs: {med[layout]:8.1f} ms   {transposes[layout]:4d} Transpose nodes")
    print(f"  NHWC / NCHW time: {result['nhwc_over_nchw']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
