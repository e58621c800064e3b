"""Errors that mean "the user asked for something that cannot be done".

The CLI prints their message on one line and exits 1; any other exception is a bug
and keeps its traceback.
"""
from __future__ import annotations


class OnnxvizError(Exception):
    """Bad input or an unmet requirement, explained in one line."""


class ModelError(OnnxvizError):
    """A model name, file or graph that onnxviz cannot use."""


class LayerSelectionError(OnnxvizError):
    """A layer glob that matches nothing, or a selection that is empty."""


class ImageError(OnnxvizError):
    """An image that cannot be read or is unusable."""


class ProviderError(OnnxvizError):
    """An execution provider that was asked for by name and cannot run."""


class ValidationError(OnnxvizError):
    """An exported model whose outputs differ from the source framework."""


class OutputError(OnnxvizError):
    """A destination that cannot be written."""
