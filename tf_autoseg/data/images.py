"""Image and mask files to NumPy arrays, validated; the resampling and tiling the pipelines share.

Everything here runs when a dataset is built, so a bad file stops the program before training
starts. The rules, the same for every pipeline in `tf_autoseg.data.core`:

- Errors (`ValueError` naming the file): a file that cannot be decoded (corrupt, truncated,
  not an image); an unsupported mode or depth (1-bit, 32-bit integer, float); a grayscale or
  3-band image where 4 bands are required; a mask whose size differs from its image's by more
  than the tolerance; an index mask holding a value that is neither a class id nor 255; a
  colour mask that is not RGB.
- Conversions, each described by the note that `read_image` / `match_sizes` return (the
  pipelines list them in `DatasetInfo.adjusted`): grayscale is replicated to RGB; an alpha
  channel is dropped (RGBA -> RGB, LA -> L); palette and CMYK/YCbCr images become RGB;
  16-bit samples keep their high byte (`v >> 8`), but a TIFF that declares its range
  (`MaxSampleValue`, e.g. 4095 for 12-bit data) is scaled by it, and 16-bit samples that reach
  only 12 bits or fewer without such a tag (near-black once reduced) are a warning naming the
  file; a mask up to `tolerance` px off its image's size is cropped, with the image, to the
  common top-left region.

TIFF goes through `tifffile`, not Pillow: Pillow silently drops the fourth band of an RGB TIFF
whose extra sample is "unspecified" (how RGB+IR orthophotos are often written) and cannot open
4-band "minisblack" or planar TIFFs at all; `tifffile` reads all of these band for band.

It is the one owner of reading files: every pipeline, segment and the figures decode, convert
and validate images and masks here, by the same rules.
"""

import glob
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

IGNORE = 255
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_TIFF_SUFFIXES = (".tif", ".tiff")
_CONVERTED_MODES = ("P", "PA", "CMYK", "YCbCr", "LAB", "HSV")


def list_files(source, suffixes=IMAGE_SUFFIXES):
    """The files a folder, a glob pattern, or a sequence of either (or of files) names.

    Args:
        source: a folder (its files, not recursive), a glob pattern (`**` recurses), a file,
            or a list/tuple of these.
        suffixes: file name endings to keep (case-insensitive).

    Returns:
        Sorted paths for each entry, in the order of the entries, without duplicates: a file
        reached by several paths (through a symbolic link, or a link loop that `**` follows
        until the system stops it, 40 levels deep) is listed once, by its shortest path.

    Raises:
        ValueError: naming the folder or pattern that does not exist or matches no file.
    """
    entries = [source] if isinstance(source, (str, Path)) else list(source)
    found, seen = [], set()
    for entry in entries:
        text = str(entry)
        if any(c in text for c in "*?["):
            paths = [Path(p) for p in glob.glob(text, recursive=True)]
        elif Path(text).is_dir():
            paths = list(Path(text).iterdir())
        elif Path(text).is_file():
            paths = [Path(text)]
        else:
            raise ValueError(f"No such folder or file: {text}")
        paths = [p for p in paths if p.suffix.lower() in suffixes and p.is_file()]
        if not paths:
            raise ValueError(f"No image files ({', '.join(suffixes)}) in {text}")
        shortest = {}
        for path in sorted(paths, key=lambda p: (len(p.parts), str(p))):
            shortest.setdefault(os.path.realpath(path), path)
        for real, path in sorted(shortest.items(), key=lambda item: item[1]):
            if real not in seen:
                seen.add(real)
                found.append(path)
    return found


def image_size(path):
    """(height, width) from the file's header, without decoding the pixels."""
    path = Path(path)
    try:
        if path.suffix.lower() in _TIFF_SUFFIXES:
            with _tifffile().TiffFile(path) as tif:
                page = tif.pages[0]
                return int(page.imagelength), int(page.imagewidth)
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, SyntaxError, ValueError, IndexError, Image.DecompressionBombError) as error:
        raise ValueError(f"Cannot read the image file {path}: {error}") from error


def read_image(path, channels=3):
    """Decodes an image to uint8 (H, W, C), converting per the module's rules.

    Args:
        path: the file; TIFF (`.tif`, `.tiff`) through `tifffile`, all else through Pillow.
        channels: 3 (RGB: alpha or a fourth band dropped, grayscale replicated), 4 (exactly
            four bands, e.g. RGB+IR; anything else is an error) or None (3, except a 4-band
            TIFF, which keeps its 4 bands).

    Returns:
        (image, note): the uint8 array and a short description of any conversion, or None.

    Raises:
        ValueError: naming the file, when it cannot be decoded or converted.
    """
    path = Path(path)
    if channels not in (None, 3, 4):
        raise ValueError(f"`channels` must be None, 3 or 4. Received: channels={channels!r}")
    if path.suffix.lower() in _TIFF_SUFFIXES:
        array, notes = _read_tiff(path)
    else:
        array, notes = _read_pillow(path)
    bands = array.shape[-1]
    if channels == 4 and bands != 4:
        raise ValueError(f"Expected a 4-band image (e.g. RGB+IR); {path} has {bands} band(s)")
    if bands == 1:
        array = np.repeat(array, 3, axis=-1)
        notes.append("grayscale replicated to RGB")
    elif bands == 2:  # gray + alpha
        array = np.repeat(array[..., :1], 3, axis=-1)
        notes.append("alpha dropped, grayscale replicated to RGB")
    elif bands == 4 and (channels == 3 or (channels is None and not _is_tiff(path))):
        array = array[..., :3]
        notes.append("alpha dropped" if not _is_tiff(path) else "fourth band dropped")
    elif bands > 4:
        raise ValueError(f"Expected at most 4 bands; {path} has {bands}")
    return np.ascontiguousarray(array), ("; ".join(notes) or None)


def read_index_mask(path, num_classes=None):
    """Decodes a single-channel mask of class ids (PNG "L"/"P"/16-bit, or TIFF) to uint8 (H, W).

    Args:
        path: the mask file.
        num_classes: when given, every value must be below it or equal 255 (ignore).

    Returns:
        uint8 (H, W) class ids, 255 = ignore.

    Raises:
        ValueError: naming the file, for a multi-channel mask or an out-of-range value.
    """
    path = Path(path)
    if _is_tiff(path):
        array, _ = _read_tiff(path, keep_depth=True)
    else:
        array, _ = _read_pillow(path, keep_depth=True, palette_as_index=True)
    if array.shape[-1] != 1:
        raise ValueError(
            f"Expected a single-channel index mask; {path} has {array.shape[-1]} channels "
            "(colour-coded masks are read through the table of their colours: `colours`)"
        )
    array = array[..., 0]
    limit = num_classes if num_classes is not None else IGNORE
    bad = np.unique(array[(array >= limit) & (array != IGNORE)])
    if bad.size:
        raise ValueError(
            f"Mask {path} holds values {bad[:8].tolist()} that are neither class ids "
            f"(0..{limit - 1}) nor {IGNORE} (ignore)"
        )
    return array.astype(np.uint8)


def parse_colours(colours):
    """A colour -> class table from a dict or a JSON file.

    Args:
        colours: a dict, or the path of a JSON object, mapping colours ("#RRGGBB", "r,g,b",
            or an (r, g, b) sequence in a dict) to a class id in 0..254, or to 255 or None
            (ignored).

    Returns:
        {packed 0xRRGGBB: class id} as ints.

    Raises:
        ValueError: naming the file or the entry that is not understood.
    """
    source = "`colours`"
    if isinstance(colours, (str, Path)):
        source = str(colours)
        try:
            colours = json.loads(Path(colours).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"Cannot read the colour table {source}: {error}") from error
    if not isinstance(colours, dict) or not colours:
        raise ValueError(f"{source} must be a non-empty mapping of colour to class id")
    table = {}
    for key, value in colours.items():
        value = IGNORE if value is None else value
        if not isinstance(value, int) or not 0 <= value <= IGNORE:
            raise ValueError(f"{source}: class of {key!r} must be 0..255 or None; got {value!r}")
        table[pack_colour(key, source)] = value
    return table


def pack_colour(colour, source="colour"):
    """The int 0xRRGGBB of a colour given as "#RRGGBB", "r,g,b" or (r, g, b)."""
    if isinstance(colour, str) and "," in colour:
        colour = colour.split(",")
    try:
        if isinstance(colour, str):
            text = colour.removeprefix("#")
            if len(text) != 6:
                raise ValueError(colour)
            return int(text, 16)
        r, g, b = (int(c) for c in colour)
        if not all(0 <= c <= 255 for c in (r, g, b)):
            raise ValueError(colour)
        return (r << 16) | (g << 8) | b
    except (TypeError, ValueError) as error:
        raise ValueError(
            f"{source}: colour {colour!r} is not '#RRGGBB', 'r,g,b' or (r, g, b)"
        ) from error


def read_colour_mask(path, table):
    """Decodes a colour-coded mask to uint8 class ids; colours absent from `table` become 255.

    Args:
        path: an RGB (or RGBA, palette) PNG or an RGB TIFF.
        table: {0xRRGGBB: class id} as `parse_colours` makes it.

    Returns:
        uint8 (H, W) class ids, 255 = ignore.
    """
    path = Path(path)
    array, _ = _read_tiff(path) if _is_tiff(path) else _read_pillow(path)
    if array.shape[-1] not in (3, 4):
        raise ValueError(f"Expected an RGB colour mask; {path} has {array.shape[-1]} channel(s)")
    # Bytes B, G, R, 0 read as a little-endian uint32 are 0xRRGGBB: one copy, no wide math.
    bgr0 = np.zeros((*array.shape[:2], 4), np.uint8)
    bgr0[..., :3] = array[..., 2::-1]
    lut = np.full(1 << 24, IGNORE, np.uint8)  # every 24-bit colour: one gather, 16 MB
    lut[list(table)] = list(table.values())
    return lut[bgr0.view("<u4")[..., 0]]


def match_sizes(image, mask, mask_path, tolerance=2):
    """Crops image and mask to their common top-left region when they differ by <= tolerance.

    Returns:
        (image, mask, note): note is None when the sizes already agree.

    Raises:
        ValueError: naming the mask, when a side differs by more than `tolerance` pixels.
    """
    (h, w), (mh, mw) = image.shape[:2], mask.shape[:2]
    if (h, w) == (mh, mw):
        return image, mask, None
    if abs(h - mh) > tolerance or abs(w - mw) > tolerance:
        raise ValueError(
            f"Mask {mask_path} is {mh}x{mw} but its image is {h}x{w} "
            f"(more than {tolerance} px apart)"
        )
    ch, cw = min(h, mh), min(w, mw)
    note = f"mask {mh}x{mw}, image {h}x{w}: both cropped to {ch}x{cw}"
    return image[:ch, :cw], mask[:ch, :cw], note


def downscale_mean(image, factor):
    """Shrinks (H, W, C) uint8 by an integer factor: each output pixel is its block's rounded mean.

    At factor 2 this equals bilinear resizing to half size (what IIC's cv2 call does).
    """
    if factor == 1:
        return image
    h, w = image.shape[0] // factor * factor, image.shape[1] // factor * factor
    area = factor * factor
    sums = np.full(image[:h:factor, :w:factor].shape, area // 2, np.uint32)
    for dy in range(factor):  # strided views: no (H, W, C) wide-integer copy
        for dx in range(factor):
            sums += image[dy:h:factor, dx:w:factor]
    return (sums // area).astype(np.uint8)


def downscale_mode(labels, factor):
    """Shrinks (H, W) class ids by an integer factor: each output is its block's majority id.

    Ties go to the block's top-left pixel (the id nearest-neighbour resizing would pick), so
    ids are never interpolated.
    """
    if factor == 1:
        return labels
    h, w = labels.shape
    h, w = h // factor, w // factor
    blocks = labels[: h * factor, : w * factor].reshape(h, factor, w, factor)
    blocks = blocks.transpose(0, 2, 1, 3).reshape(h, w, factor * factor)
    best, best_score = blocks[..., 0].copy(), np.full((h, w), -1, np.int32)
    for value in np.unique(blocks):
        # Counts doubled, +1 for the top-left pixel: a tie in counts goes to the top-left id.
        score = 2 * (blocks == value).sum(-1, dtype=np.int32) + (blocks[..., 0] == value)
        better = score > best_score
        best[better], best_score[better] = value, score[better]
    return best


def resize(array, height, width, labels=False):
    """Resizes uint8 (H, W, C) bilinearly (Pillow, antialiased) or (H, W) ids by nearest."""
    if array.shape[:2] == (height, width):
        return array
    if labels:
        return np.asarray(Image.fromarray(array).resize((width, height), Image.NEAREST))
    planes = [
        np.asarray(Image.fromarray(array[..., k]).resize((width, height), Image.BILINEAR))
        for k in range(array.shape[-1])
    ]  # one band at a time: Pillow would premultiply a 4th band as alpha
    return np.stack(planes, axis=-1)


# The smallest tile (or training crop) side: below it a tile holds no texture to cluster and
# the network's stride (up to 4) leaves a grid of a pixel or two; `--tile=1` trained on a
# million one-pixel tiles.
MIN_TILE = 8


def cut_tiles(array, tile):
    """Non-overlapping tile x tile pieces of (H, W, ...) in raster order; the remainder is dropped.

    Returns:
        (N, tile, tile, ...) with N = (H // tile) * (W // tile).
    """
    h, w = array.shape[0] // tile, array.shape[1] // tile
    rest = array.shape[2:]
    pieces = array[: h * tile, : w * tile].reshape(h, tile, w, tile, *rest)
    return pieces.swapaxes(1, 2).reshape(h * w, tile, tile, *rest)


# ------------------------------------------------------------------------------------ decoding
def _is_tiff(path):
    return Path(path).suffix.lower() in _TIFF_SUFFIXES


def _tifffile():
    try:
        import tifffile
    except ImportError as error:  # pragma: no cover - a declared dependency
        raise ImportError("Reading TIFF files needs `pip install tifffile`") from error
    return tifffile


# 16-bit samples whose maximum stays below this (12-bit data or less) are near-black once
# reduced to their high byte (at most 15 of 255).
_FEW_BITS = 1 << 12
_WARNED = 10  # files named in a warning each; the rest are in the dataset's notes


def _to_uint8(array, path, notes, keep_depth, max_sample=None):
    """uint8 samples of `array`; `max_sample`: the range a TIFF declares (MaxSampleValue)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.uint16 or array.dtype == np.dtype(">u2"):
        if keep_depth:  # class ids are not intensities: no rescaling
            if array.max(initial=0) > IGNORE:
                raise ValueError(f"Mask {path} holds ids above {IGNORE}")
            return array.astype(np.uint8)
        if max_sample is not None and IGNORE <= max_sample < 65535:  # its declared range
            notes.append(f"16-bit samples of range 0-{max_sample} scaled to 8-bit")
            scaled = np.minimum(array, max_sample).astype(np.uint32) * 255
            return ((scaled + max_sample // 2) // max_sample).astype(np.uint8)
        peak = int(array.max(initial=0))
        if 0 < peak < _FEW_BITS:
            note = (
                f"16-bit reduced to 8-bit (high byte), but its samples reach only {peak} of "
                f"65535 (12-bit data or less?): it is nearly black (at most {peak >> 8} of "
                "255). Rescale the file to 16 bits or 8 bits, or declare its range in the TIFF "
                "tag MaxSampleValue"
            )
            _warn(f"{path}: {note}.")
        else:
            note = "16-bit reduced to 8-bit (high byte)"
        notes.append(note)
        return (array >> 8).astype(np.uint8)
    raise ValueError(f"Unsupported sample type {array.dtype} in {path} (expected 8 or 16 bit)")


def _warn(message):
    from absl import logging

    logging.log_first_n(logging.WARNING, "%s", _WARNED, message)


def _read_pillow(path, keep_depth=False, palette_as_index=False):
    notes = []
    try:
        with Image.open(path) as image:
            # The raw mode tells a 16-bit PNG apart once Pillow has reduced it to 8-bit RGB(A).
            if any(";16" in str(tile[3]) for tile in image.tile) and image.mode in ("RGB", "RGBA"):
                notes.append("16-bit reduced to 8-bit (high byte)")
            image.load()
            mode = image.mode
            if mode in _CONVERTED_MODES and not (palette_as_index and mode == "P"):
                target = "RGBA" if mode == "PA" or "transparency" in image.info else "RGB"
                image = image.convert(target)
                notes.append(f"{mode} converted to RGB")
            elif mode not in ("L", "LA", "RGB", "RGBA", "P") and not mode.startswith("I;16"):
                if not (keep_depth and mode == "I"):
                    raise ValueError(f"unsupported image mode {mode!r}")
            array = np.asarray(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ValueError(f"Cannot decode the image file {path}: {error}") from error
    if mode == "I":
        if array.min(initial=0) < 0 or array.max(initial=0) > IGNORE:
            raise ValueError(f"Mask {path} holds ids outside 0..{IGNORE}")
        array = array.astype(np.uint8)
    array = _to_uint8(array, path, notes, keep_depth)
    return (array[..., None] if array.ndim == 2 else array), notes


def _read_tiff(path, keep_depth=False):
    tifffile = _tifffile()
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            array, axes = page.asarray(), page.axes
            max_sample = page.tags.get("MaxSampleValue")
            max_sample = _declared(max_sample.value) if max_sample is not None else None
    except (tifffile.TiffFileError, OSError, ValueError, KeyError, IndexError) as error:
        hint = (
            " (install `imagecodecs` for this compression)" if "imagecodecs" in str(error) else ""
        )
        raise ValueError(f"Cannot decode the TIFF file {path}: {error}{hint}") from error
    if array.ndim == 3 and axes.startswith("S"):  # planar: one plane per band
        array = np.moveaxis(array, 0, -1)
    if array.ndim not in (2, 3):
        raise ValueError(f"Unsupported TIFF layout {axes} {array.shape} in {path}")
    notes = []
    array = _to_uint8(array, path, notes, keep_depth, max_sample)
    return (array[..., None] if array.ndim == 2 else array), notes


def _declared(value):
    """The largest of a MaxSampleValue tag's values (one per band, or one), or None."""
    values = value if isinstance(value, (tuple, list)) else (value,)
    try:
        return max(int(v) for v in values)
    except (TypeError, ValueError):
        return None
