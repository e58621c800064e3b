"""Which ONNX Runtime session options make an onnxviz file (all feature maps exposed) fastest.

    python benchmarks/session_options.py models/vgg16-notop.onnx --batch-sizes 1,4 --rounds 8 --block 2

The variants of a group are timed in blocks, A B C then C B A and so on, so that load
from other work on the machine falls on all of them alike. Each block starts with
`--settle` untimed runs (ORT's idle threads spin for a while after a run and would slow
whichever session runs next) and then times `--block` runs. The table gives each
variant's median and its ratio to the options onnxviz uses
(`onnxviz.run.session.session_options`); two variants in each group are those same options,
and how far apart they come out is the noise of the run. Prints a table, then one JSON
line. Timings only: nothing here fails on a number.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxviz.run import session as runtime  # noqa: E402
from onnxviz.compare.bench import machine_info  # noqa: E402
from onnxviz.model.info import ModelInfo  # noqa: E402

Level = ort.GraphOptimizationLevel
ort.set_default_logger_severity(3)  # not "config entry overwritten" for every variant


def make(path: Path, tweak: Callable[[ort.SessionOptions], None] | None = None) -> ort.InferenceSession:
    options = runtime.session_options()
    if tweak:
        tweak(options)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def setter(**values):
    def tweak(options: ort.SessionOptions) -> None:
        for key, value in values.items():
            if key == "allow_spinning":
                options.add_session_config_entry("session.intra_op.allow_spinning", value)
            else:
                setattr(options, key, value)
    return tweak


def plain_run(sess: ort.InferenceSession, x: np.ndarray) -> Callable[[], object]:
    name = sess.get_inputs()[0].name
    outs = [o.name for o in sess.get_outputs()]
    return lambda: sess.run(outs, {name: x})


def io_binding(sess: ort.InferenceSession, x: np.ndarray) -> Callable[[], object]:
    """ORT allocates the outputs; we copy them to numpy afterwards."""
    name = sess.get_inputs()[0].name
    outs = [o.name for o in sess.get_outputs()]

    def call():
        binding = sess.io_binding()
        binding.bind_cpu_input(name, x)
        for out in outs:
            binding.bind_output(out, "cpu")
        sess.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()
    return call


def preallocated(sess: ort.InferenceSession, x: np.ndarray, reuse: bool) -> Callable[[], object]:
    """ORT writes straight into numpy arrays: fresh ones each run (safe API), or the same ones."""
    name = sess.get_inputs()[0].name
    outs = [o.name for o in sess.get_outputs()]
    shapes = [a.shape for a in sess.run(outs, {name: x})]
    kept = [np.empty(s, np.float32) for s in shapes]

    def call():
        buffers = kept if reuse else [np.empty(s, np.float32) for s in shapes]
        binding = sess.io_binding()
        binding.bind_cpu_input(name, x)
        for out, buf in zip(outs, buffers):
            binding.bind_output(out, "cpu", 0, np.float32, list(buf.shape), buf.ctypes.data)
        sess.run_with_iobinding(binding)
        return buffers
    return call


def groups(path: Path, cores: int):
    base = ("onnxviz default", None, plain_run)
    return {
        "graph optimisation": [
            ("ORT_DISABLE_ALL", setter(graph_optimization_level=Level.ORT_DISABLE_ALL), plain_run),
            ("ORT_ENABLE_BASIC", setter(graph_optimization_level=Level.ORT_ENABLE_BASIC), plain_run),
            ("ORT_ENABLE_EXTENDED", setter(graph_optimization_level=Level.ORT_ENABLE_EXTENDED), plain_run),
            ("ORT_ENABLE_ALL", setter(graph_optimization_level=Level.ORT_ENABLE_ALL), plain_run),
            base,
        ],
        "intra-op threads": [
            ("1 thread", setter(intra_op_num_threads=1), plain_run),
            (f"{cores} (physical cores)", setter(intra_op_num_threads=cores), plain_run),
            ("0 (ORT's default)", setter(intra_op_num_threads=0), plain_run),
            base,
        ],
        "spinning": [
            ("spinning on (ORT's default)", setter(allow_spinning="1"), plain_run),
            ("spinning off", setter(allow_spinning="0"), plain_run),
            base,
        ],
        "memory": [
            ("arena on, pattern on", setter(enable_cpu_mem_arena=True, enable_mem_pattern=True), plain_run),
            ("arena off", setter(enable_cpu_mem_arena=False), plain_run),
            ("pattern off", setter(enable_mem_pattern=False), plain_run),
            ("arena off, pattern off", setter(enable_cpu_mem_arena=False, enable_mem_pattern=False), plain_run),
            base,
        ],
        "outputs": [
            ("session.run", None, plain_run),
            ("IO binding, ORT allocates", None, io_binding),
            ("preallocated, fresh arrays", None, lambda s, x: preallocated(s, x, reuse=False)),
            ("preallocated, reused arrays", None, lambda s, x: preallocated(s, x, reuse=True)),
            base,
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--batch-sizes", default="1", help="comma-separated, e.g. 1,4")
    parser.add_argument("--rounds", type=int, default=4, help="blocks per variant")
    parser.add_argument("--block", type=int, default=3, help="timed runs per block")
    parser.add_argument("--settle", type=int, default=1, help="untimed runs at the start of each block")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--groups", default="", help="comma-separated subset of the groups")
    args = parser.parse_args()

    probe = ort.InferenceSession(str(args.model), providers=["CPUExecutionProvider"])
    info = ModelInfo.from_props(probe.get_modelmeta().custom_metadata_map, str(args.model))
    del probe
    cores = runtime.physical_cores()
    wanted = [g.strip() for g in args.groups.split(",") if g.strip()]
    report = {"model": str(args.model), "source": info.source, "outputs": len(info.layers),
              "machine": machine_info(cores),
              "rounds": args.rounds, "block": args.block, "settle": args.settle, "warmup": args.warmup, "groups": {}}
    rng = np.random.default_rng(0)
    for group, variants in groups(args.model, cores).items():
        if wanted and group not in wanted:
            continue
        for batch in [int(b) for b in args.batch_sizes.split(",")]:
            x = rng.uniform(0, 255, (batch, info.height, info.width, 3)).astype(np.float32)
            calls = []
            for name, tweak, mode in variants:
                calls.append((name, mode(make(args.model, tweak), x)))
            for _ in range(args.warmup):
                for _, call in calls:
                    call()
            times: dict[str, list[float]] = {name: [] for name, _ in calls}
            for r in range(args.rounds):
                for name, call in (calls if r % 2 == 0 else calls[::-1]):
                    for _ in range(args.settle):  # after the switch, untimed
                        call()
                    for _ in range(args.block):
                        start = time.perf_counter()
                        call()
                        times[name].append((time.perf_counter() - start) * 1e3)
            base = statistics.median(times["onnxviz default"])
            rows = {name: {"median_ms": round(statistics.median(t), 2),
                           "p90_ms": round(float(np.percentile(t, 90)), 2),
                           "ratio_to_default": round(statistics.median(t) / base, 3)} for name, t in times.items()}
            report["groups"].setdefault(group, {})[str(batch)] = rows
            print(f"\n{group}, batch {batch} ({args.rounds} x {args.block} runs each, in alternating blocks)",
                  flush=True)
            for name, row in rows.items():
                print(f"  {name:32s} {row['median_ms']:10.2f} ms  p90 {row['p90_ms']:10.2f}"
                      f"  x{row['ratio_to_default']:.3f}")
            del calls
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
