"""render/options: what render can be asked for, checked before any work starts."""
from __future__ import annotations

import pytest

from onnxviz.cli import flag_of
from onnxviz.errors import LayerSelectionError, OptionError
from onnxviz.model.info import LayerInfo
from onnxviz.render.options import RenderOptions, check_channels, parse_channels


def test_channels_are_parsed_as_half_open_ranges():
    assert parse_channels("2:5") == (2, 5) and parse_channels(":4") == (0, 4) and parse_channels("3:") == (3, 1 << 30)
    assert parse_channels("") is None
    with pytest.raises(OptionError) as err:
        parse_channels("5:5")
    assert err.value.spoken(flag_of) == "--channels 5:5 is empty; B must be larger than A"


def test_layers_without_a_fixed_shape_and_channels_that_select_nothing_name_their_parameters():
    dynamic = LayerInfo("head", "Conv", [None, 4, None, 20], "NCHW")
    with pytest.raises(LayerSelectionError) as err:
        check_channels([dynamic], RenderOptions())
    assert str(err.value) == ("layer 'head' has no fixed [C, H, W] shape ([None, 4, None, 20]); export the model "
                              "again with a fixed input_size")
    assert err.value.spoken(flag_of).endswith("export the model again with a fixed --input-size")
    conv = LayerInfo("c{1}", "Conv", [None, 4, 8, 8], "NCHW")
    with pytest.raises(OptionError) as err:
        check_channels([conv], RenderOptions(channels=(6, 9)))
    assert err.value.spoken(flag_of) == ("--channels 6:9 selects nothing in layer 'c{1}', which has 4 channels; "
                                         "choose A below 4 or pick layers with --layers")
    check_channels([conv], RenderOptions(channels=(3, 9)))  # some channel: fine
    check_channels([LayerInfo("v", "Dense", [None, 10, 1, 1], "NCHW")], RenderOptions(channels=(20, 30)))  # a vector
