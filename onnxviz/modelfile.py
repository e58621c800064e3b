"""Model files on disk: the one place that says why a file cannot be used as an ONNX model."""
from __future__ import annotations

from pathlib import Path

from .errors import ModelError
from .files import existing_file


def unreadable(path: Path, detail: str = "") -> ModelError:
    """The error for a model file that failed to load, the same whichever command read it.

    It looks again at the file to name the cause: missing, a folder, not an ONNX protobuf
    (truncated, or another kind of file), or its external weights file missing; `detail`
    (the loader's own words) is used only when the file itself looks sound.
    """
    import onnx

    path = Path(path)
    existing_file(path, "model file")  # raises for a missing file or a folder
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf's DecodeError and friends
        model = None
    if model is None or not model.graph.node or not model.opset_import:
        return ModelError(f"'{path}' is not an ONNX model: it does not parse as one (a truncated file, or another "
                          f"kind of file); give a .onnx file written by an ONNX exporter or 'onnxviz export'")
    for location in external_files(model):
        if not (path.parent / location).is_file():
            return ModelError(f"'{path}' keeps its weights in '{location}', which is missing (looked for "
                              f"'{path.parent / location}'); copy that file beside the model")
    return ModelError(f"'{path}' is an ONNX model that cannot be opened: {detail or 'unknown reason'}")


def external_files(model) -> list[str]:
    """The external data files a model's initializers point to (relative paths)."""
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    found = []
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), None)
            if location and location not in found:
                found.append(location)
    return found
