"""atlas/ray: the same atlas on Ray Data (every Ray run bounded by a timeout)."""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from atlas_checks import LAYERS, invoke
from onnxviz.atlas.options import AtlasOptions
from onnxviz.atlas.pipeline import build_atlas
from onnxviz.errors import OnnxvizError

ROOT = Path(__file__).resolve().parents[2]


def test_ray_not_installed(atlas_model, atlas_images, tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from onnxviz.cli import app\n"
            f"app(['atlas', {str(atlas_model)!r}, {str(atlas_images)!r}, '-o', {str(tmp_path / 'a')!r}, "
            f"'--engine', 'ray'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 1
    assert proc.stderr.strip() == ('error: --engine ray needs Ray, which is not installed here: '
                                   'pip install "onnxviz[ray]"')


needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="Ray not installed (pip install 'onnxviz[ray]')")


@needs_ray
def test_ray_address_that_does_not_answer_fails_within_seconds(atlas_model, atlas_images, tmp_path):
    import time

    from onnxviz.atlas.ray import check_ray

    code, out = invoke(atlas_model, atlas_images, "-o", tmp_path / "a", "--engine", "ray",
                       "--ray-address", "127.0.0.1:9")
    assert code == 1
    assert "error: Ray address '127.0.0.1:9' does not answer (Connection refused)" in out
    assert "ray start --head" in out
    code, out = invoke(atlas_model, atlas_images, "-o", tmp_path / "a", "--engine", "ray", "--ray-address", "nonsense")
    assert code == 1 and "is not host:port" in out
    # a server that accepts the connection and never answers (as a firewall may): an error within 5 s
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        t = time.perf_counter()
        with pytest.raises(OnnxvizError, match=rf"Ray address 'ray://127\.0\.0\.1:{port}' does not answer "
                                               r"\(no answer within 5s\)"):
            check_ray(f"ray://127.0.0.1:{port}")
        assert time.perf_counter() - t < 8


@needs_ray
def test_ray_engine_gives_the_local_table(atlas_model, atlas_images, tmp_path):
    """Two local actors, a bounded run: the same table as --engine local, byte for byte."""
    local = tmp_path / "local"
    build_atlas(atlas_model, [atlas_images], local, AtlasOptions(layers=LAYERS, top=4, provider="cpu", batch_size=4))
    (atlas_images / "broken.png").write_bytes(b"\x89PNG broken")
    proc = subprocess.run(
        [sys.executable, "-m", "onnxviz", "atlas", str(atlas_model), str(atlas_images), "-o", str(tmp_path / "ray"),
         "--layers", "c1", "--layers", "p1", "--layers", "add", "--layers", "c3", "--top", "4",
         "--batch-size", "4", "--engine", "ray", "--workers", "2", "--provider", "cpu"],
        capture_output=True, text=True, timeout=240, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ran on CPU (ray)" in proc.stdout and "1 unreadable" in proc.stdout
    assert re.search(r"^ray: started in [0-9.]+s, first results after [0-9.]+s, [0-9.]+ images/s once started$",
                     proc.stdout, re.M), proc.stdout
    assert (tmp_path / "ray" / "atlas.jsonl").read_text() == (local / "atlas.jsonl").read_text()
