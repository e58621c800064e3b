from __future__ import annotations

import numpy as np
import pytest

from onnxviz.render import store
from onnxviz.picture.encoding import encode_png
from report_folder import decode_layer_css


def test_names_are_zero_padded_with_inclusive_ranges():
    assert store.index_width(18) == 3 and store.index_width(1001) == 4
    assert store.layer_stem(3, 3, "block1/conv 1") == "003.block1_conv_1"
    assert store.channel_span(list(range(64)), 64, "index") == "ch000-063"
    assert store.channel_span([2, 3, 4], 2048, "index") == "ch0002-0004"
    assert store.channel_span([5, 1, 9], 64, "max") == "top3-by-max"


def test_layer_css_round_trips_the_exact_pixels():
    image = np.random.default_rng(0).integers(0, 256, (30, 50), dtype=np.uint8)
    text = store.layer_css(7, encode_png(image))
    assert text.startswith(b'.m7 b{background-image:url("data:image/png;base64,iVBORw0KGgo')  # the PNG signature
    assert list(decode_layer_css(text)) == [7]
    assert np.array_equal(decode_layer_css(text)[7], image)
    with pytest.raises(ValueError, match="not an onnxviz maps stylesheet"):
        decode_layer_css(text + b"body{color:red}\n")


def test_consecutive_layers_share_a_stylesheet_up_to_the_limit(monkeypatch):
    monkeypatch.setattr(store, "CHUNK_BYTES", 100)
    pngs = [b"x" * n for n in (60, 50, 10, 10)]  # the file is full after the second layer
    entries = [store.Layer(i, f"l{i}", "Conv", [1, 1, 1], "map", None, None) for i in (3, 4, 7, 8)]
    chunks = store.chunk_maps(list(zip(entries, pngs)), 3)
    assert [c.file for c in chunks] == ["maps/003-004.css", "maps/007-008.css"]
    assert [e.data for e in entries] == ["maps/003-004.css"] * 2 + ["maps/007-008.css"] * 2
    assert chunks[0].css == store.layer_css(3, pngs[0]) + store.layer_css(4, pngs[1])
    assert store.chunk_maps([], 3) == []
    monkeypatch.setattr(store, "CHUNK_BYTES", 10)  # every layer fills a file
    assert [c.file for c in store.chunk_maps(list(zip(entries, pngs)), 3)] == [
        "maps/003-003.css", "maps/004-004.css", "maps/007-007.css", "maps/008-008.css"]


def test_rounded_keeps_significant_digits_and_turns_nonfinite_into_null():
    assert store.rounded([1.23456789, float("nan"), -2e-7, 0.0, float("inf")]) == [1.235, None, -2e-07, 0.0, None]
    assert store.rounded([1e-320, -3.3e300, 123456.7, 0.00012344999]) == [1e-320, -3.3e300, 123500.0, 0.0001234]
    exact = np.float32([0.1, 3.14159274, -1234.5678])
    assert np.array_equal(np.float32(store.rounded(exact, store.EXACT_DIGITS)), exact)  # float32 round-trips


def test_layer_dicts_hold_only_their_kind_s_fields():
    stats = store.Stats(0.0, 1.0, 0.5, 0.1, 0)
    vector = store.Layer(1, "gap", "GlobalAveragePooling2D", [8, 1, 1], "vector", stats,
                         store.ChannelStats([0.0] * 8, [1.0] * 8, [0.5] * 8), values=[0.5] * 8)
    d = vector.to_dict()
    assert d["values"] == [0.5] * 8 and "data" not in d and "channels" not in d
    m = store.Layer(0, "c", "Conv2D", [4, 5, 5], "map", stats, None, channels=[0], tile=[5, 5], columns=1,
                    low=[0.0], high=[1.0], data="maps/000-000.css").to_dict()
    assert m["grid"] is None and "values" not in m and m["data"] == "maps/000-000.css"


def test_an_image_folder_is_written_hidden_and_a_failed_one_leaves_the_earlier_render(tmp_path):
    from onnxviz.files import staged

    keep, final = tmp_path / "keep.txt", tmp_path / "img"
    keep.write_text("mine")
    final.mkdir()
    (final / "input.png").write_bytes(b"earlier render")
    with pytest.raises(RuntimeError):
        with staged(final, folder=True) as part:
            writer = store.ImageWriter(part)
            writer.write("maps/001-001.css", b"x")
            raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "keep.txt"]
    assert [p.name for p in final.iterdir()] == ["input.png"] and (final / "input.png").read_bytes() == b"earlier render"
    with staged(final, folder=True) as part:
        writer = store.ImageWriter(part)
        writer.write("maps/001-001.css", b"x")
        writer.write("input.png", b"yz")
        assert not (final / "maps").exists()  # hidden until complete
    assert (writer.bytes, len(writer.written)) == (3, 2)
    assert sorted(str(p.relative_to(final)) for p in final.rglob("*")) == ["input.png", "maps", "maps/001-001.css"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "keep.txt"]


def test_stage_times_add_up_and_are_written_in_milliseconds_under_their_summary_names():
    batch = store.StageTimes(drawing=0.3, encoding=0.2, writing=0.1)
    image = store.StageTimes(read=0.004, inference=0.0125)
    image.add(batch, 1 / 2)
    image.add(store.StageTimes(writing=0.01))
    assert image.milliseconds() == {"read": 4.0, "inference": 12.5, "drawing": 150.0, "encoding": 100.0,
                                    "writing": 60.0}


def test_run_index_lists_each_images_best_class_by_name_and_score():
    from onnxviz.model.labels import Prediction

    run = store.Run("m.onnx", "src", [store.RunLayer(0, "conv", [6, 8, 8], "map")],
                    [store.RunImage("cat", "cat.png", Prediction("tabby", 0.75, 281)),
                     store.RunImage("x", "x.png", None)])
    assert run.to_dict()["images"] == [{"folder": "cat", "image_name": "cat.png", "top1": {"label": "tabby", "score": 0.75},
                                        "group": ""}, {"folder": "x", "image_name": "x.png", "top1": None, "group": ""}]
