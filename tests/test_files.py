from __future__ import annotations

import os

import pytest

from onnxviz.errors import OutputError
from onnxviz.files import atomic_path, ensure_dir, write_bytes


def test_write_replaces_in_one_step_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a" / "b.jpg"
    write_bytes(target, b"one")
    write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.jpg"]
    assert oct(target.stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def test_an_interrupted_write_keeps_the_old_file(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_bytes(b"complete old model")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"complete old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_file_in_the_way_of_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="cannot create output folder .*choose another with -o"):
        ensure_dir(tmp_path / "f" / "sub")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
