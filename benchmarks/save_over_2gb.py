"""A model over protobuf's 2 GB cap, written by `modelfile.save_model` and run by ONNX Runtime.

    python benchmarks/save_over_2gb.py   # needs about 5 GB of memory and 2.3 GB of disk in /tmp/big2g

Two Gather tables of 1.12 GB each (2.24 GB of float32): one protobuf cannot hold them
(serialising fails), the model + data-file pair can; ORT reads values from both tables,
beyond the 2 GB offset included. Prints what it checked; the files are removed afterwards.
"""
import os
from pathlib import Path

Path("/tmp/big2g").mkdir(exist_ok=True)
import time, numpy as np, onnxruntime as ort, resource
from onnx import helper, TensorProto
from onnxviz.model.modelfile import save_model, check_model_file
n = 280_000_000  # two tensors of 1.12 GB: 2.24 GB of float32 in one model
g = helper.make_graph([helper.make_node("Gather", ["W", "idx"], ["a"]), helper.make_node("Gather", ["V", "idx"], ["b"]),
                       helper.make_node("Add", ["a", "b"], ["y"])], "big",
                      [helper.make_tensor_value_info("idx", TensorProto.INT64, [3])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
for name, shift in (("W", 0), ("V", 1)):
    w = (np.arange(n, dtype=np.float32) + shift) % 1000
    t = m.graph.initializer.add(); t.name = name; t.data_type = TensorProto.FLOAT; t.dims.append(n); t.raw_data = w.tobytes()
    del w
try:
    m.SerializeToString()
    print("serialised as one protobuf (unexpected)")
except Exception as exc:
    print("one protobuf fails:", type(exc).__name__, str(exc)[:100])
t0 = time.perf_counter()
written = save_model(m, "/tmp/big2g/big.onnx")
print("save_model wrote", written, "bytes in", round(time.perf_counter() - t0, 1), "s")
del m
print(check_model_file("/tmp/big2g/big.onnx"))
s = ort.InferenceSession("/tmp/big2g/big.onnx", providers=["CPUExecutionProvider"])
print("ORT:", s.run(None, {"idx": np.array([0, 1234567, n - 1], np.int64)})[0], "expected", [1.0, 1135.0, 0.0])  # float32(n - 1) rounds to n: 0 + 0
print("peak RSS GB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)

for p in ("/tmp/big2g/big.onnx", "/tmp/big2g/big.onnx.data"):
    os.remove(p)
