"""Writing results so that an interrupted run never leaves a half-written file."""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from onnxviz.errors import ModelError, OnnxvizError, OutputError


def ensure_dir(path: Path, param: str = "output") -> Path:
    """Create `path` (and parents) or explain why it cannot be written; `param` names the
    argument that gave it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder '{path}': {exc.strerror}; choose another "
                          f"{{{param}}}", params=(param,)) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(f"output folder '{path}' is not writable; choose another {{{param}}}", params=(param,))
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


PART = ".part-"  # what is being written is hidden as `.NAME.part-XXXXXXXX` beside where it goes


def _read_umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status) where the
    system allows; else by setting it and back, once, when this module is imported."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# Read once: setting the umask to read it is process-wide, and would race with threads that
# create files meanwhile (render's workers), which could then be made world-writable.
UMASK = _read_umask()


@contextlib.contextmanager
def staged(path: Path, *, folder: bool = False, param: str = "output") -> Iterator[Path]:
    """Write under a hidden name, then rename: how every result reaches the disk, so that an
    interrupted or failed write leaves what was there before and nothing half-made.

    A hidden folder `.NAME.part-XXXXXXXX` is made beside `path` (with the folders above it
    that are missing). `folder=False`: yields `<that folder>/NAME`; write `path` there, with
    any file that goes with it (an ONNX file's `.data`) beside it under its final name; when
    the block ends without error each file is renamed into place, `NAME` last (so that what it
    refers to is there first). `folder=True`: yields the hidden folder, which then takes
    `path`'s place, replacing an earlier folder of that name. On error the hidden folder is
    removed, with the folders made for it if nothing else went into them. `param` names the
    argument that gave `path`, for messages.
    """
    path = Path(path)
    made = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        made.append(parent)
        parent = parent.parent
    ensure_dir(path.parent, param)
    try:
        try:
            stage = Path(tempfile.mkdtemp(prefix=f".{path.name}{PART}", dir=path.parent))
        except OSError as exc:
            raise OutputError(f"cannot write '{path}': {exc.strerror or exc}") from exc
        try:
            yield stage if folder else stage / path.name
            if folder:
                _replace_folder(stage, path, param)
            else:
                for f in sorted(stage.iterdir(), key=lambda f: f.name == path.name):
                    os.replace(f, path.parent / f.name)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
    except BaseException:
        for folder_made in made:  # innermost first
            try:
                folder_made.rmdir()
            except OSError:
                break
        raise


def _replace_folder(stage: Path, final: Path, param: str) -> None:
    """Put the finished `stage` folder at `final`, replacing an earlier folder of that name."""
    os.chmod(stage, 0o777 & ~UMASK)  # mkdtemp makes it 0700; results are ordinary folders
    if final.exists() and not final.is_dir():
        raise OutputError(f"cannot write folder '{final}': a file of that name is in the way; "
                          f"move it or choose another {{{param}}}", params=(param,))
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}{PART}old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(stage, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def clean_stages(folder: Path) -> None:
    """Remove what a killed run left half-written in `folder` (`.NAME.part-*`)."""
    for stage in Path(folder).glob(f".*{PART}*"):
        if stage.is_dir():
            shutil.rmtree(stage, ignore_errors=True)


def write_bytes(path: Path, data: bytes, param: str = "output") -> Path:
    """Write `data` to `path` under a hidden name, then rename it into place."""
    with staged(path, param=param) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path, text: str, param: str = "output") -> Path:
    return write_bytes(path, text.encode("utf-8"), param)


def safe_name(name: str) -> str:
    """A layer or image name made safe for file names."""
    name = re.sub(r"#(\d+)$", r"_call\1", name)  # a module's second call, `layer1.0.relu#2`
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "layer"
