"""The error of a classifier head that Grad-CAM cannot go through (no onnx import: render's parts
and the API's checks raise and catch it without loading the graph tools)."""
from __future__ import annotations

from onnxviz.errors import ModelError


class HeadError(ModelError):
    """The ops between a layer and the class logits include one whose gradient onnxviz does not write."""

    def __init__(self, message: str, op: str = "", *, unrelated: bool = False) -> None:
        super().__init__(message)
        self.op = op
        self.unrelated = unrelated  # the logits do not depend on the layer at all
