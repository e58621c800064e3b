"""The command line: one-line errors with exit code 1, nothing on disk lost or half written."""
from __future__ import annotations

import cv2
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from conftest import needs_tensorflow
from onnxviz.cli import app
from tiny_models import tiny_model

runner = CliRunner()


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) >= 1 and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[-1]


def test_unknown_model_name_lists_the_valid_ones(tmp_path):
    line = one_error_line(runner.invoke(app, ["export", "vgg17", "-o", str(tmp_path / "x.onnx")]))
    assert line.startswith("error: unknown model 'vgg17': did you mean 'vgg19' or 'vgg16'? give a .keras/.h5/.onnx "
                           "file or one of ")
    for name in ("vgg16", "inceptionv3", "resnet101v2", "mobilenet", "efficientnetb0", "convnexttiny", "densenet121"):
        assert name in line


def test_missing_model_file(tmp_path):
    line = one_error_line(runner.invoke(app, ["export", str(tmp_path / "mine.keras")]))
    assert line == f"error: model file '{tmp_path / 'mine.keras'}' does not exist; check the path"


@needs_tensorflow
def test_a_file_that_is_not_a_keras_model(tmp_path):
    bad = tmp_path / "notes.h5"
    bad.write_text("not hdf5")
    line = one_error_line(runner.invoke(app, ["export", str(bad), "-o", str(tmp_path / "o.onnx")]))
    assert line == (f"error: '{bad}' is not an HDF5 file (it does not start with HDF5's signature), so not a Keras "
                    f".h5 model; check that it is the file you meant (a failed download saves a web page under the "
                    f"model's name)")
    assert "tf_keras" not in line
    assert not (tmp_path / "o.onnx").exists()


def test_bad_preprocess_and_weights_values(tmp_path):
    src = tmp_path / "m.keras"
    src.write_bytes(b"x")
    line = one_error_line(runner.invoke(app, ["export", str(src), "--preprocess", "imagenet"]))
    assert line == "error: --preprocess 'imagenet' is not valid; choose one of caffe, tf, torch, none"
    line = one_error_line(runner.invoke(app, ["export", "vgg16", "--weights", str(tmp_path / "w.h5"), "-o", str(tmp_path / "v.onnx")]))
    assert line.startswith(f"error: --weights file '{tmp_path / 'w.h5'}' does not exist")


def test_unwritable_output_path_fails_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    line = one_error_line(runner.invoke(app, ["export", "vgg16", "-o", str(tmp_path / "file" / "v.onnx")]))
    assert line.startswith(f"error: cannot write '{tmp_path / 'file' / 'v.onnx'}': '{tmp_path / 'file'}' is a file")


@needs_tensorflow
def test_a_failed_export_leaves_the_existing_file_untouched(tmp_path):
    import keras

    from tiny_models import tiny_functional

    src = tmp_path / "tiny.keras"
    tiny_functional(keras).save(src)
    target = tmp_path / "tiny.onnx"
    target.write_bytes(b"an earlier export")
    line = one_error_line(runner.invoke(app, ["export", str(src), "-o", str(target), "--layers", "nope*"]))
    assert line.startswith("error: --layers 'nope*' matches no layer of the model; it has 11: stem_conv, stem_bn")
    assert target.read_bytes() == b"an earlier export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.keras", "tiny.onnx"]
    result = runner.invoke(app, ["export", str(src), "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert onnx.load(str(target)).graph.output[0].name == "stem_conv"


def test_layers_lists_network_order_and_json(tmp_path):
    import json

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    result = runner.invoke(app, ["layers", str(path)])
    assert result.exit_code == 0
    assert [line.split()[1] for line in result.stdout.splitlines()[1:]] == ["conv", "relu", "pool", "predictions"]
    data = json.loads(runner.invoke(app, ["layers", str(path), "--json"]).stdout)
    assert data["layers"][2] == {"index": 2, "name": "pool", "class": "MaxPooling2D", "op": "MaxPooling2D",
                                 "shape": [None, 6, 8, 8], "channels": 6, "layout": "NCHW", "folded": []}


def test_layers_of_a_plain_onnx_file_and_of_a_damaged_onnxviz_file(tmp_path):
    """A file without onnxviz metadata is inspected as export would see it; an onnxviz file whose
    metadata is damaged is an error, not mistaken for a plain ONNX file."""
    from tiny_models import tiny_onnx

    plain = tmp_path / "plain.onnx"
    tiny_onnx(plain)
    result = runner.invoke(app, ["layers", str(plain)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].endswith(f"feature maps that 'onnxviz export {plain}' can expose")
    model = tiny_model()
    for prop in model.metadata_props:
        if prop.key == "onnxviz.input":
            prop.value = "{broken"
    damaged = tmp_path / "damaged.onnx"
    onnx.save(model, damaged)
    assert "has damaged onnxviz metadata" in one_error_line(runner.invoke(app, ["layers", str(damaged)]))


def test_filters_command_draws_the_first_convolution(tmp_path):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    result = runner.invoke(app, ["filters", str(path), "-o", str(tmp_path / "f.png")])
    assert result.exit_code == 0, result.output
    assert "6 filters of 3x3x3 of 'conv'" in result.stdout
    img = cv2.imread(str(tmp_path / "f.png"))
    assert img.shape[0] >= 48 and img.shape[2] == 3


def test_filters_of_a_model_without_convolutions(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
    path = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    line = one_error_line(runner.invoke(app, ["filters", str(path), "-o", str(tmp_path / "f.jpg")]))
    assert line == f"error: '{path}' has no 2-D convolution reachable from its input; there are no filters to draw"
    assert not (tmp_path / "f.jpg").exists()


@pytest.mark.parametrize("argv, message", [
    (["export", "MODEL", "--mean", "a,b,c"], "error: --mean takes numbers separated by commas"),
    (["export", "MODEL", "--std", "1,2"], "error: --std takes 1 or 3 numbers, got 2"),
    (["export", "MODEL", "--scale", "abc"], "error: --scale 'abc' is not a number; give e.g. 0.00392157 or 1/255"),
])
def test_onnx_export_option_errors(tmp_path, argv, message):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    line = one_error_line(runner.invoke(app, [a.replace("MODEL", str(path)) for a in argv]))
    assert line.startswith(message)


def test_bench_command_prints_a_table_and_writes_json(tmp_path):
    import json

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    result = runner.invoke(app, ["bench", str(path), "--providers", "cpu", "--batch-sizes", "1,2", "--runs", "3",
                                 "--warmup", "1", "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("cpu ")]
    assert [r[1] for r in rows] == ["1", "2"]
    data = json.loads((tmp_path / "b.json").read_text())
    assert {r["batch_size"] for r in data["rows"]} == {1, 2}


@pytest.mark.parametrize("args, message", [
    (["--providers", "tpu"], "error: --providers: unknown provider 'tpu'; valid: cpu, cuda"),
    (["--batch-sizes", "0,x"], "error: --batch-sizes must be positive integers, like 1,8; got 0, 'x'"),
])
def test_bench_bad_input(tmp_path, args, message):
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    assert one_error_line(runner.invoke(app, ["bench", str(path), *args])) == message


TORCH_RESNET = str(__import__("pathlib").Path(__file__).parent / "torch_models" / "resnet_dynamo_opset18.onnx")


@pytest.mark.parametrize("argv, message", [
    (["--preprocess", "imagenet"], "error: --preprocess 'imagenet' is not a preset; the presets are: torchvision ("),
    (["--preprocess", "torchvision", "--std", "0.5"],
     "error: --preprocess torchvision already sets mean, std, scale and channel order; leave out --std or --preprocess"),
    (["--resize", "0"], "error: --resize 0 is not a positive size; give the shorter side in pixels, e.g. 256"),
    (["--resize", "-256"], "error: --resize -256 is not a positive size; give the shorter side in pixels, e.g. 256"),
    (["--resize", "big"], "error: --resize 'big' is not valid; give stretch, crop, pad, or a number N"),
])
def test_torch_export_option_errors(tmp_path, argv, message):
    out = tmp_path / "x.onnx"
    line = one_error_line(runner.invoke(app, ["export", TORCH_RESNET, "-o", str(out), *argv]))
    assert line.startswith(message), line
    assert not out.exists()


def test_torch_export_then_layers_and_render_by_module_name(tmp_path):
    out = tmp_path / "resnet.onnx"
    result = runner.invoke(app, ["export", TORCH_RESNET, "-o", str(out), "--preprocess", "torchvision"])
    assert result.exit_code == 0, result.output
    listing = runner.invoke(app, ["layers", str(out)]).stdout
    assert "layer1.0.bn2" in listing and "BatchNorm2d" in listing and "(layer1.0.conv2 folded in by the exporter)" in listing
    image = tmp_path / "photo.png"
    cv2.imwrite(str(image), (255 * __import__("numpy").random.default_rng(0).random((50, 40, 3))).astype("uint8"))
    result = runner.invoke(app, ["render", str(out), str(image), "-o", str(tmp_path / "o"), "--layers", "layer1.*",
                                 "--grids"])
    assert result.exit_code == 0, result.output
    files = sorted(p.name.split("_ch")[0] for p in (tmp_path / "o" / "photo" / "grids").glob("*.jpg"))
    assert files == ["002.layer1.0.relu", "003.layer1.0.bn2", "004.layer1.0.relu_call2"]
    page = (tmp_path / "o" / "photo" / "index.html").read_text()
    assert "BatchNorm2d, ONNX Conv: conv2 + bn2 (folded by the exporter)" in page
    line = one_error_line(runner.invoke(app, ["render", str(out), str(image), "-o", str(tmp_path / "p"), "--resize", "-1"]))
    assert line == "error: --resize -1 is not a positive size; give the shorter side in pixels, e.g. 256"


def test_layers_says_which_fold_each_exporter_made(tmp_path):
    legacy = TORCH_RESNET.replace("dynamo", "legacy")
    out = tmp_path / "legacy.onnx"
    assert runner.invoke(app, ["export", legacy, "-o", str(out)]).exit_code == 0
    lines = runner.invoke(app, ["layers", str(out)]).stdout.splitlines()
    line = next(line for line in lines if "layer1.0.conv2+bn" in line)
    assert line.endswith("(a BatchNorm folded into layer1.0.conv2 by the exporter)")
    raw = runner.invoke(app, ["layers", TORCH_RESNET]).stdout  # a torch file not written by onnxviz
    assert "layer1.0.bn2" in raw and "layer1.0.relu#2" in raw and "getitem" not in raw


@pytest.mark.parametrize("args, message", [
    (["render", "--qqq", "m.onnx", "a.png"], "error: No such option: --qqq; see 'onnxviz render --help'"),
    (["render"], "error: Missing argument 'model'; see 'onnxviz render --help'"),
    (["render", "m.onnx", "a.png", "--batch-size", "many"],
     "error: Invalid value for '--batch-size': 'many' is not a valid int"),
    (["draw"], "error: No such command 'draw'; see 'onnxviz --help'"),
])
def test_a_mistyped_command_line_is_one_line_and_exit_1(args, message):
    """The installed command (`main`, not the Typer app the other tests call): usage errors too."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'onnxviz'; from onnxviz.cli import main; main()",
                           *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stdout == "", (proc.returncode, proc.stdout)
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(message), proc.stderr


@pytest.mark.parametrize("args", [[], ["--help"], ["render", "--help"]])
def test_help_and_no_arguments_show_the_help_and_exit_0(args):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", "import sys; sys.argv[0] = 'onnxviz'; from onnxviz.cli import main; main()",
                           *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Usage: onnxviz" in proc.stdout and proc.stderr.strip() == "", proc.stderr


def test_render_on_cpu_says_so_in_one_short_line_and_the_reason_only_when_asked(tmp_path):
    import json

    from onnxviz.run.session import cuda_status
    from tiny_models import write_image

    if cuda_status()[0]:
        pytest.skip("CUDA runs here: there is no fallback to keep quiet about")
    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    write_image(tmp_path / "a.png")
    quiet = runner.invoke(app, ["render", str(path), str(tmp_path / "a.png"), "-o", str(tmp_path / "q")])
    assert quiet.exit_code == 0, quiet.output
    assert quiet.stdout.splitlines()[0] == "ran on CPU"
    assert "CUDA" not in quiet.output and "pip install" not in quiet.output
    why = json.loads((tmp_path / "q" / "a" / "summary.json").read_text())["provider_fallback"]
    assert why  # the report keeps the reason
    loud = runner.invoke(app, ["render", str(path), str(tmp_path / "a.png"), "-o", str(tmp_path / "v"), "--verbose"])
    assert loud.stdout.splitlines()[0] == f"ran on CPU; CUDA not used: {why}"


def test_a_mistyped_model_name_gets_a_did_you_mean(tmp_path):
    line = one_error_line(runner.invoke(app, ["export", "mobilenett", "-o", str(tmp_path / "x.onnx")]))
    assert line.startswith("error: unknown model 'mobilenett': did you mean 'mobilenet' or 'mobilenetv2'? give a "
                           ".keras/.h5/.onnx file or one of ")
    line = one_error_line(runner.invoke(app, ["export", "qqq", "-o", str(tmp_path / "x.onnx")]))
    assert "did you mean" not in line


def test_a_failed_weights_download_names_the_flag():
    from onnxviz.cli import flag_of
    from onnxviz.exporter.sources.keras import _download_error

    error = _download_error(Exception("URL fetch failure on https://storage.googleapis.com/x/m.h5: None -- "
                                      "[Errno -3] Temporary failure in name resolution"), "ImageNet weights for X")
    assert error.spoken(flag_of).endswith("or give a weights file or no weights (--weights none)")
    assert str(error).endswith("or give a weights file or no weights (weights none)")


@needs_tensorflow
def test_an_input_size_without_imagenet_weights_says_which_sizes_have_them(shared_data, tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    home = tmp_path / "keras_home"
    shutil.copytree(shared_data / "keras_home", home)
    proc = subprocess.run([sys.executable, "-m", "onnxviz", "export", "mobilenet", "--alpha", "0.25", "--input-size",
                           "16", "-o", str(tmp_path / "m.onnx")], env=dict(os.environ, KERAS_HOME=str(home)),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith("error: MobileNet cannot be built with --input-size 16: ")
    assert line.endswith("with ImageNet weights and the classifier, MobileNet takes the sizes it has weights for: "
                         "128, 160, 192 and 224; without the classifier (--no-top) it takes other sizes, above its "
                         "minimum")
    assert not (tmp_path / "m.onnx").exists()
