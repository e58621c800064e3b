"""Writing results so that an interrupted run never leaves a half-written file."""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from onnxviz.errors import ModelError, OnnxvizError, OutputError


def ensure_dir(path: Path) -> Path:
    """Create `path` (and parents) or explain why it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder '{path}': {exc.strerror}; choose another with -o") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"output folder '{path}' is not writable; choose another with -o")
    return path


def existing_file(path: Path, what: str = "file") -> Path:
    """`path` if it is a readable file; else the one message for that, wherever it is asked."""
    path = Path(path)
    error = ModelError if what.startswith("model") else OnnxvizError
    if not path.exists():
        raise error(f"{what} '{path}' does not exist; check the path")
    if path.is_dir():
        raise error(f"'{path}' is a folder, not a {what}")
    if not os.access(path, os.R_OK):
        raise error(f"{what} '{path}' cannot be read; check its permissions")
    return path


def check_writable(path: Path) -> Path:
    """Fail now, creating nothing, if the file `path` could not be written later.

    The nearest folder that exists must be writable, and nothing on the way may be a file;
    the folders are made only when something is written (so a failed command leaves none).
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"'{path}' is a folder; give a file name")
    parent = path.parent
    while not parent.exists():
        if parent == parent.parent:
            break
        parent = parent.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"cannot write '{path}': '{parent}' is a file, not a folder; choose another path")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write '{path}': folder '{parent}' is not writable; choose another path")
    return path


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path` in one rename.

    On any error the temporary file is removed and `path`, if it existed, is untouched.
    """
    path = Path(path)
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes) -> Path:
    """Atomically write `data` to `path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def safe_name(name: str) -> str:
    """A layer or image name made safe for file names."""
    name = re.sub(r"#(\d+)$", r"_call\1", name)  # a module's second call, `layer1.0.relu#2`
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"
