"""Store an onnxviz file's weights the ways start-up was measured with (benchmarks/RESULTS.md, "Start-up").

    python benchmarks/convert_weights.py /work/bigmodels/vgg16.onnx /tmp/startup

writes into the output folder: `single.onnx` (one protobuf, as given), `external.onnx` +
`external.onnx.data` (`onnxviz.model.modelfile.save_model`), `optimized.onnx` (ONNX Runtime's
optimised model, CPU, ORT_ENABLE_ALL, saved through `optimized_model_filepath`, weights as
external data) and `model.ort` (the ORT format, through the same option).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from onnxviz.model.modelfile import save_model  # noqa: E402
from onnxviz.run.session import session_options  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.model, args.out / "single.onnx")
    save_model(onnx.load(str(args.model)), args.out / "external.onnx")
    for name, entries in (("optimized.onnx", {"session.optimized_model_external_initializers_file_name":
                                              "optimized.onnx.data",
                                              "session.optimized_model_external_initializers_min_size_in_bytes": "1024"}),
                          ("model.ort", {"session.save_model_format": "ORT"})):
        options = session_options(long_run=False)
        options.optimized_model_filepath = str(args.out / name)
        for key, value in entries.items():
            options.add_session_config_entry(key, value)
        ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    for p in sorted(args.out.iterdir()):
        print(f"{p.name:24s} {p.stat().st_size / 1e6:9.1f} MB")


if __name__ == "__main__":
    main()
