"""`onnxviz bench --compare-keras`: the Keras model with the same outputs, timed in a process of
its own (`python -m onnxviz.compare.keras_worker`, a spec as JSON on stdin), because TensorFlow and
ONNX Runtime in one process fight over threads, and so that nothing else imports TensorFlow.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from onnxviz.errors import OnnxvizError

MARK = "ONNXVIZ-KERAS-RESULT "  # starts the line of stdout that carries the report
EXPORT_HINT = "pip install 'onnxviz[export]'"


def run_keras_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run `time_keras` in a fresh Python process and return its report."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    done = subprocess.run([sys.executable, "-m", "onnxviz.compare.keras_worker"], input=json.dumps(spec),
                          capture_output=True, text=True, env=env)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(MARK):
            report = json.loads(line[len(MARK):])
            if "error" in report:
                raise OnnxvizError(report["error"], params=tuple(report.get("params", ())))
            return report
    tail = [line for line in done.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
    raise OnnxvizError(f"the Keras timing process failed (exit {done.returncode}): {tail[0].strip()}")


def time_keras(spec: dict[str, Any]) -> dict[str, Any]:
    """Time the Keras model with the same outputs; runs in its own process, imports TensorFlow."""
    try:
        import keras
        import tensorflow as tf
    except ImportError as exc:
        return {"error": f"{{compare_keras}} needs TensorFlow ({exc}): {EXPORT_HINT}", "params": ["compare_keras"]}
    from onnxviz.model.info import LayerInfo, ModelInfo, Preprocessing
    from onnxviz.exporter.sources.keras import rebuild

    # The same rebuild (nested models flattened) as export and diff use; the layers the
    # file exposes, under their names.
    info = ModelInfo(input_name="input", height=spec["height"], width=spec["width"],
                     layers=[LayerInfo(name, "", [], "") for name in spec["layers"]], preprocessing=Preprocessing(),
                     source=spec.get("source", "the model"), version="", keras=spec["keras"])
    try:
        _, model, _, _ = rebuild(info, weights=False)  # timing only: weights do not change the work
    except OnnxvizError as exc:
        return {"error": str(exc)}
    call = tf.function(lambda x: model(x, training=False))
    rng = np.random.default_rng(0)
    timings: dict[str, dict[str, list[float]]] = {"predict": {}, "function": {}}
    for size in spec["batch_sizes"]:
        batch = rng.uniform(0, 255, (size, spec["height"], spec["width"], 3)).astype(np.float32)
        tensor = tf.constant(batch)
        modes = {"predict": lambda: model.predict(batch, batch_size=size, verbose=0),
                 # .numpy(): ONNX Runtime's outputs are numpy arrays too
                 "function": lambda: [o.numpy() for o in tf.nest.flatten(call(tensor))]}
        for mode, fn in modes.items():
            for _ in range(spec["warmup"]):
                fn()
            samples = []
            for _ in range(spec["runs"]):
                start = time.perf_counter()
                fn()
                samples.append((time.perf_counter() - start) * 1e3)
            timings[mode][str(size)] = samples
    gpus = tf.config.list_physical_devices("GPU")
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "device": "GPU" if gpus else "CPU",
            "timings": timings}


def main() -> int:
    """The worker process: a spec as JSON on stdin, the report as one marked line on stdout."""
    try:
        report = time_keras(json.loads(sys.stdin.read()))
    except Exception as exc:  # reported to the parent as one line
        report = {"error": f"the Keras timing failed: {type(exc).__name__}: {' '.join(str(exc).split())}"}
    print(MARK + json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
