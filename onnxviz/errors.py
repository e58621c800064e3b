"""Errors that mean "the user asked for something that cannot be done".

The CLI prints their message on one line and exits 1; any other exception is a bug
and keeps its traceback.
"""
from __future__ import annotations


class OnnxvizError(Exception):
    """Bad input or an unmet requirement, explained in one line.

    A message that names arguments writes them as `{name}` fields and lists them in
    `params`: the library says `max_channels`, the command line `--max-channels`
    (`spoken(flag_of)`), so each speaks the language its user typed.
    """

    def __init__(self, message: str, *, params: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.template = message
        self.params = tuple(params)

    def spoken(self, name_of=lambda param: param) -> str:
        # Each `{param}` replaced, and nothing else: a value quoted in the message may hold braces.
        text = self.template
        for param in self.params:
            text = text.replace("{" + param + "}", name_of(param))
        return text

    def __str__(self) -> str:
        return self.spoken()


class ModelError(OnnxvizError):
    """A model name, file or graph that onnxviz cannot use."""


class NotOnnxvizFile(ModelError):
    """An ONNX file without onnxviz's metadata: readable, but not written by `onnxviz export`."""


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


class OptionError(OnnxvizError):
    """An option with a bad value, or one that does not apply to what it was given with."""
