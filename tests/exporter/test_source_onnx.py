"""onnxviz.exporter.sources.onnx through the export pipeline: tiny graphs built inline, checked tensor by tensor against
onnx.reference.ReferenceEvaluator on the source (preprocessing applied in numpy) and
ORT CPU on the exported file; SqueezeNet 1.1 from the shared data for real behaviour."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxviz import __version__
from onnxviz.errors import LayerSelectionError, ModelError, OnnxvizError
from onnxviz.model.info import read_info
from onnxviz.model.modelfile import data_path
from onnxviz.api import export as export_onnx
from onnxviz.model.labels import read_labels
from onnxviz.exporter.sources.onnx import inspect_onnx, make_preprocessing

# 15, not 13: onnx's ReferenceEvaluator runs BatchNormalization-9 (opsets 9-13) with batch statistics
OPSET = 15
DATA = Path(os.environ.get("ONNXVIZ_TEST_DATA", Path(__file__).resolve().parents[2] / ".." / "shared" / "data"))
SQUEEZENET = DATA / "onnx" / "squeezenet1.1.onnx"
SQUEEZENET_LABELS = DATA / "onnx" / "squeezenet1.1_labels.txt"


# ---------------------------------------------------------------- tiny models

class Builder:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []

    def const(self, name, shape, scale=0.5):
        self.inits.append(numpy_helper.from_array((self.rng.normal(size=shape) * scale).astype(np.float32), name))
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op.lower()}_{output}", **attrs))
        return output

    def conv(self, x, name, cin, cout, k=3):
        w = self.const(f"{name}_w", (cout, cin, k, k))
        b = self.const(f"{name}_b", (cout,))
        return self.node("Conv", [x, w, b], name, pads=[k // 2] * 4)

    def model(self, inputs, outputs, opset=OPSET):
        graph = helper.make_graph(self.nodes, "tiny", inputs, outputs, initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
        onnx.checker.check_model(model, full_check=True)
        return model


def cnn_nchw(input_shape=(1, 3, 16, 16), classes=5, softmax=True) -> onnx.ModelProto:
    """Conv+BN+Relu, MaxPool, two branches (Conv+Relu, Conv+Clip) into Concat, a residual Add
    with LeakyRelu, Conv+swish, GlobalAveragePool, Flatten, Gemm, Softmax."""
    b = Builder()
    x = "image"
    c1 = b.conv(x, "c1", 3, 8)
    bn = b.node("BatchNormalization", [c1, b.const("g", (8,)), b.const("be", (8,)), b.const("mu", (8,)),
                                        "var"], "bn1")
    b.inits.append(numpy_helper.from_array(np.abs(b.rng.normal(size=8)).astype(np.float32) + 0.5, "var"))
    r1 = b.node("Relu", [bn], "r1")
    p1 = b.node("MaxPool", [r1], "p1", kernel_shape=[2, 2], strides=[2, 2])
    ra = b.node("Relu", [b.conv(p1, "ca", 8, 4, k=1)], "ra")
    b.inits += [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    rb = b.node("Clip", [b.conv(p1, "cb", 8, 4), "lo", "hi"], "rb")
    cat = b.node("Concat", [ra, rb], "cat", axis=1)
    s = b.node("Add", [cat, p1], "sum")
    lr = b.node("LeakyRelu", [s], "lr", alpha=0.1)
    c3 = b.conv(lr, "c3", 8, 6)
    sg = b.node("Sigmoid", [c3], "sig")
    sw = b.node("Mul", [c3, sg], "swish")
    gap = b.node("GlobalAveragePool", [sw], "gap")
    fl = b.node("Flatten", [gap], "flat")
    logits = b.node("Gemm", [fl, b.const("fc_w", (classes, 6)), b.const("fc_b", (classes,))], "logits", transB=1)
    out = b.node("Softmax", [logits], "prob") if softmax else logits
    return b.model([helper.make_tensor_value_info(x, TensorProto.FLOAT, list(input_shape))],
                   [helper.make_tensor_value_info(out, TensorProto.FLOAT, [None, None])])


DEFAULT_NCHW = ["r1", "p1", "ra", "rb", "cat", "lr", "swish", "prob"]


def cnn_nhwc() -> onnx.ModelProto:
    """An NHWC input as TensorFlow converters leave it: Transposes around NCHW ops, an NHWC bias
    Add, and a Conv whose Relu runs after a Transpose to NHWC."""
    b = Builder(1)
    xt = b.node("Transpose", ["input_1"], "x_nchw", perm=[0, 3, 1, 2])
    r1 = b.node("Relu", [b.conv(xt, "c1", 3, 4)], "r1")
    h = b.node("Transpose", [r1], "r1_nhwc", perm=[0, 2, 3, 1])
    a = b.node("Add", [h, b.const("bias", (4,))], "biased")  # NHWC feature map
    a2 = b.node("Transpose", [a], "biased_nchw", perm=[0, 3, 1, 2])
    p = b.node("MaxPool", [a2], "pool", kernel_shape=[2, 2], strides=[2, 2])
    t2 = b.node("Transpose", [b.conv(p, "c2", 4, 5)], "c2_nhwc", perm=[0, 2, 3, 1])
    r2 = b.node("Relu", [t2], "r2")  # NHWC
    r2n = b.node("Transpose", [r2], "r2_nchw", perm=[0, 3, 1, 2])
    fl = b.node("Flatten", [b.node("GlobalAveragePool", [r2n], "gap")], "flat")
    logits = b.node("Gemm", [fl, b.const("fc_w", (3, 5)), b.const("fc_b", (3,))], "logits", transB=1)
    return b.model([helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["batch", 12, 12, 3])],
                   [helper.make_tensor_value_info(logits, TensorProto.FLOAT, [None, None])])


def exposed(result) -> list[str]:
    return [layer.name for layer in result.info.layers]


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def numpy_prep(rgb, prep, layout):
    x = rgb[..., ::-1] if prep.bgr else rgb
    x = (x * np.float32(prep.scale) - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if layout == "NCHW" else x, dtype=np.float32)


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def assert_matches_reference(src: onnx.ModelProto, result, nhwc: set[str] = frozenset(), batch: int = 1,
                             expected=None):
    """Every output of the exported file (ORT) equals the source's tensor (ReferenceEvaluator);
    `expected(ref)` may replace tensors the reference gets wrong."""
    info = result.info
    h, w = info.height, info.width
    rgb = np.random.default_rng(3).uniform(0, 255, (batch, h, w, 3)).astype(np.float32)
    feeds = {info.input_name: numpy_prep(rgb, info.preprocessing, result.input_layout)}
    with np.errstate(over="ignore", invalid="ignore"):  # the reference's Sigmoid computes both branches
        ref = ReferenceEvaluator(src).run(None, feeds, intermediate=True)
    if expected is not None:
        ref.update(expected(ref))
    sess = session(result.path)
    names = [o.name for o in sess.get_outputs()]
    assert names == [layer.name for layer in info.layers] == exposed(result)
    got = dict(zip(names, sess.run(None, {info.input_name: rgb})))
    for layer in info.layers:
        want = ref[layer.name]
        if layer.name in nhwc:
            want = want.transpose(0, 3, 1, 2)
        if layer.layout == "NC":
            want = want.reshape(want.shape[0], -1)
        assert got[layer.name].shape == want.shape, layer.name
        assert [None, *got[layer.name].shape[1:]] == layer.shape, layer.name
        tol = 1e-4 * max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got[layer.name], want, rtol=1e-4, atol=tol, err_msg=layer.name)


# ---------------------------------------------------------------- exports of tiny models

def test_default_export_shows_maps_after_their_activation_and_matches_the_reference(tmp_path):
    src = cnn_nchw()
    result = export_onnx(save(src, tmp_path / "cnn.onnx"), tmp_path / "out.onnx",
                         scale="1/255", mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3], bgr=True)
    info = result.info
    assert exposed(result) == DEFAULT_NCHW
    assert result.input_layout == "NCHW" and any("inferred" in note for note in result.notes)
    assert [(layer.op, layer.layout) for layer in info.layers] == [
        ("Relu", "NCHW"), ("MaxPool", "NCHW"), ("Relu", "NCHW"), ("Clip", "NCHW"), ("Concat", "NCHW"),
        ("LeakyRelu", "NCHW"), ("Mul", "NCHW"), ("Softmax", "NC")]
    assert info.layer("p1").shape == [None, 8, 8, 8] and info.layer("prob").shape == [None, 5]
    assert (info.prediction_output, info.prediction_is_probability) == ("prob", True)
    assert info.source == "cnn.onnx" and info.version == __version__ and info.keras is None
    assert (info.height, info.width, info.input_name) == (16, 16, "image")
    assert info.preprocessing.mode == "custom" and info.preprocessing.scale == pytest.approx(1 / 255)
    assert result.max_relative < 1e-4
    assert result.size_bytes == result.path.stat().st_size and not data_path(result.path).exists()  # small: one file
    written = onnx.load(str(result.path))
    onnx.checker.check_model(written, full_check=True)
    assert read_info(written) == info
    dims = written.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 16, 16, 3]
    assert_matches_reference(src, result)


def test_nhwc_maps_are_transposed_to_nchw_and_predictions_without_softmax_are_scores(tmp_path):
    src = cnn_nhwc()
    result = export_onnx(save(src, tmp_path / "nhwc.onnx"), tmp_path / "out.onnx", mean=127.5, std=127.5)
    assert result.input_layout == "NHWC" and any("inferred" in note for note in result.notes)
    assert exposed(result) == ["r1", "biased", "pool", "r2", "logits"]
    assert result.info.layer("biased").shape == [None, 4, 12, 12]  # NHWC in the source, NCHW here
    assert result.info.layer("r2").shape == [None, 5, 6, 6]
    assert (result.info.prediction_output, result.info.prediction_is_probability) == ("logits", False)
    assert_matches_reference(src, result, nhwc={"biased", "r2"}, batch=2)
    layers = {layer.name: layer for layer in inspect_onnx(tmp_path / "nhwc.onnx").layers}
    assert [layers[n].layout for n in ["r1", "r1_nhwc", "biased", "pool", "c2", "r2"]] == [
        "NCHW", "NHWC", "NHWC", "NCHW", "NCHW", "NHWC"]
    assert not layers["c2"].default and not layers["c2_nhwc"].default


def test_final_4d_class_scores_are_flattened_and_1x1_maps_left_out(tmp_path):
    b = Builder()
    r = b.node("Relu", [b.conv("x", "c", 3, 7)], "r")
    out = b.node("Softmax", [b.node("GlobalAveragePool", [r], "gap")], "scores", axis=1)
    src = b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, 7, 1, 1])])
    result = export_onnx(save(src, tmp_path / "m.onnx"), tmp_path / "out.onnx")
    assert exposed(result) == ["r", "scores"]
    assert result.info.layer("scores").shape == [None, 7] and result.info.layer("scores").layout == "NC"
    assert result.info.prediction_is_probability and result.info.preprocessing.mode == "none"
    assert_matches_reference(src, result, batch=3)


def test_dynamic_spatial_dims_are_fixed_by_input_size(tmp_path):
    src = cnn_nchw(input_shape=("batch", 3, "height", "width"))
    path = save(src, tmp_path / "dyn.onnx")
    with pytest.raises(OnnxvizError, match=r"input 'image' of .*dyn.onnx has a dynamic height or width "
                                           r"\(\[batch, 3, height, width\]\); give input_size"):
        export_onnx(path, tmp_path / "out.onnx")
    result = export_onnx(path, tmp_path / "out.onnx", input_size=(24, 32), layout="nchw")
    assert (result.info.height, result.info.width) == (24, 32) and not result.notes
    assert result.info.layer("r1").shape == [None, 8, 24, 32] and result.info.layer("swish").shape == [None, 6, 12, 16]
    assert_matches_reference(src, result)
    assert inspect_onnx(path).layers[0].shape == [None, 8, None, None]


def test_layers_exclude_and_op_types_select_by_tensor_or_node_name(tmp_path):
    src = cnn_nchw()
    path = save(src, tmp_path / "cnn.onnx")
    out = tmp_path / "out.onnx"
    result = export_onnx(path, out, layers=["c?", "cat"], exclude=["c3"])  # pre-activation maps too
    assert exposed(result) == ["c1", "ca", "cb", "cat", "prob"]
    assert exposed(export_onnx(path, out, layers=["conv_c3"])) == ["c3", "prob"]  # node name
    result = export_onnx(path, out, op_types=["Conv,MaxPool"])
    assert exposed(result) == ["c1", "p1", "ca", "cb", "c3", "prob"]
    assert [layer.op for layer in result.info.layers] == ["Conv", "MaxPool", "Conv", "Conv", "Conv", "Softmax"]
    assert_matches_reference(src, result)
    result = export_onnx(path, out, layers=["flat", "gap"])  # a vector and a 1x1 map, by request
    assert [(layer.name, layer.layout, layer.shape) for layer in result.info.layers] == [
        ("gap", "NCHW", [None, 6, 1, 1]), ("flat", "NC", [None, 6]), ("prob", "NC", [None, 5])]


def test_a_glob_that_matches_nothing_names_what_exists(tmp_path):
    path = save(cnn_nchw(), tmp_path / "cnn.onnx")
    with pytest.raises(LayerSelectionError, match=r"layers 'block\*' matches no layer of .*cnn.onnx; "
                                                  r"it has \d+: c1, bn1, r1, p1, .*"
                                                  r"Run 'onnxviz layers .*cnn.onnx' to see them all"):
        export_onnx(path, tmp_path / "out.onnx", layers=["block*"])
    with pytest.raises(LayerSelectionError, match="exclude 'nope' matches no layer"):
        export_onnx(path, tmp_path / "out.onnx", exclude=["nope"])
    with pytest.raises(OnnxvizError, match=r"op_types Foo: no such op in .*; it has Add, BatchNormalization, Clip"):
        export_onnx(path, tmp_path / "out.onnx", op_types=["Relu", "Foo"])
    with pytest.raises(LayerSelectionError, match="leaves no layer"):
        export_onnx(path, tmp_path / "out.onnx", layers=["r1"], exclude=["r*"])


def test_labels_are_read_in_both_formats_and_counted(tmp_path):
    path = save(cnn_nchw(), tmp_path / "cnn.onnx")
    (tmp_path / "names.txt").write_text("a\nb, with comma\nc\nd\ne\n")
    (tmp_path / "indexed.txt").write_text("1,b\n0,a\n2,c\n3,d\n4,e\n\n")
    assert read_labels(tmp_path / "names.txt")[1] == "b, with comma"
    assert read_labels(tmp_path / "indexed.txt") == list("abcde")
    result = export_onnx(path, tmp_path / "out.onnx", labels=tmp_path / "indexed.txt")
    assert read_info(onnx.load(str(result.path))).labels == list("abcde")
    (tmp_path / "three.txt").write_text("x\ny\nz\n")
    with pytest.raises(ModelError, match=r"3 labels given for a model with 5 classes \(output 'prob'\); give 5 names"):
        export_onnx(path, tmp_path / "out.onnx", labels=tmp_path / "three.txt")
    (tmp_path / "gap.txt").write_text("0,a\n2,c\n")
    with pytest.raises(ModelError, match="no index 1; indices must run 0..1"):
        read_labels(tmp_path / "gap.txt")


# ---------------------------------------------------------------- bad input

def test_a_file_that_is_not_onnx(tmp_path):
    (tmp_path / "notes.onnx").write_text("hello, this is not a model\n" * 3)
    with pytest.raises(ModelError, match=r"'.*notes.onnx' is not an ONNX model: it does not parse as one"):
        export_onnx(tmp_path / "notes.onnx", tmp_path / "out.onnx")
    with pytest.raises(ModelError, match="does not exist"):
        export_onnx(tmp_path / "missing.onnx", tmp_path / "out.onnx")


def test_a_model_that_fails_the_checker(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["undefined"], ["y"])], "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(ModelError) as err:
        export_onnx(save(model, tmp_path / "bad.onnx"), tmp_path / "out.onnx")
    assert "bad.onnx fails the ONNX checker: " in str(err.value) and "undefined" in str(err.value)
    assert "re-export it" in str(err.value) and "\n" not in str(err.value)


def test_a_model_without_4d_feature_maps(tmp_path):
    b = Builder()
    fl = b.node("Flatten", ["x"], "flat")
    b.node("Gemm", [fl, b.const("w", (5, 48)), b.const("b", (5,))], "logits", transB=1)
    model = b.model([helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])])
    with pytest.raises(ModelError, match="mlp.onnx has no 4-D feature maps"):
        export_onnx(save(model, tmp_path / "mlp.onnx"), tmp_path / "out.onnx")


@pytest.mark.parametrize("shape,elem,layout,message", [
    ([1, 3, 8, 3], TensorProto.FLOAT, None, r"cannot tell whether input 'x' \[1, 3, 8, 3\] .* give layout nchw or nhwc"),
    ([1, 4, 8, 8], TensorProto.FLOAT, None, r"is \[1, 4, 8, 8\]: 4 channels; onnxviz feeds RGB images to 3-channel "
                                            r"inputs and their gray conversion to 1-channel inputs, not 4 channels$"),
    ([1, 2, "h", "w"], TensorProto.FLOAT, None, r"is \[1, 2, h, w\]: 2 channels;"),
    (["n", "h", "w", 4], TensorProto.FLOAT, None, r"is \[n, h, w, 4\]: 4 channels;"),
    ([1, 3, 8, 8], TensorProto.FLOAT16, None, r"input 'x' of .* is float16\[1, 3, 8, 8\]; onnxviz needs a float32"),
    ([1, 3, 8, 8], TensorProto.FLOAT, "nhwc", r"in NHWC layout that is 8 channels"),
    ([1, 3, 8, 8], TensorProto.FLOAT, "chw", r"layout 'chw' is not one of nchw, nhwc"),
])
def test_inputs_onnxviz_cannot_feed(tmp_path, shape, elem, layout, message):
    node = helper.make_node("Relu", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", elem, shape)],
                              [helper.make_tensor_value_info("y", elem, shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    with pytest.raises(OnnxvizError, match=message):
        export_onnx(save(model, tmp_path / "m.onnx"), tmp_path / "out.onnx", layout=layout)


def test_failures_leave_an_existing_output_alone(tmp_path, monkeypatch):
    path = save(cnn_nchw(), tmp_path / "cnn.onnx")
    out = tmp_path / "out.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(OnnxvizError, match=r"^tolerance must be positive, got -1$"):
        export_onnx(path, out, tolerance=-1.0)
    with pytest.raises(LayerSelectionError):
        export_onnx(path, out, layers=["nothing"])
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx", "out.onnx"]


def test_make_preprocessing_reads_the_options():
    assert make_preprocessing().mode == "none"
    prep = make_preprocessing(scale="1/255", mean=[0.1], std=0.5, bgr=True)
    assert (prep.mode, prep.scale, prep.mean, prep.std, prep.bgr) == ("custom", 1 / 255, [0.1] * 3, [0.5] * 3, True)
    with pytest.raises(OnnxvizError, match="mean takes 1 or 3 numbers"):
        make_preprocessing(mean=[1, 2])
    with pytest.raises(OnnxvizError, match="every std must be non-zero"):
        make_preprocessing(std=[1, 0, 1])


# ---------------------------------------------------------------- real data

@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory):
    if not SQUEEZENET.is_file():
        pytest.skip(f"SqueezeNet test data not found at {SQUEEZENET} (set ONNXVIZ_TEST_DATA to the shared data folder)")
    out = tmp_path_factory.mktemp("squeezenet") / "squeezenet.onnx"
    return export_onnx(SQUEEZENET, out, bgr=True, labels=SQUEEZENET_LABELS)


def test_squeezenet_says_espresso_for_the_coffee_photo(squeezenet):
    cv2 = pytest.importorskip("cv2")
    image = cv2.imread(str(DATA / "images" / "coffee.png"))
    if image is None:
        pytest.skip(f"{DATA / 'images' / 'coffee.png'} not found")
    rgb = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), (224, 224)).astype(np.float32)[None]
    info = squeezenet.info
    scores = dict(zip([o.name for o in session(squeezenet.path).get_outputs()],
                      session(squeezenet.path).run(None, {info.input_name: rgb})))[info.prediction_output]
    assert scores.shape == (1, 1000) and info.prediction_is_probability
    assert info.labels[int(scores.argmax())] == "espresso"


def test_squeezenet_maps_equal_the_source_intermediates(squeezenet):
    info = squeezenet.info
    assert len(info.feature_maps) == 37 and info.layers[0].name == "conv1_2" and info.layers[-1].name == "softmaxout_1"
    assert info.layer("fire9/concat_1").shape == [None, 512, 13, 13]
    assert (info.preprocessing.bgr, squeezenet.input_layout, info.source) == (True, "NCHW", SQUEEZENET.name)  # no folders of the exporting machine

    def softmax(ref):  # the reference's Softmax-1 works on the last axis of [1, 1000, 1, 1], not on 1000
        logits = ref["pool10_1"].reshape(1, -1).astype(np.float64)
        e = np.exp(logits - logits.max())
        return {"softmaxout_1": (e / e.sum()).astype(np.float32)}

    assert_matches_reference(onnx.load(str(SQUEEZENET)), squeezenet, expected=softmax)
