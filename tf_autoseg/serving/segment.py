"""Writes label maps and colour overlays for images of any size.

    python -m tf_autoseg.segment --model <SavedModel, run dir or .keras> \\
        --input <image, folder or glob> --output <dir>

Per image `<stem>_labels.png` (cluster ids as grey levels, 8-bit, or 16-bit
past 255 clusters) and `<stem>_overlay.png`. With a mapping of clusters to named classes
(`tf_autoseg.serving.classes`: an export's own, `--classes_json`, or a run's `classes.json`),
the label maps hold class ids (ignored clusters 255), overlays take the classes' colours and
`legend.png` names them. Images larger than `--tile` are
processed in overlapping tiles whose borders (`--overlap` pixels) are
discarded, so every kept pixel was computed with its whole neighbourhood:
no seams where tiles meet. The model is loaded by `tf_autoseg.serving.loading`, images are read by
`tf_autoseg.data.images.read_image` (training's reader) and labels are `tf_autoseg.modeling.model.cluster_ids`.
"""

from pathlib import Path

import numpy as np

from tf_autoseg.data import images

ALIGN = 16  # tile origins on multiples of every grid stride the models use


def _starts(length, tile, step):
    """Tile origins along an axis of `length` (a multiple of ALIGN, >= tile)."""
    return sorted(set(range(0, length - tile, step)) | {length - tile})


def check_tiling(tile, overlap):
    """Raises a ValueError unless `tile` and `overlap` are usable (see `segment_probabilities`)."""
    if tile % ALIGN or overlap % 8 or tile <= 2 * overlap:
        raise ValueError(
            f"`tile` must be a multiple of {ALIGN} larger than 2 * `overlap`, and `overlap` a "
            f"multiple of 8. Received: tile={tile}, overlap={overlap}"
        )


def segment_probabilities(predict, image, tile=512, overlap=64, progress=None):
    """(H, W, K) probabilities of one (H, W, C) image, tiled when larger than `tile`.

    Args:
        predict: (1, h, w, C) array -> (1, h, w, K) probabilities.
        image: (H, W, C) uint8 or float array.
        tile: tile side; a multiple of 16, more than `2 * overlap`.
        overlap: pixels discarded at inner tile borders; a multiple of 8.
        progress: called with (tiles done, tiles in all) after each tile of a tiled image.
    """
    check_tiling(tile, overlap)
    height, width = image.shape[:2]
    if height <= tile and width <= tile:
        return np.asarray(predict(image[None]))[0]
    # Pad to whole tiles' worth of aligned pixels; the padding is cropped off at the end.
    size = [max(tile, -(-n // ALIGN) * ALIGN) for n in (height, width)]
    padded = np.pad(image, ((0, size[0] - height), (0, size[1] - width), (0, 0)), mode="reflect")
    step = tile - 2 * overlap
    out = None
    places = [
        (top, left)
        for top in _starts(size[0], min(tile, size[0]), step)
        for left in _starts(size[1], min(tile, size[1]), step)
    ]
    for done, (top, left) in enumerate(places, 1):
        probs = np.asarray(predict(padded[None, top : top + tile, left : left + tile]))[0]
        if out is None:
            out = np.zeros((*size, probs.shape[-1]), np.float32)
        # Keep the centre; at the image's own borders keep up to the edge.
        h, w = probs.shape[:2]
        t, l_ = (0 if top == 0 else overlap), (0 if left == 0 else overlap)
        b = h if top + h == size[0] else h - overlap
        r = w if left + w == size[1] else w - overlap
        out[top + t : top + b, left + l_ : left + r] = probs[t:b, l_:r]
        if progress is not None:
            progress(done, len(places))
    return out[:height, :width]


def list_inputs(pattern):
    """Image files named by a file, a folder (not recursive) or a glob pattern, sorted.

    The suffixes are training's (`tf_autoseg.data.images.IMAGE_SUFFIXES`, TIFF and WebP included).
    """
    try:
        return images.list_files(pattern)
    except ValueError as error:
        raise ValueError(f"--input={pattern!r}: {error}.") from None


def output_stems(files, output):
    """`<output>/<stem>` for each input, refusing two inputs that would write the same files."""
    owners = {}
    for path in files:
        stem = Path(output) / Path(path).stem
        if stem in owners:
            raise ValueError(
                f"{owners[stem]} and {path} would both write {stem}_labels.png: segment them "
                "into separate --output folders, or rename one."
            )
        owners[stem] = path
    return list(owners)


def check_inputs(files, channels):
    """Reads every input once, as segmenting will, so a bad file stops before any output.

    Through `tf_autoseg.data.images.read_image`, as training reads: TIFF (4-band RGB+IR included)
    with tifffile, other formats with Pillow; grayscale replicated, alpha dropped, 16-bit
    reduced to 8-bit; a 4-channel model needs 4-band images. A bad file is a ValueError naming it.
    """
    for path in files:
        images.read_image(path, channels)


def write_outputs(path_stem, image, labels, palette=None):
    """Writes `<stem>_labels.png` and `<stem>_overlay.png`, each atomically.

    `palette`: (N, 3) colours by label id for the overlay (named classes' own colours).
    """
    import tensorflow as tf

    from tf_autoseg import atomic
    from tf_autoseg import visualize

    dtype = tf.uint8 if labels.max(initial=0) < 256 else tf.uint16
    label_png = tf.io.encode_png(tf.cast(labels[..., None], dtype)).numpy()
    rgb = image[..., :3] if image.shape[-1] >= 3 else np.repeat(image[..., :1], 3, -1)
    overlay_png = tf.io.encode_png(visualize.overlay(rgb, labels, palette=palette)).numpy()
    for suffix, payload in (("_labels.png", label_png), ("_overlay.png", overlay_png)):
        atomic.write(f"{path_stem}{suffix}", lambda tmp, p=payload: Path(tmp).write_bytes(p))


def mapping(model, source, flag=None):
    """The `Classes` segmenting `model` (loaded from `source`) uses, or None.

    `flag` (`--classes_json`): a path; "none" for cluster ids; None for the model's own (an
    export's baked-in mapping, else the `classes.json` of `classes.default_path(source)` if
    there is one). Raises a ValueError naming the file when the mapping does not fit the model.
    """
    from tf_autoseg.serving import classes

    if flag is None and getattr(model, "classes", None) is not None:
        return model.classes
    path = classes.named_path(flag, source)
    return None if path is None else classes.for_model(model, path)


def write_legend(output, mapped):
    """Writes `<output>/legend.png`: the colour and name of each class, atomically."""
    import tensorflow as tf

    from tf_autoseg import atomic
    from tf_autoseg import visualize

    palette = mapped.palette()
    entries = [(named.name, palette[named.id]) for named in mapped.classes]
    if mapped.ignored:
        entries.append(("(ignored)", (0, 0, 0)))
    payload = tf.io.encode_png(visualize.legend(entries)).numpy()
    path = Path(output) / "legend.png"
    atomic.write(path, lambda tmp: Path(tmp).write_bytes(payload))
    return path
