"""Where a data file beside the .onnx starts to pay: one image's whole `onnxviz render`
process, the same network written as one file and as a pair, for growing weights.

    python benchmarks/single_file.py IMAGE --sizes 2,8,32,128,400 --rounds 5

For each size S (MB of float32 weights) an ONNX network is built (three stride-2 convolutions
to 4x4, then 512-channel 3x3 convolutions until the weights reach S MB: the work per image
stays small, so what grows is the weights), exported by `onnxviz export` twice
(`--single-file`, `--external-data`), and `python -m onnxviz render MODEL IMAGE` is timed from
outside, the two files alternating, `--rounds` times each; medians. Page cache warm (each file
is rendered once before timing), as for a model used twice.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def network(megabytes: float, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x, c = [], [], "x", 3
    for i, width in enumerate((64, 128, 512)):
        w = (rng.standard_normal((width, c, 3, 3)) * (2 / (9 * c)) ** 0.5).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], strides=[2, 2], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x, c = f"r{i}", width
    total = sum(t.raw_data.__len__() for t in inits)
    i = 3
    while total < megabytes * 1e6:
        w = (rng.standard_normal((512, 512, 3, 3)) * (2 / (9 * 512)) ** 0.5).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        x, total, i = f"r{i}", total + w.nbytes, i + 1
    graph = helper.make_graph(nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 512, 4, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path, save_as_external_data=total > 1.9e9)


def timed(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("--sizes", default="2,8,32,128,400", help="MB of weights, comma-separated")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for size in [float(s) for s in args.sizes.split(",")]:
            source = tmp / f"net{size:g}.onnx"
            network(size, source)
            files = {}
            for how in ("single-file", "external-data"):
                out = tmp / how / f"net{size:g}.onnx"
                subprocess.run([sys.executable, "-m", "onnxviz", "export", str(source), "-o", str(out), f"--{how}",
                                "--input-size", "32"], check=True, capture_output=True)
                files[how] = out
            render = {how: [sys.executable, "-m", "onnxviz", "render", str(f), str(args.image), "-o",
                            str(tmp / "out" / f"{how}{size:g}")] for how, f in files.items()}
            for cmd in render.values():
                timed(cmd)  # warm the page cache
            times: dict[str, list[float]] = {how: [] for how in files}
            for _ in range(args.rounds):
                for how, cmd in render.items():
                    times[how].append(timed(cmd))
            single, pair = (statistics.median(times[h]) for h in ("single-file", "external-data"))
            weights = sum(p.stat().st_size for p in files["external-data"].parent.glob(f"net{size:g}.onnx*"))
            rows.append({"weights_mb": round(weights / 1e6, 1), "single_s": round(single, 3),
                         "pair_s": round(pair, 3), "pair_over_single": round(pair / single, 3),
                         "single_runs": times["single-file"], "pair_runs": times["external-data"]})
            print(f"{weights / 1e6:8.1f} MB  one file {single:6.3f} s  pair {pair:6.3f} s  pair/one {pair / single:5.3f}",
                  flush=True)
            for f in files.values():
                for p in f.parent.glob(f.name + "*"):
                    p.unlink()
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
