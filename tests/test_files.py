from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from onnxviz import files
from onnxviz.cli import flag_of
from onnxviz.errors import OutputError
from onnxviz.files import clean_stages, ensure_dir, staged, write_bytes


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
        with staged(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"complete old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_a_file_in_the_way_of_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(OutputError, match="cannot create output folder .*choose another output$") as err:
        ensure_dir(tmp_path / "f" / "sub")
    assert err.value.spoken(flag_of).endswith("; choose another -o/--output")  # the command line's words
    with pytest.raises(OutputError, match="cannot create output folder .*choose another json_out$") as err:
        write_bytes(tmp_path / "f" / "sub" / "r.json", b"{}", param="json_out")
    assert err.value.spoken(flag_of).endswith("; choose another --json")


def test_paths_with_braces_are_messages_not_templates(tmp_path):
    folder = tmp_path / "{odd}"
    folder.write_text("x")
    with pytest.raises(OutputError) as err:
        ensure_dir(folder / "sub")
    assert f"'{folder / 'sub'}'" in str(err.value) and f"'{folder / 'sub'}'" in err.value.spoken(flag_of)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_file_and_its_companion_move_into_place_the_named_one_last(tmp_path, monkeypatch):
    target = tmp_path / "m.onnx"
    moved = []
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (moved.append(Path(b).name), replace(a, b)))
    with staged(target) as tmp:
        assert tmp.name == "m.onnx" and tmp.parent.name.startswith(".m.onnx.part-") and tmp.parent.parent == tmp_path
        tmp.with_name("m.onnx.data").write_bytes(b"weights")
        tmp.write_bytes(b"graph")
        assert not target.exists()
    assert moved == ["m.onnx.data", "m.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.onnx.data"]


def test_a_failed_write_removes_the_folders_it_made_but_not_others(tmp_path):
    with pytest.raises(ValueError):
        with staged(tmp_path / "new" / "deeper" / "x.json") as tmp:
            tmp.write_text("half")
            raise ValueError
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "other.txt").write_text("someone's")
    with pytest.raises(ValueError):
        with staged(tmp_path / "new" / "deeper" / "x.json"):
            raise ValueError
    assert [p.name for p in (tmp_path / "new").iterdir()] == ["other.txt"]


def test_a_folder_replaces_the_earlier_one_and_a_file_in_the_way_is_an_error(tmp_path):
    final = tmp_path / "img"
    for content in (b"one", b"two"):
        with staged(final, folder=True) as part:
            (part / "a.txt").write_bytes(content)
    assert [p.name for p in tmp_path.iterdir()] == ["img"] and (final / "a.txt").read_bytes() == b"two"
    assert oct(final.stat().st_mode & 0o777) == oct(0o777 & ~_umask())  # not mkdtemp's 0700
    (tmp_path / "file").write_text("in the way")
    with pytest.raises(OutputError) as err:
        with staged(tmp_path / "file", folder=True):
            pass
    assert err.value.spoken(lambda p: "-o") == (f"cannot write folder '{tmp_path / 'file'}': a file of that name is "
                                                f"in the way; move it or choose another -o")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "img"]


def test_clean_stages_removes_what_a_killed_run_left(tmp_path):
    (tmp_path / ".img.part-abc123").mkdir()
    (tmp_path / ".img.part-abc123" / "input.png").write_bytes(b"half")
    (tmp_path / "img").mkdir()
    (tmp_path / ".hidden").mkdir()
    clean_stages(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".hidden", "img"]


def test_the_umask_is_read_once_without_changing_it():
    """Reading the umask by setting it is process-wide: a thread creating a file meanwhile would
    make it world-writable. The value read at import matches the real one."""
    assert files.UMASK == _umask()
    assert files._read_umask() == _umask()


def test_files_and_folders_made_from_many_threads_get_the_umask_modes(tmp_path, monkeypatch):
    """Render's workers write files and rename image folders while others create files: nothing
    may touch the umask then, and every file and folder gets the usual modes."""
    calls = []
    real = os.umask
    monkeypatch.setattr(os, "umask", lambda mask: (calls.append(mask), real(mask))[1])
    old = real(0o027)  # a umask other than the common 022, so default modes would show
    try:
        def work(n: int) -> None:
            for i in range(30):
                write_bytes(tmp_path / f"t{n}" / f"f{i}.txt", b"x")
                with staged(tmp_path / f"t{n}" / f"d{i}", folder=True) as part:
                    (part / "sub").mkdir()
                    (part / "sub" / "g.bin").write_bytes(b"y")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(work, range(8)))
    finally:
        real(old)
    assert calls == []
    # files.UMASK was read at import, under the umask the tests started with; folders renamed
    # into place get that mode, everything created by open/mkdir the kernel's 027
    modes = {p.relative_to(tmp_path).parts[-1][0]: set() for p in tmp_path.rglob("*")}
    for p in tmp_path.rglob("*"):
        modes[p.name[0]].add(p.stat().st_mode & 0o777)
    assert modes["f"] == {0o640} and modes["g"] == {0o640} and modes["s"] == {0o750}
    assert modes["t"] == {0o750} and modes["d"] == {0o777 & ~files.UMASK}
    assert len(list(tmp_path.rglob("*"))) == 8 * (1 + 30 * 4)
