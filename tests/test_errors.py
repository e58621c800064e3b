"""The `{param}` mechanism of OnnxvizError: the library names parameters, the CLI its flags."""
from __future__ import annotations

from onnxviz.errors import OnnxvizError, OptionError


def test_params_are_spoken_as_parameters_or_flags():
    err = OptionError("{batch_size} must be at least 1, got 0", params=("batch_size",))
    assert str(err) == "batch_size must be at least 1, got 0"
    assert err.spoken(lambda p: "--" + p.replace("_", "-")) == "--batch-size must be at least 1, got 0"


def test_braces_in_a_quoted_value_are_kept():
    """A user's value is quoted into the template as it is: braces in it are text, not fields."""
    err = OptionError("{score} '{a}' is not valid; choose one of max, mean (see {x} and }{)", params=("score",))
    assert str(err) == "score '{a}' is not valid; choose one of max, mean (see {x} and }{)"
    assert err.spoken(lambda p: "--" + p) == "--score '{a}' is not valid; choose one of max, mean (see {x} and }{)"
    assert str(OnnxvizError("layer '{b}' has no map")) == "layer '{b}' has no map"
