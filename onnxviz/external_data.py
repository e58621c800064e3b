"""Weights an ONNX file keeps in other files (ONNX external data), checked before loading."""
from __future__ import annotations

from pathlib import Path

from .errors import ModelError


def check_external_data(path: Path) -> None:
    """Refuse, naming the file and the folder searched, an ONNX file whose external data is missing.

    `torch.onnx.export` writes models over 2 GiB, and the dynamo exporter any model when
    asked, as `model.onnx` plus `model.onnx.data`; copying only the first leaves a file
    that cannot be loaded.
    """
    import onnx

    from .protoscan import load_light

    path = Path(path)
    try:
        model = load_light(path)  # the weights stored inline are skipped, the references kept
    except Exception:  # not protobuf at all: onnx.load says so next
        return
    base = path.resolve().parent
    missing: list[str] = []
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if location and location not in missing and not (base / location).is_file():
            missing.append(location)
    if missing:
        names = ", ".join(f"'{m}'" for m in missing)
        raise ModelError(f"'{path}' keeps its weights in {names}, which is not in {base}; copy "
                         f"{'that file' if len(missing) == 1 else 'those files'} next to '{path.name}' "
                         f"(or export the model again without external data)")
