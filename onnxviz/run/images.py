"""Finding, reading and resizing the photos fed to a network: pure numpy + OpenCV.

Pixels leave this module as RGB uint8 `[H, W, 3]`, upright (EXIF orientation applied),
which is what every onnxviz model takes (see `metadata`).
"""
from __future__ import annotations

import struct
import threading
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from onnxviz.errors import ImageError, OnnxvizError, OptionError

IMAGE_SUFFIXES: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})

# A photo bigger than this is refused before it is decoded: 100 megapixels of RGB is
# 300 MB, far more than any network input needs.
MAX_PIXELS: int = 100_000_000

RESIZE_MODES: tuple[str, ...] = ("stretch", "crop", "pad")
# A resize given as a number N: the shorter side to N (bilinear, antialiased), then a
# centre crop to the input size, as torchvision's Resize(N) + CenterCrop(size) on PIL images.
_PRECISION_BITS = 32 - 8 - 2  # Pillow's fixed-point resampling (ImagingResample, 8 bits per channel)

_FORMATS = "JPEG, PNG, BMP, WebP, TIFF"
# Any depth, three channels, RGB order, EXIF orientation applied (OpenCV applies it for
# every flag set except IMREAD_UNCHANGED and IMREAD_IGNORE_ORIENTATION).
_READ_FLAGS = cv2.IMREAD_COLOR_RGB | cv2.IMREAD_ANYDEPTH


@dataclass(frozen=True)
class FoundImage:
    """An image file and the folder it lies in, relative to the folder it was found through
    (`cats` for `data/cats/cat.jpg` found in `data`; "" for a file given itself or at the top)."""

    path: Path
    group: str = ""


def find_images(paths: list[Path]) -> tuple[list[FoundImage], list[str]]:
    """Expand folders into their images, searching subfolders too (a dataset kept as one folder
    per class); return (images, warnings).

    A folder gives its files with a suffix in IMAGE_SUFFIXES at any depth, in the order of
    their relative paths (`a/x.jpg` before `b/a.jpg`, a folder's own files by name), hidden
    files and folders (`.name`, e.g. macOS `._x.jpg`, `.git`) skipped. Symbolic links to
    folders are followed, each folder at most once, so a link that loops back is not walked
    twice. A file is kept as given whatever its suffix, so that `load_image` explains why it
    cannot be read. A missing path or a folder without images at any depth gives a warning
    and nothing else.
    """
    import os

    images: list[FoundImage] = []
    warnings: list[str] = []
    suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
    for path in map(Path, paths):
        if path.is_dir():
            found: list[tuple[tuple[str, ...], Path]] = []
            seen: set[tuple[int, int]] = set()
            folders = 0
            for root, dirs, files in os.walk(path, followlinks=True):
                stat = os.stat(root)
                if (stat.st_dev, stat.st_ino) in seen:  # reached again through a link: walked once
                    dirs[:] = []
                    continue
                seen.add((stat.st_dev, stat.st_ino))
                folders += 1
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                rel = Path(root).relative_to(path).parts
                for name in files:
                    file = Path(root) / name
                    if file.suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".") and file.is_file():
                        found.append(((*rel, name), file))
            found.sort(key=lambda item: item[0])
            if not found:
                depth = f" in it or its {folders - 1} subfolders" if folders > 1 else ""
                warnings.append(f"folder '{path}' has no images ({suffixes}){depth}; skipped")
            images.extend(FoundImage(file, "/".join(parts[:-1])) for parts, file in found)
        elif path.exists():
            images.append(FoundImage(path))
        else:
            warnings.append(f"'{path}' does not exist; skipped")
    return images, warnings


def collect_images(paths: list[Path]) -> tuple[list[Path], list[str]]:
    """`find_images`' image paths and warnings."""
    found, warnings = find_images(paths)
    return [image.path for image in found], warnings


def load_image(path: Path, *, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file as upright RGB uint8 `[H, W, 3]`.

    - EXIF orientation is applied, so a photo shot rotated comes out as it is shown.
    - Grayscale becomes three equal channels.
    - Alpha is dropped, keeping the stored colour under transparent pixels: this is what
      `keras.utils.load_img` (PIL `convert("RGB")`) gives, so the network sees the same
      pixels as in Keras.
    - 16-bit samples are scaled to 8 bit (`round(v / 257)`, 65535 -> 255), not clipped;
      float samples (float TIFF) are taken as 0..1.
    - Images over `max_pixels` (default MAX_PIXELS) are refused from their header,
      before decoding, for PNG, JPEG, BMP, WebP and TIFF.
    """
    path = Path(path)
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    if path.is_dir():
        raise ImageError(f"cannot read image '{path}': it is a folder; pass image files or the folder itself as an input")
    try:
        data = np.fromfile(path, dtype=np.uint8)  # np.fromfile + imdecode: unicode paths work on Windows too
    except FileNotFoundError:
        raise ImageError(f"cannot read image '{path}': no such file; check the path") from None
    except OSError as exc:
        raise ImageError(f"cannot read image '{path}': {exc.strerror or exc}; check its permissions") from None
    if data.size == 0:
        raise ImageError(f"cannot read image '{path}': the file is empty (0 bytes); replace it with a {_FORMATS} image")

    size = header_size(data)
    if size is not None:
        _check_pixels(path, size[0], size[1], limit)
    image = _decode(data)
    if image is None:
        raise ImageError(f"cannot read image '{path}': not a supported image or truncated ({_FORMATS} are)")
    _check_pixels(path, image.shape[1], image.shape[0], limit)
    return _to_rgb8(image, path)


def _decode(data: np.ndarray) -> np.ndarray | None:
    """cv2.imdecode, or None; OpenCV's own log lines (libpng errors...) are silenced while
    it runs, since the ImageError raised for a None says it better."""
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        return cv2.imdecode(data, _READ_FLAGS)
    except cv2.error:
        return None
    finally:
        logging.setLogLevel(level)


def header_size(data: np.ndarray | bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, BMP, WebP or TIFF header; None if not found.

    Lets `load_image` refuse a huge image without decoding it (OpenCV has no header reader).
    """
    head = bytes(data[:32])
    try:
        if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head.startswith(b"\xff\xd8"):
            return _jpeg_size(data)
        if head.startswith(b"BM") and len(head) >= 26:
            if struct.unpack("<I", head[14:18])[0] == 12:  # OS/2 BITMAPCOREHEADER
                return struct.unpack("<HH", head[18:22])
            w, h = struct.unpack("<ii", head[18:26])
            return abs(w), abs(h)
        if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(data)
    except (struct.error, IndexError, ValueError):
        return None
    return None


def _check_pixels(path: Path, width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise ImageError(
            f"image '{path}' is {width}x{height} ({width * height / 1e6:.1f} megapixels), over the limit of "
            f"{limit / 1e6:g} megapixels; downscale it first"
        )


def _jpeg_size(data: np.ndarray | bytes) -> tuple[int, int] | None:
    buf = memoryview(data)  # no copy of the file
    pos, n = 2, len(buf)
    while pos + 4 <= n:
        if buf[pos] != 0xFF:
            return None
        marker = buf[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        length = (buf[pos + 2] << 8) | buf[pos + 3]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # SOFn
            if pos + 9 > n:
                return None
            height = (buf[pos + 5] << 8) | buf[pos + 6]
            width = (buf[pos + 7] << 8) | buf[pos + 8]
            return width, height
        pos += 2 + length
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L" and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _tiff_size(data: np.ndarray | bytes) -> tuple[int, int] | None:
    buf = memoryview(data)  # the first IFD is often at the end of the file
    order = "<" if bytes(buf[:2]) == b"II" else ">"
    (ifd,) = struct.unpack_from(order + "I", buf, 4)
    (count,) = struct.unpack_from(order + "H", buf, ifd)
    found: dict[int, int] = {}
    for k in range(min(count, 4096)):
        tag, typ = struct.unpack_from(order + "HH", buf, ifd + 2 + 12 * k)
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            fmt = order + ("H" if typ == 3 else "I")
            found[tag] = struct.unpack_from(fmt, buf, ifd + 10 + 12 * k)[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None


def _to_rgb8(image: np.ndarray, path: Path) -> np.ndarray:
    """Any depth, 3 channels -> uint8 3 channels."""
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.dtype == np.uint8:
        return np.ascontiguousarray(image)
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if image.dtype in (np.float32, np.float64, np.float16):
        clean = np.nan_to_num(image.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0)
        return (np.clip(clean, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise ImageError(
        f"cannot read image '{path}': {image.dtype} samples are not supported (8- and 16-bit "
        f"unsigned and float are); convert it to an 8-bit PNG or JPEG"
    )


def check_resize(value: str | int) -> str:
    """A resize spec as the file and `--resize` give it: a mode, or a positive whole number."""
    text = str(value).strip().lower()
    if text in RESIZE_MODES:
        return text
    try:
        number = int(text)
    except ValueError:
        raise OptionError(f"{{resize}} '{value}' is not valid; give {', '.join(RESIZE_MODES)}, or a number N "
                          f"(the shorter side to N, bilinear, then a centre crop, e.g. 256)", params=("resize",)) from None
    if number < 1:
        raise OptionError(f"{{resize}} {number} is not a positive size; give the shorter side in pixels, e.g. 256",
                          params=("resize",))
    return str(number)


def resize_image(rgb: np.ndarray, height: int, width: int, mode: str = "stretch") -> np.ndarray:
    """Resize RGB uint8 to exactly `[height, width, 3]`.

    - `stretch`: ignore the aspect ratio; pixel-identical to
      `keras.utils.load_img(path, target_size=(height, width))` (PIL NEAREST).
    - `crop`: cut the centre to the target aspect ratio, then resize; identical to
      `load_img(..., keep_aspect_ratio=True)`.
    - `pad`: letterbox: scale to fit inside, centre, pad with black.
    - a number N (`"256"`): the shorter side to N, bilinear with antialiasing, then the
      centre `height x width`: torchvision's `Resize(N)` + `CenterCrop((height, width))` on
      a PIL image, reproduced to the grey level (see `resize_shorter`).

    The first three sample with PIL's nearest rule (source index `int(i * s/d + s/(2d))`,
    accumulated in double precision as PIL does), so what the network sees is what it
    would see in Keras.
    """
    mode = check_resize(mode) if not (isinstance(mode, str) and mode in RESIZE_MODES) else mode
    if height < 1 or width < 1:
        raise OnnxvizError(f"cannot resize to {height}x{width}; height and width must be at least 1")
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ImageError(f"resize_image takes an RGB image [H, W, 3]; got shape {tuple(rgb.shape)}")
    src_h, src_w = rgb.shape[:2]
    if mode.isdigit():
        return resize_shorter(rgb, int(mode), crop=(height, width))
    if mode == "stretch":
        return _nearest(rgb, 0, 0, src_h, src_w, height, width)
    if mode == "crop":
        # Keras' keep_aspect_ratio box, integer arithmetic included.
        crop_h = min(src_h, (src_w * height) // width)
        crop_w = min(src_w, (src_h * width) // height)
        crop_h, crop_w = max(crop_h, 1), max(crop_w, 1)
        top, left = (src_h - crop_h) // 2, (src_w - crop_w) // 2
        return _nearest(rgb, top, left, crop_h, crop_w, height, width)
    scale = min(height / src_h, width / src_w)
    new_h = min(height, max(1, round(src_h * scale)))
    new_w = min(width, max(1, round(src_w * scale)))
    out = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[top:top + new_h, left:left + new_w] = _nearest(rgb, 0, 0, src_h, src_w, new_h, new_w)
    return out


def read_pixels(path: str | Path, height: int, width: int, resize: str = "stretch") -> np.ndarray:
    """One image file as the network takes it: `load_image`, then `resize_image`."""
    return resize_image(load_image(Path(path)), height, width, resize)


@dataclass
class ImageBatch:
    """A batch read and resized: the pixels of the images that could be read, and why the others could not."""

    pixels: np.ndarray  # [len(read), height, width, 3] RGB uint8, in the order given
    read: list[int]  # positions, in the paths given, of the images in `pixels`
    failed: list[tuple[int, str]]  # (position, why) of each image that could not be read


def read_batch(paths: Sequence[str | Path], height: int, width: int, resize: str = "stretch", *,
               stop: threading.Event | None = None, pool: Executor | None = None) -> ImageBatch:
    """Read and resize `paths` (`read_pixels`): the one batch reader of render, atlas and its Ray tasks.

    An image that cannot be read (`ImageError`) is listed in `failed`, never raised: a dataset's
    broken file is a warning. `stop`: checked before each image; once it is set the batch ends
    there, incomplete. `pool`: read in its threads instead (OpenCV releases the GIL).
    """
    def one(path: str | Path) -> tuple[np.ndarray | None, str | None]:
        try:
            return read_pixels(path, height, width, resize), None
        except ImageError as exc:
            return None, str(exc)

    if pool is not None:
        results = list(pool.map(one, paths))
    else:
        results = []
        for path in paths:
            if stop is not None and stop.is_set():
                break
            results.append(one(path))
    pixels = np.empty((len(paths), height, width, 3), np.uint8)
    read: list[int] = []
    failed: list[tuple[int, str]] = []
    for k, (rgb, why) in enumerate(results):
        if rgb is None:
            failed.append((k, why))
        else:
            pixels[len(read)] = rgb
            read.append(k)
    return ImageBatch(pixels[:len(read)], read, failed)


def resize_shorter(rgb: np.ndarray, size: int, crop: tuple[int, int] | None = None) -> np.ndarray:
    """The shorter side to `size`, the longer in proportion (truncated), bilinear with antialiasing;
    with `crop` (height, width), only the centre crop of that is computed and returned.

    torchvision's `Resize(size)` on a PIL image: the output size as
    `_compute_resized_output_size` computes it, then Pillow's `Image.resize(..., BILINEAR)`,
    whose separable triangle filter widens with the downscale factor (that is the
    antialiasing). Pillow's arithmetic is reproduced: coefficients in double precision,
    normalised, rounded to 22-bit fixed point; horizontal pass first, rounded and clipped to
    uint8, then the vertical pass. With `crop`, `CenterCrop` follows (see `center_crop`).
    """
    h, w = rgb.shape[:2]
    if size < 1:
        raise OnnxvizError(f"cannot resize the shorter side to {size}; it must be at least 1")
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_h, new_w = size, int(size * w / h)
    if crop is not None and (crop[0] > new_h or crop[1] > new_w):
        return center_crop(resize_shorter(rgb, size), *crop)  # padded: rare, done in full
    rows, cols = (0, new_h), (0, new_w)
    if crop is not None:
        top, left = int(round((new_h - crop[0]) / 2.0)), int(round((new_w - crop[1]) / 2.0))
        rows, cols = (top, top + crop[0]), (left, left + crop[1])
    if (new_h, new_w) == (h, w):
        return np.ascontiguousarray(rgb[rows[0]:rows[1], cols[0]:cols[1]])
    if new_h != h:  # the input rows the vertical pass reads (Pillow's ybox)
        coeffs = _coefficients(h, new_h, *rows)
        first, last = int(coeffs[1].min()), int((coeffs[1] + coeffs[2]).max())
    else:
        first, last = rows
    out = rgb[first:last]
    out = _resample(out, w, new_w, cols, axis=1) if new_w != w else out[:, cols[0]:cols[1]]
    if new_h != h:
        out = _resample(out, h, new_h, rows, axis=0, offset=first)
    return np.ascontiguousarray(out)


def _coefficients(in_size: int, out_size: int, start: int, stop: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pillow's `precompute_coeffs` for BILINEAR, for outputs start..stop-1: fixed-point weights
    [n, ksize], first input index [n] and number of inputs [n]."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear (triangle) filter's support is 1
    ksize = int(np.ceil(support)) * 2 + 1
    centers = (np.arange(start, stop) + 0.5) * scale
    xmin = np.maximum((centers - support + 0.5).astype(np.int64), 0)
    xmax = np.minimum((centers + support + 0.5).astype(np.int64), in_size) - xmin
    taps = np.arange(ksize)
    x = ((taps[None, :] + xmin[:, None]) - centers[:, None] + 0.5) * (1.0 / filterscale)
    weights = np.where(np.abs(x) < 1.0, 1.0 - np.abs(x), 0.0)
    weights[taps[None, :] >= xmax[:, None]] = 0.0
    total = weights.sum(axis=1, keepdims=True)
    weights = np.divide(weights, total, out=weights, where=total != 0)
    fixed = (0.5 + weights * (1 << _PRECISION_BITS)).astype(np.int64)  # all weights are >= 0
    return fixed, xmin, xmax


def _resample(rgb: np.ndarray, in_size: int, out_size: int, keep: tuple[int, int], axis: int,
              offset: int = 0) -> np.ndarray:
    """Pillow's `ImagingResample{Horizontal,Vertical}_8bpc` along `axis`, outputs keep[0]..keep[1]-1;
    `offset` is the input index of `rgb`'s first row (axis 0 only)."""
    fixed, xmin, xmax = _coefficients(in_size, out_size, *keep)
    src = rgb if axis == 0 else np.ascontiguousarray(rgb.transpose(1, 0, 2))
    # int32 as in Pillow: a sum is at most 255 * 2**22 plus rounding, below 2**31.
    acc = np.full((keep[1] - keep[0],) + src.shape[1:], 1 << (_PRECISION_BITS - 1), dtype=np.int32)
    weights = fixed.astype(np.int32)
    last = src.shape[0] - 1
    for k in range(int(xmax.max())):
        rows = np.minimum(xmin + k - offset, last)
        acc += src[rows] * weights[:, k, None, None]
    out = np.clip(acc >> _PRECISION_BITS, 0, 255).astype(np.uint8)
    return out if axis == 0 else out.transpose(1, 0, 2)


def center_crop(rgb: np.ndarray, height: int, width: int) -> np.ndarray:
    """torchvision's `CenterCrop((height, width))`: Python's round for the offsets, and zero
    padding first (as torchvision pads) when the image is smaller than the crop."""
    h, w = rgb.shape[:2]
    if height > h or width > w:
        pad_l = (width - w) // 2 if width > w else 0
        pad_t = (height - h) // 2 if height > h else 0
        pad_r = (width - w + 1) // 2 if width > w else 0
        pad_b = (height - h + 1) // 2 if height > h else 0
        rgb = np.pad(rgb, ((pad_t, pad_b), (pad_l, pad_r), (0, 0)))
        h, w = rgb.shape[:2]
        if (h, w) == (height, width):
            return rgb
    top = int(round((h - height) / 2.0))
    left = int(round((w - width) / 2.0))
    return np.ascontiguousarray(rgb[top:top + height, left:left + width])


def pil_nearest_indices(size: int, offset: int, src: int, dst: int) -> np.ndarray:
    """Source indices PIL's NEAREST resize picks for `dst` outputs from box [offset, offset+src).

    PIL (ImagingScaleAffine) starts at `offset + scale/2` and adds `scale` in double
    precision for each output; np.cumsum accumulates in the same order, so the indices
    are identical, including the cases where the exact formula floor((i + 0.5) * s/d)
    lands on an integer and PIL's running sum falls just below it.
    """
    scale = src / dst
    steps = np.full(dst, scale)
    steps[0] = offset + scale * 0.5
    idx = np.cumsum(steps).astype(np.int64)  # int() truncation == PIL's COORD for v >= 0
    return np.clip(idx, 0, size - 1)


def _nearest(rgb: np.ndarray, top: int, left: int, box_h: int, box_w: int, height: int, width: int) -> np.ndarray:
    ys = pil_nearest_indices(rgb.shape[0], top, box_h, height)
    xs = pil_nearest_indices(rgb.shape[1], left, box_w, width)
    return np.ascontiguousarray(rgb.take(ys, axis=0).take(xs, axis=1))
