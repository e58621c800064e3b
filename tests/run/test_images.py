"""onnxviz.run.images: finding, reading (formats, EXIF, depth, alpha, bad files) and resizing."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from onnxviz.run import images
from onnxviz.errors import ImageError, OnnxvizError
from onnxviz.run.images import IMAGE_SUFFIXES, collect_images, header_size, load_image, resize_image

NOT_READABLE = r"not a supported image or truncated \(JPEG, PNG, BMP, WebP, TIFF are\)"


def write(path: Path, image: np.ndarray, params: list[int] | None = None) -> Path:
    ok, buf = cv2.imencode(path.suffix, image, params or [])
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def sample_bgr(h: int = 20, w: int = 30) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# --- EXIF helpers: OpenCV cannot write EXIF, so the bytes are built here -----------

def exif_tiff(orientation: int) -> bytes:
    """A big-endian TIFF header with one IFD entry: Orientation (0x0112, SHORT) = orientation."""
    return (b"MM\x00*" + struct.pack(">I", 8) + struct.pack(">H", 1)
            + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + struct.pack(">I", 0))


def jpeg_with_orientation(jpeg: bytes, orientation: int) -> bytes:
    payload = b"Exif\x00\x00" + exif_tiff(orientation)
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]  # right after SOI


def png_with_orientation(png: bytes, orientation: int) -> bytes:
    data = exif_tiff(orientation)
    chunk = struct.pack(">I", len(data)) + b"eXIf" + data + struct.pack(">I", zlib.crc32(b"eXIf" + data))
    return png[:33] + chunk + png[33:]  # after the signature and IHDR


# --- collect_images ---------------------------------------------------------------

def test_collect_expands_folders_and_subfolders_in_path_order(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    (folder / ".git").mkdir()
    for name in ["b.png", "a.JPG", "c.webp", "notes.txt", ".hidden.jpg", "sub/d.png", ".git/e.png"]:
        (folder / name).write_bytes(b"x")
    single = tmp_path / "odd.gif"
    single.write_bytes(b"x")
    found, warnings = collect_images([folder, single])
    assert found == [folder / "a.JPG", folder / "b.png", folder / "c.webp", folder / "sub" / "d.png", single]
    assert warnings == []


def test_class_folders_are_found_with_their_folder_and_a_link_loop_is_walked_once(tmp_path):
    import os

    from onnxviz.run.images import FoundImage, find_images

    data = tmp_path / "imagenet_like"
    for name in ["n02/cat.jpg", "n01/cat.jpg", "n01/b.png", "n01/deeper/c.png", ".cache/x.png"]:
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_bytes(b"x")
    os.symlink("..", data / "n01" / "loop")  # n01/loop -> imagenet_like
    os.symlink(data / "n02", data / "n02_again")  # another way to the same folder
    found, warnings = find_images([data])
    assert found == [FoundImage(data / "n01" / "b.png", "n01"), FoundImage(data / "n01" / "cat.jpg", "n01"),
                     FoundImage(data / "n01" / "deeper" / "c.png", "n01/deeper"),
                     FoundImage(data / "n02" / "cat.jpg", "n02")]  # n02_again is n02, already walked
    assert warnings == []


def test_a_folder_of_folders_without_images_says_so(tmp_path):
    (tmp_path / "data" / "a" / "b").mkdir(parents=True)
    (tmp_path / "data" / "a" / "notes.txt").write_text("x")
    found, warnings = collect_images([tmp_path / "data"])
    assert found == [] and warnings == [
        f"folder '{tmp_path / 'data'}' has no images (.bmp, .jpeg, .jpg, .png, .tif, .tiff, .webp) in it or its 2 "
        f"subfolders; skipped"]


def test_collect_warns_about_missing_paths_and_empty_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images")
    found, warnings = collect_images([tmp_path / "nope.jpg", empty])
    assert found == []
    assert warnings == [
        f"'{tmp_path / 'nope.jpg'}' does not exist; skipped",
        f"folder '{empty}' has no images ({', '.join(sorted(IMAGE_SUFFIXES))}); skipped",
    ]


def test_image_suffixes():
    assert IMAGE_SUFFIXES == {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


# --- load_image: formats ----------------------------------------------------------

@pytest.mark.parametrize("suffix,params", [
    (".png", []), (".bmp", []), (".tif", []), (".tiff", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),
])
def test_lossless_formats_load_as_rgb(tmp_path, suffix, params):
    bgr = sample_bgr()
    rgb = load_image(write(tmp_path / f"x{suffix}", bgr, params))
    assert rgb.dtype == np.uint8 and rgb.shape == (20, 30, 3)
    assert np.array_equal(rgb, bgr[..., ::-1])


@pytest.mark.parametrize("suffix,params", [(".jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90])])
def test_lossy_formats_load_as_rgb(tmp_path, suffix, params):
    bgr = np.zeros((32, 48, 3), np.uint8)
    bgr[:, :24] = (0, 0, 255)  # red in BGR
    bgr[:, 24:] = (255, 0, 0)  # blue
    rgb = load_image(write(tmp_path / f"x{suffix}", bgr, params)).astype(int)
    assert rgb.shape == (32, 48, 3)
    assert np.abs(rgb[16, 8] - (255, 0, 0)).max() < 12
    assert np.abs(rgb[16, 40] - (0, 0, 255)).max() < 12


def test_unicode_path(tmp_path):
    bgr = sample_bgr()
    assert np.array_equal(load_image(write(tmp_path / "čaj ☕.png", bgr)), bgr[..., ::-1])


def test_grayscale_becomes_three_equal_channels(tmp_path):
    gray = sample_bgr()[..., 0]
    rgb = load_image(write(tmp_path / "g.png", gray))
    assert rgb.shape == (20, 30, 3)
    for c in range(3):
        assert np.array_equal(rgb[..., c], gray)


def test_alpha_is_dropped_keeping_the_colour_under_it_like_keras(tmp_path):
    bgra = np.zeros((4, 4, 4), np.uint8)
    bgra[..., :3] = (30, 20, 10)  # B, G, R
    bgra[:2, ..., 3] = 0           # fully transparent top half
    bgra[2:, ..., 3] = 255
    for suffix in (".png", ".tif"):
        rgb = load_image(write(tmp_path / f"a{suffix}", bgra))
        assert rgb.shape == (4, 4, 3)
        assert (rgb == (10, 20, 30)).all()


def test_16bit_png_is_scaled_to_8bit_not_clipped(tmp_path):
    values = np.array([[0, 128, 129, 257, 32896, 65278, 65535, 40000]], np.uint16)
    rgb = load_image(write(tmp_path / "deep.png", values))
    assert rgb[0, :, 0].tolist() == [0, 0, 1, 1, 128, 254, 255, round(40000 / 257)]
    color = np.dstack([values, values // 2, values // 4])  # B, G, R
    rgb = load_image(write(tmp_path / "deep_rgb.png", color))
    assert rgb[0, -2].tolist() == [round(65535 // 4 / 257), round(65535 // 2 / 257), 255]


def test_16bit_tiff_is_scaled_to_8bit(tmp_path):
    values = np.full((3, 3), 65535, np.uint16)
    values[0, 0] = 257 * 100
    rgb = load_image(write(tmp_path / "deep.tif", values))
    assert rgb[0, 0].tolist() == [100, 100, 100] and rgb[1, 1].tolist() == [255, 255, 255]


# --- load_image: EXIF orientation -------------------------------------------------

def test_jpeg_exif_orientation_6_comes_out_rotated_upright(tmp_path):
    bgr = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide, 20 high
    bgr[:8, :8] = (0, 0, 255)              # red block top-left as stored
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg_with_orientation(jpeg.tobytes(), 6))
    rgb = load_image(path).astype(int)
    # Orientation 6: display = stored rotated 90 degrees clockwise, top-left goes top-right.
    assert rgb.shape == (40, 20, 3)
    assert np.abs(rgb[3, 16] - (255, 0, 0)).max() < 20
    assert np.abs(rgb[3, 3]).max() < 20
    assert header_size(path.read_bytes()) == (40, 20)  # the header still gives the stored size


def test_exif_orientation_is_applied_to_16bit_png_too(tmp_path):
    deep = np.zeros((20, 40), np.uint16)
    deep[:8, :8] = 65535
    ok, png = cv2.imencode(".png", deep)
    path = tmp_path / "rotated16.png"
    path.write_bytes(png_with_orientation(png.tobytes(), 6))
    rgb = load_image(path)
    assert rgb.shape == (40, 20, 3)
    assert (rgb[3, 16] == 255).all() and (rgb[3, 3] == 0).all()


# --- load_image: bad files --------------------------------------------------------

def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageError, match=r"cannot read image '.*empty.jpg': the file is empty \(0 bytes\); replace it with a JPEG, PNG, BMP, WebP, TIFF image"):
        load_image(path)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".bmp", ".tif"])
def test_truncated_files_are_refused(tmp_path, suffix):
    ok, buf = cv2.imencode(suffix, sample_bgr(64, 64))
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buf.tobytes()[: len(buf) * 2 // 3])
    with pytest.raises(ImageError, match=rf"cannot read image '.*cut\{suffix}': {NOT_READABLE}"):
        load_image(path)


def test_text_file_named_jpg_is_refused(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("this is not a photo\n")
    with pytest.raises(ImageError, match=rf"cannot read image '.*notes.jpg': {NOT_READABLE}"):
        load_image(path)


def test_missing_file_and_folder_are_refused(tmp_path):
    with pytest.raises(ImageError, match=r"cannot read image '.*gone.png': no such file; check the path"):
        load_image(tmp_path / "gone.png")
    with pytest.raises(ImageError, match="it is a folder; pass image files"):
        load_image(tmp_path)


def test_huge_image_is_refused_from_its_header_before_decoding(tmp_path):
    # A PNG header claiming 20000x20000 followed by garbage: decoding it would fail
    # differently, so the size message proves the header was checked first.
    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00" * 4 + b"garbage" * 10
    path = tmp_path / "huge.png"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=r"image '.*huge.png' is 20000x20000 \(400.0 megapixels\), over the limit of 100 megapixels; downscale it first"):
        load_image(path)


def test_pixel_limit_applies_to_every_format(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 500)
    for suffix in (".jpg", ".png", ".bmp", ".webp", ".tif"):
        path = write(tmp_path / f"x{suffix}", sample_bgr(20, 30))
        with pytest.raises(ImageError, match=r"is 30x20 \(0.0 megapixels\), over the limit of 0.0005 megapixels"):
            load_image(path)
    assert load_image(path, max_pixels=600).shape == (20, 30, 3)


@pytest.mark.parametrize("suffix,params", [
    (".jpg", []), (".png", []), (".bmp", []), (".tif", []),
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]),  # VP8L
    (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),   # VP8
])
def test_header_size_reads_every_format(suffix, params):
    ok, buf = cv2.imencode(suffix, sample_bgr(123, 457), params)
    assert header_size(buf) == (457, 123)


def test_header_size_reads_webp_with_alpha_and_gives_none_for_unknown():
    bgra = np.dstack([sample_bgr(123, 457), sample_bgr(123, 457)[..., 0]])
    ok, buf = cv2.imencode(".webp", bgra, [cv2.IMWRITE_WEBP_QUALITY, 80])
    assert bytes(buf[12:16]) == b"VP8X" and header_size(buf) == (457, 123)
    assert header_size(b"hello world, not an image") is None


# --- resize_image -----------------------------------------------------------------

def pil_nearest(src: int, dst: int, offset: int = 0) -> list[int]:
    """PIL's ImagingScaleAffine index rule, written out as its C loop does it."""
    scale = src / dst
    xo = offset + scale * 0.5
    out = []
    for _ in range(dst):
        out.append(int(xo))  # COORD(): truncation, xo >= 0
        xo += scale
    return out


def index_image(h: int, w: int) -> np.ndarray:
    """Pixel (y, x) holds (y, x, 0) so that the source of every output pixel can be read back."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.dstack([yy, xx, np.zeros_like(yy)]).astype(np.uint8)


def test_stretch_picks_pils_nearest_indices():
    # 2 -> 7: floor((i + 0.5) * 2/7) gives 1 at i = 3 (exactly 1.0), but PIL's running
    # double sum reaches 0.9999999999999998 there and picks 0.
    assert pil_nearest(2, 7) == [0, 0, 0, 0, 1, 1, 1]
    out = resize_image(index_image(2, 2), 7, 7)
    assert out[:, 0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert out[0, :, 1].tolist() == [0, 0, 0, 0, 1, 1, 1]


@pytest.mark.parametrize("src_h,src_w,h,w", [
    (10, 13, 4, 5), (5, 3, 3, 8), (3, 7, 8, 21), (17, 250, 7, 224), (250, 120, 224, 224), (224, 224, 224, 224),
])
def test_stretch_equals_pil_and_opencv_nearest_exact(src_h, src_w, h, w):
    src = index_image(src_h, src_w)
    out = resize_image(src, h, w, "stretch")
    assert out.shape == (h, w, 3)
    assert out[:, 0, 0].tolist() == pil_nearest(src_h, h)
    assert out[0, :, 1].tolist() == pil_nearest(src_w, w)
    assert np.array_equal(out, cv2.resize(src, (w, h), interpolation=cv2.INTER_NEAREST_EXACT))


def test_crop_cuts_the_centre_to_the_target_aspect_like_keras():
    src = index_image(100, 200)
    out = resize_image(src, 50, 50, "crop")
    # Keras keep_aspect_ratio box: 100x100 starting at column 50, then PIL nearest.
    assert out[:, 0, 0].tolist() == pil_nearest(100, 50)
    assert out[0, :, 1].tolist() == pil_nearest(100, 50, offset=50)
    tall = resize_image(index_image(90, 30), 20, 40, "crop")
    # crop_h = 30 * 20 // 40 = 15 rows from row (90 - 15) // 2 = 37, all 30 columns.
    assert tall[:, 0, 0].tolist() == pil_nearest(15, 20, offset=37)
    assert tall[0, :, 1].tolist() == pil_nearest(30, 40)


def test_pad_letterboxes_centred_on_black():
    src = np.full((100, 200, 3), 200, np.uint8)
    out = resize_image(src, 64, 64, "pad")
    assert out.shape == (64, 64, 3)
    # Scale 0.32 -> 32 x 64, 16 black rows above and below.
    assert (out[:16] == 0).all() and (out[48:] == 0).all() and (out[16:48] == 200).all()
    side = resize_image(np.full((50, 10, 3), 9, np.uint8), 20, 20, "pad")
    assert (side[:, :8] == 0).all() and (side[:, 8:12] == 9).all() and (side[:, 12:] == 0).all()


def test_resize_rejects_unknown_mode_and_bad_sizes():
    rgb = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(OnnxvizError, match=r"^resize 'fit' is not valid; give stretch, crop, pad, or a number N "
                                           r"\(the shorter side to N, bilinear, then a centre crop, e.g. 256\)"):
        resize_image(rgb, 2, 2, "fit")
    for bad in ("0", "-5", -5):
        with pytest.raises(OnnxvizError, match=f"^resize {int(bad)} is not a positive size; give the shorter side "
                                               f"in pixels, e.g. 256"):
            resize_image(rgb, 2, 2, bad)
    with pytest.raises(OnnxvizError, match="cannot resize to 0x2; height and width must be at least 1"):
        resize_image(rgb, 0, 2)
    with pytest.raises(ImageError, match=r"resize_image takes an RGB image \[H, W, 3\]; got shape \(4, 4\)"):
        resize_image(rgb[..., 0], 2, 2)


# ---------------------------------------------------------------- the batch reader

def batch_files(tmp_path: Path) -> list[Path]:
    """Five files: three images of different sizes and formats, an empty file and a text file named .png."""
    rng = np.random.default_rng(5)
    paths = [write(tmp_path / "a.png", rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)),
             tmp_path / "empty.jpg",
             write(tmp_path / "b.bmp", rng.integers(0, 256, (41, 17, 3), dtype=np.uint8)),
             tmp_path / "notes.png",
             write(tmp_path / "c.png", rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))]
    paths[1].write_bytes(b"")
    paths[3].write_text("not a picture")
    return paths


@pytest.mark.parametrize("resize", ["stretch", "pad", "256"])
def test_read_batch_keeps_the_readable_in_order_and_says_why_the_others_failed(tmp_path, resize):
    from concurrent.futures import ThreadPoolExecutor

    paths = batch_files(tmp_path)
    got = images.read_batch(paths, 12, 14, resize)
    assert got.read == [0, 2, 4] and got.pixels.shape == (3, 12, 14, 3) and got.pixels.dtype == np.uint8
    for j, k in enumerate(got.read):
        np.testing.assert_array_equal(got.pixels[j], resize_image(load_image(paths[k]), 12, 14, resize))
        np.testing.assert_array_equal(got.pixels[j], images.read_pixels(str(paths[k]), 12, 14, resize))
    assert [k for k, _ in got.failed] == [1, 3]
    for k, why in got.failed:
        with pytest.raises(ImageError) as err:
            load_image(paths[k])
        assert why == str(err.value) and str(paths[k]) in why
    with ThreadPoolExecutor(2) as pool:  # read in a pool: the same batch
        pooled = images.read_batch(paths, 12, 14, resize, pool=pool)
    assert pooled.read == got.read and pooled.failed == got.failed
    np.testing.assert_array_equal(pooled.pixels, got.pixels)


def test_read_batch_of_nothing_readable_and_of_nothing(tmp_path):
    paths = batch_files(tmp_path)
    got = images.read_batch([paths[1], paths[3]], 5, 6)
    assert got.read == [] and got.pixels.shape == (0, 5, 6, 3) and len(got.failed) == 2
    empty = images.read_batch([], 5, 6)
    assert empty.read == [] and empty.failed == [] and empty.pixels.shape == (0, 5, 6, 3)


def test_read_batch_ends_where_stop_is_set(tmp_path, monkeypatch):
    """Checked before each image: set while the second is read, the batch ends after it."""
    import threading

    paths = batch_files(tmp_path)
    stop = threading.Event()
    real = images.load_image
    calls = []

    def load(path, **kwargs):
        calls.append(path)
        if len(calls) == 2:
            stop.set()
        return real(path, **kwargs)

    monkeypatch.setattr(images, "load_image", load)
    got = images.read_batch(paths, 4, 4, stop=stop)
    assert calls == paths[:2] and got.read == [0] and [k for k, _ in got.failed] == [1]
    stop.set()
    assert images.read_batch(paths, 4, 4, stop=stop).read == []
