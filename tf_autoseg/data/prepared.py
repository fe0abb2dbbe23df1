"""What a prepared part is made of: how files are read, and which windows are examples.

`tf_autoseg.training.prepare` writes the parts that each dataset's `prepared` callable
describes (`tf_autoseg.datasets.Dataset`) as TFRecord shards. `Reader` holds the in-memory
pipeline's conversions of one file, `Part` the examples of one part, `tiled_part` the tiles of
(image, mask) files, from their headers. No dataset is named here.
"""

import dataclasses
import hashlib
import json

from tf_autoseg.data import core
from tf_autoseg.data import images as imageio


@dataclasses.dataclass(frozen=True)
class Reader:
    """How a part's files become arrays: the conversions of the in-memory pipeline."""

    channels: int | None = 3
    mask_format: str | None = None  # "colour", "index" or None (no masks)
    colours: dict | None = None  # "#RRGGBB" -> class id or None, for "colour"
    label_map: tuple | None = None  # index masks: own id -> class id (255 ignore)
    num_classes: int | None = None  # index masks: values must be below it or 255
    tolerance: int = 2  # mask size mismatch cropped away, in pixels

    def read(self, image_path, mask_path, scaled):
        """(image, mask or None, note) of one file, scaled to `scaled` (h, w) when given."""
        image, note = imageio.read_image(image_path, self.channels)
        mask = None
        if mask_path is not None:
            if self.mask_format == "colour":
                mask = imageio.read_colour_mask(mask_path, imageio.parse_colours(self.colours))
            elif self.label_map is not None:
                lut = core.label_lut(self.label_map)
                mask = lut[imageio.read_index_mask(mask_path, len(self.label_map))]
            else:
                mask = imageio.read_index_mask(mask_path, self.num_classes)
            image, mask, crop_note = imageio.match_sizes(image, mask, mask_path, self.tolerance)
            note = "; ".join(n for n in (note, crop_note) if n) or None
        if scaled is not None:
            image = imageio.resize(image, *scaled)
            if mask is not None:
                mask = imageio.resize(mask, *scaled, labels=True)
        return image, mask, note


@dataclasses.dataclass
class Part:
    """The examples of one part: each a window of a file (or the whole file), in order.

    Attributes:
        files: [(image path, mask path or None, scaled (h, w) or None)].
        examples: [(file, top, left)].
        window: (h, w) in the file's pixels, or None for whole files.
        factor: each window shrinks this many times (block mean; masks block majority).
        shape: (h, w) of every example, or None when sizes differ (then `crop` is set).
        crop: the training crop side for parts of several sizes.
        vertical_flip: training flips up-down as well.
        skipped: file -> reason, for the files left out by a documented rule.
    """

    files: list
    examples: list
    window: tuple | None
    factor: int
    shape: tuple | None
    reader: Reader
    crop: int | None = None
    vertical_flip: bool = False
    skipped: dict = dataclasses.field(default_factory=dict)

    def digest(self):
        """A fingerprint of the example list: a rerun into the same folder must match it."""
        text = json.dumps([self.files, self.examples, self.window, self.factor], default=str)
        return hashlib.sha256(text.encode()).hexdigest()


def tiled_part(pairs, reader, tile, downsample, vertical_flip, whole=False):
    """A part cutting (image, mask) files into tiles as `tf_autoseg.datasets.folder.load` does (from headers).

    Files smaller than one tile are skipped; with `whole`, each file is one example and all
    must have one size once shrunk.
    """
    d = downsample
    files, examples, skipped, shape = [], [], {}, None
    for image_path, mask_path in pairs:
        h, w = imageio.image_size(image_path)
        if mask_path is not None:  # the pipelines crop both to the common region
            mh, mw = imageio.image_size(mask_path)
            if abs(h - mh) > reader.tolerance or abs(w - mw) > reader.tolerance:
                raise ValueError(
                    f"Mask {mask_path} is {mh}x{mw} but its image is {h}x{w} "
                    f"(more than {reader.tolerance} px apart)"
                )
            h, w = min(h, mh), min(w, mw)
        if whole:
            if shape is not None and (h // d, w // d) != shape:
                raise ValueError(
                    f"{image_path} is {h // d}x{w // d}, earlier images {shape[0]}x{shape[1]}"
                )
            shape = (h // d, w // d)
            examples.append((len(files), 0, 0))
        else:
            corners, reason = core.tile_corners(h, w, tile, d)
            if reason:
                skipped[str(image_path)] = reason
                continue
            examples += [(len(files), top, left) for top, left in corners]
        files.append((str(image_path), None if mask_path is None else str(mask_path), None))
    if not files:
        raise ValueError(f"No usable image: {skipped}")
    window = (shape[0] * d, shape[1] * d) if whole else (tile * d, tile * d)
    shape = shape if whole else (tile, tile)
    return Part(
        files, examples, window, d, shape, reader, vertical_flip=vertical_flip, skipped=skipped
    )
