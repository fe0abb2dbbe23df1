"""What image files hold, from their headers: the fast check of a streamed set before training.

`scan` reads every file's header (format, mode, size) and checks its end, in threads, without
decoding pixels, and names every file that cannot be streamed: unreadable, truncated (no PNG
IEND chunk, no JPEG end-of-image marker in its last 4 KB), a format TensorFlow cannot decode
(TIFF and others: `python -m tf_autoseg.prepare` converts them), or a mode the pipelines do
not accept. A file damaged in its middle passes the header pass: `check="decode"` (what the
training program runs) decodes every file once as well, with the in-memory pipelines' reader,
so that every path refuses the same files. Each `Header` carries the note of the
conversion `tf_autoseg.data.images.read_image` applies to such a file (grey to RGB, alpha dropped),
which `tf.io.decode_png` / `decode_jpeg` reproduce.
"""

import concurrent.futures
import dataclasses
import os
from pathlib import Path

from PIL import Image

from tf_autoseg import arguments
from tf_autoseg.data import images as imageio

STREAMED_FORMATS = ("PNG", "JPEG")
CHECKS = ("header", "decode")
# Bytes read from the end of each file to find its end marker.
_TAIL = 4096
_PNG_MODES = ("L", "LA", "RGB", "RGBA", "P", "PA", "I;16", "I;16B", "I;16L")
_JPEG_MODES = ("L", "RGB")


@dataclasses.dataclass(frozen=True)
class Header:
    """What `scan` learns of an image file without decoding it."""

    path: Path
    height: int
    width: int
    jpeg: bool
    note: str | None  # the conversion `tf_autoseg.data.images.read_image` would describe


def scan(paths, channels=3, check="header", threads=16):
    """Checks every file before training and returns its `Header`; a fast pass for large sets.

    Each file's header is read (format, mode, size) and its end checked (PNG: the IEND chunk;
    JPEG: the end-of-image marker in its last 4 KB), in `threads` threads. With
    `check="decode"` every file is also decoded once, in threads, by the reader of the in-memory
    pipelines (`tf_autoseg.data.images.read_image`): the training program's default.

    Args:
        paths: the image files.
        channels: 3, 4 (4 bands required: an RGBA PNG) or None (= 3 here).
        check: "header" or "decode".
        threads: files read at once.

    Returns:
        One `Header` per path, in order.

    Raises:
        ValueError: naming every bad file (up to 20, and how many more) and why.
    """
    arguments.choice("check", check, CHECKS)
    arguments.choice("channels", channels, (None, 3, 4))
    paths = [Path(p) for p in paths]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        found = list(pool.map(lambda p: _header(p, channels or 3), paths))
    bad = {str(p): why for p, why in zip(paths, found) if isinstance(why, str)}
    if check == "decode" and not bad:
        bad = _decode_failures(found, channels or 3, threads)
    if bad:
        listed = "; ".join(f"{path}: {why}" for path, why in list(bad.items())[:20])
        more = f" (and {len(bad) - 20} more)" if len(bad) > 20 else ""
        raise ValueError(f"{len(bad)} bad image file(s) of {len(paths)}{more}: {listed}")
    return found


def _header(path, channels):
    """A `Header`, or the reason the file cannot be streamed."""
    try:
        with Image.open(path) as image:
            kind, mode, (width, height) = image.format, image.mode, image.size
            sixteen = any(";16" in str(tile[3]) for tile in image.tile)
            transparent = "transparency" in image.info
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"cannot read the image header ({error})"
    if kind not in STREAMED_FORMATS:
        return (
            f"a {kind} file: streaming decodes {' and '.join(STREAMED_FORMATS)} only; convert "
            "the set once with `python -m tf_autoseg.prepare`"
        )
    if mode not in (_PNG_MODES if kind == "PNG" else _JPEG_MODES):
        return f"unsupported {kind} mode {mode!r} for streaming"
    try:
        with open(path, "rb") as file:
            file.seek(max(0, os.path.getsize(path) - _TAIL))
            tail = file.read()
    except OSError as error:
        return f"cannot read the file ({error})"
    if kind == "PNG" and b"IEND" not in tail:
        return "truncated or corrupt: no IEND chunk at the end of the PNG"
    if kind == "JPEG" and b"\xff\xd9" not in tail:
        return "truncated or corrupt: no end-of-image marker at the end of the JPEG"
    notes, bands = [], {"LA": 2, "RGB": 3, "RGBA": 4}.get(mode, 1)  # I;16 and L: 1
    if mode in ("P", "PA"):
        notes.append(f"{mode} converted to RGB")
        bands = 4 if mode == "PA" or transparent else 3
    if mode.startswith("I;16") or (sixteen and mode in ("RGB", "RGBA")):
        notes.append("16-bit reduced to 8-bit (high byte)")
    if channels == 4 and bands != 4:
        return f"expected a 4-band image (e.g. RGB+IR); it has {bands} band(s)"
    if bands == 1:
        notes.append("grayscale replicated to RGB")
    elif bands == 2:
        notes.append("alpha dropped, grayscale replicated to RGB")
    elif bands == 4 and channels == 3:
        notes.append("alpha dropped")
    return Header(Path(path), height, width, kind == "JPEG", "; ".join(notes) or None)


def _decode_failures(headers, channels, threads=16):
    """{path: reason} for the files the in-memory reader refuses (`images.read_image`, Pillow):
    one decoder decides for every path, so a file refused in memory is refused streamed."""

    def failure(header):
        try:
            imageio.read_image(header.path, channels)
        except ValueError as error:
            return str(error)
        return None

    with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # Pillow decodes outside the GIL
        reasons = list(pool.map(failure, headers))
    return {str(h.path): why for h, why in zip(headers, reasons) if why is not None}
