"""Input pipelines: each returns `(dataset, info)`, a batched `tf.data.Dataset` and a `DatasetInfo`.

- `synthetic`: textured scenes with known labels, made from a seed (quickstart, tests).
- `potsdam`: ISPRS Potsdam as IIC prepares it, from the raw release (4-band TIFFs, colour
  labels) or from a folder of cut PNG crops (`img_dir/`, `ann_dir/`).
- `cocostuff`: COCO-Stuff-15 / -3 with IIC's curation.
- `folder`: any images, optionally with index or colour masks; `dubai` builds on it.

The dataset yields uint8 images (B, H, W, C), or `(images, labels)` with `labels=True`:
int32 (B, H, W), 255 = ignore. Training never reads labels: with `labels=False` no label file
is opened. Files are decoded and validated when the dataset is built (errors name the file, see
`tf_autoseg.images`); the prepared examples are held in memory, which is the cache. Order,
crops and flips come from stateless draws on `seed`: the same seed gives the same batches,
and each repeated epoch is reshuffled the same way.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import tensorflow as tf

from tf_autoseg import images as imageio

IGNORE = imageio.IGNORE


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetInfo:
    """What a pipeline yields.

    Attributes:
        num_classes: ground-truth classes (None for unlabelled folders without a class count).
        channels: image channels (3 = RGB, 4 = RGB+IR).
        class_names: one name per class id.
        ignore_index: label value of pixels left out of the loss and the evaluation.
        num_examples: examples in one epoch, before batching.
        skipped: file -> reason, for files left out by a documented rule (too small for the
            crop, curated out, no label file).
        adjusted: file -> what was done, for files read with a documented conversion
            (grayscale to RGB, alpha dropped, 16 to 8 bit, mask cropped to its image).
    """

    num_classes: int | None
    channels: int
    class_names: tuple[str, ...]
    ignore_index: int = IGNORE
    num_examples: int
    skipped: dict[str, str] = dataclasses.field(default_factory=dict)
    adjusted: dict[str, str] = dataclasses.field(default_factory=dict)


# Per class: base RGB colour, stripe orientation (radians) and period (pixels).
# Colours are close and noise is strong, so a pixel's colour alone is ambiguous
# and the texture around it matters.
_PALETTE = np.array(
    [
        [0.55, 0.45, 0.35],
        [0.35, 0.55, 0.45],
        [0.45, 0.35, 0.55],
        [0.50, 0.50, 0.30],
        [0.30, 0.45, 0.60],
        [0.60, 0.35, 0.45],
    ],
    np.float32,
)
_ORIENTATION = np.array([0.0, np.pi / 2, np.pi / 4, 3 * np.pi / 4, np.pi / 8, 5 * np.pi / 8])
_PERIOD = np.array([4.0, 6.0, 8.0, 5.0, 7.0, 9.0])
MAX_SYNTHETIC_CLASSES = len(_PALETTE)


def synthetic_scenes(num_images, size=64, num_classes=3, regions=6, noise=0.08, seed=0):
    """Textured scenes: a Voronoi partition whose cells each take one class.

    Each class has its own colour, stripe orientation and period; pixel noise
    is added. Every class is present in every image when `regions >=
    num_classes`.

    Args:
        num_images: number of images (>= 1).
        size: height and width.
        num_classes: 2 to 6.
        regions: Voronoi cells per image.
        noise: standard deviation of the Gaussian pixel noise.
        seed: the only source of randomness.

    Returns:
        (images, labels): float32 (N, size, size, 3) in [0, 1] and int32 (N, size, size).
    """
    if not 2 <= num_classes <= MAX_SYNTHETIC_CLASSES:
        raise ValueError(
            f"`num_classes` must be in [2, {MAX_SYNTHETIC_CLASSES}] for synthetic scenes. "
            f"Received: num_classes={num_classes}"
        )
    if num_images < 1 or size < 4 or regions < 1:
        raise ValueError(
            "`num_images` >= 1, `size` >= 4 and `regions` >= 1 are required. Received: "
            f"num_images={num_images}, size={size}, regions={regions}"
        )
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    images = np.empty((num_images, size, size, 3), np.float32)
    labels = np.empty((num_images, size, size), np.int32)
    for n in range(num_images):
        centres = rng.uniform(0, size, size=(regions, 2))
        distance = (rows[..., None] - centres[:, 0]) ** 2 + (cols[..., None] - centres[:, 1]) ** 2
        cell = distance.argmin(-1)
        cell_class = rng.permutation(np.resize(np.arange(num_classes), regions))
        label = cell_class[cell]
        angle = _ORIENTATION[label]
        phase = (rows * np.sin(angle) + cols * np.cos(angle)) * 2 * np.pi / _PERIOD[label]
        stripes = 0.15 * np.sin(phase)[..., None]
        image = _PALETTE[label] + stripes + rng.normal(0, noise, (size, size, 3))
        images[n] = np.clip(image, 0.0, 1.0)
        labels[n] = label
    return images, labels


def synthetic_dataset(num_images, size=64, num_classes=3, batch_size=8, seed=0, labels=False):
    """`synthetic_scenes` as a batched, cached, prefetched `tf.data.Dataset`.

    Yields images only, or (images, labels) with `labels=True`.
    """
    images, masks = synthetic_scenes(num_images, size, num_classes, seed=seed)
    elements = (images, masks) if labels else images
    dataset = tf.data.Dataset.from_tensor_slices(elements).cache()
    return dataset.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def synthetic(
    num_images,
    size=64,
    num_classes=3,
    *,
    batch_size=8,
    seed=0,
    labels=False,
    shuffle=True,
    repeat=False,
    drop_remainder=True,
    augment=False,
):
    """`synthetic_scenes` in the common `(dataset, info)` form, images as uint8.

    Args:
        num_images, size, num_classes: as in `synthetic_scenes`.
        batch_size, seed, labels, shuffle, repeat, drop_remainder, augment: see `folder`.
            `seed` makes the scenes as well as the order and flips.

    Returns:
        (dataset, info): the same for the same seed, different across seeds.
    """
    images, masks = synthetic_scenes(num_images, size, num_classes, seed=seed)
    images = np.round(images * 255).astype(np.uint8)
    dataset = _pipeline(
        images,
        masks.astype(np.uint8) if labels else None,
        **_common(batch_size, seed, shuffle, repeat, drop_remainder, augment),
    )
    names = tuple(f"class {k}" for k in range(num_classes))
    info = DatasetInfo(
        num_classes=num_classes, channels=3, class_names=names, num_examples=len(images)
    )
    return dataset, info


# ----------------------------------------------------------------------------------- Potsdam
POTSDAM_CLASSES = ("impervious surfaces", "building", "low vegetation", "tree", "car", "clutter")
POTSDAM_COLOURS = {
    "#FFFFFF": 0,
    "#0000FF": 1,
    "#00FFFF": 2,
    "#00FF00": 3,
    "#FFFF00": 4,
    "#FF0000": 5,
}
POTSDAM3_CLASSES = ("roads and cars", "buildings and clutter", "vegetation and trees")
# Potsdam-6 id -> Potsdam-3 id, IIC's merge: road+car, building+clutter, low vegetation+tree.
POTSDAM6_TO_3 = (0, 1, 2, 2, 0, 1)


def potsdam(
    path,
    split="train",
    classes=6,
    *,
    crop=400,
    size=200,
    test_fraction=0.1,
    split_seed=0,
    channels=None,
    batch_size=8,
    seed=0,
    labels=False,
    shuffle=True,
    repeat=False,
    drop_remainder=True,
    augment=False,
):
    """ISPRS Potsdam as IIC prepares it: non-overlapping `crop` px crops shrunk to `size` px.

    Two layouts under `path`:
    - the raw release: `top_potsdam_<row>_<col>_RGBIR.tif` (4-band 8-bit TIFF, at any depth
      below `path`) with colour-coded `top_potsdam_<row>_<col>_label.tif`: impervious
      (255,255,255), building (0,0,255), low vegetation (0,255,255), tree (0,255,0), car
      (255,255,0), clutter (255,0,0); any other colour is 255 (ignored);
    - cut crops: `img_dir/**/*.png` with index labels `ann_dir/**/<same name>.png` (0..5 in the
      order above, 255 ignored). The PNGs of that layout carry RGB only: `info.channels` is 3
      there and there is no IR band.

    Images shrink by block averaging (at a factor of 2, exactly bilinear half-size resizing as
    IIC does), labels by block majority with ties to the block's top-left pixel: ids are never
    interpolated. A source image smaller than `crop` is skipped (in `info.skipped`); the
    remainder of each image beyond a whole number of crops is dropped.

    The split is over crops, as IIC's: a permutation drawn from `split_seed` holds out
    round(test_fraction x labelled crops) labelled crops as "test"; "train" is every other crop,
    including those of images without a label file when `labels=False`; "all" is every crop.

    Args:
        path: the folder.
        split: "train", "test" or "all".
        classes: 6 (Potsdam-6) or 3 (Potsdam-3: IIC's merge, see `POTSDAM6_TO_3`).
        crop, size: crop side in source pixels and output side; `crop` a multiple of `size`.
        test_fraction, split_seed: the held-out share of labelled crops and its seed (kept
            apart from `seed`, so that reshuffling never moves crops between splits).
        channels: None (as stored: 4 for the raw TIFFs), 3 (RGB) or 4 (required).
        batch_size, seed, labels, shuffle, repeat, drop_remainder, augment: see `folder`;
            `augment` flips left-right and up-down.

    Returns:
        (dataset, info).
    """
    _choose("split", split, ("train", "test", "all"))
    _choose("classes", classes, (6, 3))
    if not (isinstance(crop, int) and isinstance(size, int) and size >= 1 and crop % size == 0):
        raise ValueError(
            f"`crop` must be a positive multiple of `size`. Received: crop={crop!r}, size={size!r}"
        )
    if not 0 <= test_fraction < 1:
        raise ValueError(f"`test_fraction` must be in [0, 1). Received: {test_fraction!r}")
    path = Path(path)
    sources = _potsdam_sources(path)
    skipped, adjusted, crops = {}, {}, []
    for s, (image_path, _, _) in enumerate(sources):
        h, w = imageio.image_size(image_path)
        if h < crop or w < crop:
            skipped[str(image_path)] = f"{h}x{w} is smaller than the {crop}x{crop} crop"
        crops += [(s, y * crop, x * crop) for y in range(h // crop) for x in range(w // crop)]
    labelled = [i for i, (s, _, _) in enumerate(crops) if sources[s][1] is not None]
    held_out = np.random.default_rng(split_seed).permutation(len(labelled))
    test = {labelled[k] for k in held_out[: round(test_fraction * len(labelled))]}
    chosen = [i for i in range(len(crops)) if split == "all" or (i in test) == (split == "test")]
    if labels:
        for s in sorted({crops[i][0] for i in chosen if sources[crops[i][0]][1] is None}):
            skipped[str(sources[s][0])] = "no label file"
        chosen = [i for i in chosen if sources[crops[i][0]][1] is not None]
    if not chosen:
        raise ValueError(
            f"No {split!r} crops of {crop}x{crop} px in {path} "
            f"({len(crops)} crops in all, {len(labelled)} labelled)"
        )

    factor = crop // size
    lut = np.full(256, IGNORE, np.uint8)
    lut[:6] = POTSDAM6_TO_3 if classes == 3 else range(6)
    table = imageio.parse_colours(POTSDAM_COLOURS)
    xs, ys, bands = [], [], None
    for s in sorted({crops[i][0] for i in chosen}):
        image_path, label_path, colour_labels = sources[s]
        image, note = imageio.read_image(image_path, channels)
        if note:
            adjusted[str(image_path)] = note
        bands = bands or image.shape[-1]
        if image.shape[-1] != bands:
            raise ValueError(f"{image_path} has {image.shape[-1]} bands, earlier images {bands}")
        if labels:
            if colour_labels:
                mask = imageio.read_colour_mask(label_path, table)
            else:
                mask = imageio.read_index_mask(label_path, num_classes=6)
            image, mask, _ = imageio.match_sizes(image, mask, label_path, tolerance=0)
        for _, top, left in (crops[i] for i in chosen if crops[i][0] == s):
            window = np.s_[top : top + crop, left : left + crop]
            xs.append(imageio.downscale_mean(image[window], factor))
            if labels:
                ys.append(lut[imageio.downscale_mode(mask[window], factor)])
    dataset = _pipeline(
        np.stack(xs),
        np.stack(ys) if labels else None,
        vertical_flip=True,
        **_common(batch_size, seed, shuffle, repeat, drop_remainder, augment),
    )
    info = DatasetInfo(
        num_classes=classes,
        channels=bands,
        class_names=POTSDAM_CLASSES if classes == 6 else POTSDAM3_CLASSES,
        num_examples=len(xs),
        skipped=skipped,
        adjusted=adjusted,
    )
    return dataset, info


def _potsdam_sources(path):
    """[(image path, label path or None, labels colour-coded?)] in name order."""
    if not path.is_dir():
        raise ValueError(f"No such folder: {path}")
    if (path / "img_dir").is_dir():
        root = path / "img_dir"
        found = imageio.list_files(str(root / "**" / "*"), (".png", ".tif", ".tiff"))
        sources = []
        for image_path in found:
            label_path = (path / "ann_dir" / image_path.relative_to(root)).with_suffix(".png")
            sources.append((image_path, label_path if label_path.is_file() else None, False))
        return sources
    found = sorted(path.rglob("top_potsdam_*_RGBIR.tif"))
    if not found:
        raise ValueError(
            f"No Potsdam data in {path}: expected img_dir/ and ann_dir/, or "
            "top_potsdam_<row>_<col>_RGBIR.tif tiles"
        )
    label_files = {
        p.name.removesuffix("_label.tif"): p for p in path.rglob("top_potsdam_*_label.tif")
    }
    return [(p, label_files.get(p.name.removesuffix("_RGBIR.tif")), True) for p in found]


# -------------------------------------------------------------------------------- COCO-Stuff
COCOSTUFF3 = ("sky", "plant", "ground")  # IIC's order (datasets/segmentation/cocostuff.py)


def cocostuff_classes(categories, classes=15):
    """Maps COCO-Stuff label values (category id - 1) to COCO-Stuff-15 or -3 classes.

    COCO-Stuff-15: the 15 stuff supercategories of `categories.json` (isthing 0; the catch-all
    "other" left out) in alphabetical order: building, ceiling, floor, food-stuff,
    furniture-stuff, ground, plant, raw-material, sky, solid, structural, textile, wall, water,
    window. COCO-Stuff-3: IIC's sky, plant, ground (0, 1, 2), exactly those supercategories:
    sky = clouds, sky-other; plant = branch, bush, flower, grass, leaves, moss, plant-other,
    straw, tree; ground = dirt, gravel, ground-other, mud, pavement, platform, playingfield,
    railroad, road, sand, snow. Everything else (things, other stuff such as solid or water,
    unlabelled 255) maps to 255.

    Args:
        categories: path of `categories.json` (entries with id, name, supercategory, isthing).
        classes: 15 or 3.

    Returns:
        (lut, class_names): uint8 lut[256] from label value to class id or 255.
    """
    _choose("classes", classes, (15, 3))
    try:
        entries = json.loads(Path(categories).read_text())
        stuff = sorted(
            {e["supercategory"] for e in entries if not e["isthing"]} - {"other"},
        )
        ids = [(int(e["id"]), e["supercategory"], e["isthing"]) for e in entries]
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(f"Cannot read COCO-Stuff categories from {categories}: {error}") from error
    names = tuple(stuff) if classes == 15 else COCOSTUFF3
    if (classes == 15 and len(stuff) != 15) or not set(names) <= set(stuff):
        raise ValueError(f"{categories}: expected the 15 stuff supercategories, found {stuff}")
    lut = np.full(256, IGNORE, np.uint8)
    for category_id, supercategory, isthing in ids:
        if not isthing and supercategory in names and 1 <= category_id <= IGNORE:
            lut[category_id - 1] = names.index(supercategory)
    return lut, names


def cocostuff_curated(path, split="train", classes=15, *, min_side=360, min_target_share=0.75):
    """IIC's curated image list for a split, made once from its label files.

    Keeps images whose shorter side is >= `min_side` and at least `min_target_share` of whose
    pixels (of all pixels, unlabelled included, as IIC counts) are target classes. This is the
    preparation step that reads labels; a training pipeline given the list opens none.

    Returns:
        (stems, skipped): the kept file stems, and image path -> reason for the others.
    """
    lut, _ = cocostuff_classes(Path(path) / "categories.json", classes)
    stems, skipped = [], {}
    for image_path in imageio.list_files(Path(path) / f"{split}_img"):
        label = imageio.read_index_mask(_coco_label_path(path, split, image_path))
        reason = _coco_reason(label.shape, min_side, label, lut, min_target_share)
        if reason:
            skipped[str(image_path)] = reason
        else:
            stems.append(image_path.stem)
    return tuple(stems), skipped


def cocostuff(
    path,
    split="train",
    classes=15,
    *,
    crop=128,
    scale=1 / 3,
    min_side=360,
    min_target_share=0.75,
    curated=None,
    random_crop=None,
    batch_size=8,
    seed=0,
    labels=False,
    shuffle=True,
    repeat=False,
    drop_remainder=True,
    augment=False,
):
    """COCO-Stuff-15 / -3 with IIC's curation: `<split>_img/*.jpg`, `<split>_label/*.png`.

    Label PNGs are stuffthingmaps (value = category id - 1, 255 = unlabelled), mapped by
    `cocostuff_classes`; thing, non-target and unlabelled pixels are 255. Curation: images
    with a shorter side below `min_side`, or with less than `min_target_share` target pixels,
    are skipped (in `info.skipped`). Kept images are scaled by `scale` (images bilinear,
    labels nearest) and cropped to `crop` px: randomly for training, centred otherwise; an
    image smaller than the crop after scaling is skipped (IIC zero-pads it instead).

    Training never reads labels: with `labels=False` no label file is opened, so the share
    rule needs `curated`, the list `cocostuff_curated` makes from the labels once; without it
    `min_target_share` must be 0.

    Args:
        path: the folder with `categories.json`, `<split>_img/` and `<split>_label/`.
        split: "train" or "val".
        classes: 15 or 3.
        crop, scale, min_side, min_target_share: IIC's 128, 1/3, 360, 0.75 by default.
        curated: file stems to keep (a sequence, or a text file with one per line).
        random_crop: True for random crops (drawn from `seed` per epoch); default
            `not labels`: random for training, centred for evaluation.
        batch_size, seed, labels, shuffle, repeat, drop_remainder, augment: see `folder`;
            `augment` flips left-right only.

    Returns:
        (dataset, info).
    """
    _choose("split", split, ("train", "val"))
    if not (isinstance(crop, int) and crop >= 1 and 0 < scale <= 1):
        raise ValueError(f"Need crop >= 1 and 0 < scale <= 1. Received: {crop=}, {scale=}")
    path = Path(path)
    lut, names = cocostuff_classes(path / "categories.json", classes)
    if not labels and curated is None and min_target_share > 0:
        raise ValueError(
            "`min_target_share` needs the label files, which a labels=False (training) "
            "pipeline never opens: pass curated=cocostuff_curated(path, split, classes)[0] "
            f"or min_target_share=0. Received: min_target_share={min_target_share}"
        )
    keep = None if curated is None else set(_read_stems(curated))
    random_crop = not labels if random_crop is None else random_crop
    skipped, adjusted, xs, ys = {}, {}, [], []
    for image_path in imageio.list_files(path / f"{split}_img"):
        if keep is not None and image_path.stem not in keep:
            skipped[str(image_path)] = "not in `curated`"
            continue
        size = imageio.image_size(image_path)
        if labels:
            label_path = _coco_label_path(path, split, image_path)
            label = imageio.read_index_mask(label_path)
            reason = _coco_reason(label.shape, min_side, label, lut, min_target_share)
        else:
            reason = _coco_reason(size, min_side)
        h, w = (round(n * scale) for n in size)
        if not reason and min(h, w) < crop:
            reason = f"{h}x{w} after scale={scale:g} is smaller than the {crop}x{crop} crop"
        if reason:
            skipped[str(image_path)] = reason
            continue
        image, note = imageio.read_image(image_path, channels=3)
        if note:
            adjusted[str(image_path)] = note
        if labels:
            imageio.match_sizes(image, label, label_path, tolerance=0)
            ys.append(lut[imageio.resize(label, h, w, labels=True)])
        xs.append(imageio.resize(image, h, w))
    if not xs:
        raise ValueError(f"No image of {path / f'{split}_img'} passes the curation: {skipped}")

    shapes = np.array([x.shape[:2] for x in xs], np.int32)
    if random_crop:  # pad to one size; each crop is drawn inside the image's own region
        images = np.zeros((len(xs), *shapes.max(0), 3), np.uint8)
        masks = np.full(images.shape[:3], IGNORE, np.uint8) if labels else None
        for k, (x, (h, w)) in enumerate(zip(xs, shapes)):
            images[k, :h, :w] = x
            if labels:
                masks[k, :h, :w] = ys[k]
    else:
        offsets = [((h - crop) // 2, (w - crop) // 2) for h, w in shapes]
        images = np.stack([x[t : t + crop, u : u + crop] for x, (t, u) in zip(xs, offsets)])
        masks = (
            np.stack([y[t : t + crop, u : u + crop] for y, (t, u) in zip(ys, offsets)])
            if labels
            else None
        )
    dataset = _pipeline(
        images,
        masks,
        crop=crop if random_crop else None,
        shapes=shapes,
        **_common(batch_size, seed, shuffle, repeat, drop_remainder, augment),
    )
    info = DatasetInfo(
        num_classes=classes,
        channels=3,
        class_names=names,
        num_examples=len(xs),
        skipped=skipped,
        adjusted=adjusted,
    )
    return dataset, info


def _coco_label_path(path, split, image_path):
    label_path = Path(path) / f"{split}_label" / f"{image_path.stem}.png"
    if not label_path.is_file():
        raise ValueError(f"No label file {label_path} for {image_path}")
    return label_path


def _coco_reason(shape, min_side, label=None, lut=None, min_target_share=0.0):
    """Why IIC's curation drops an image, or None."""
    if min(shape) < min_side:
        return f"shorter side {min(shape)} < min_side={min_side}"
    if label is not None and min_target_share > 0:
        share = np.count_nonzero(lut[label] != IGNORE) / label.size
        if share < min_target_share:
            return f"target share {share:.3f} < min_target_share={min_target_share}"
    return None


def _read_stems(curated):
    if isinstance(curated, (str, Path)):
        try:
            return [line.strip() for line in Path(curated).read_text().splitlines() if line.strip()]
        except OSError as error:
            raise ValueError(f"Cannot read the curated list {curated}: {error}") from error
    return [str(stem) for stem in curated]


# ------------------------------------------------------------------------ folders, Dubai
def folder(
    images,
    masks=None,
    *,
    mask_format="index",
    colours=None,
    num_classes=None,
    class_names=None,
    tile=None,
    size_tolerance=2,
    channels=3,
    vertical_flip=False,
    batch_size=8,
    seed=0,
    labels=False,
    shuffle=True,
    repeat=False,
    drop_remainder=True,
    augment=False,
):
    """Any images, for training without labels, or with masks for evaluation.

    Args:
        images: a folder (its image files), a glob pattern, or a list of folders, patterns
            or files.
        masks: a folder holding each image's mask under the image's stem (`.png` first), or a
            function from image path to mask path. Opened only with `labels=True`.
        mask_format: "index" (one channel of class ids, 255 = ignore) or "colour" (RGB,
            mapped by `colours`; colours it does not list become 255).
        colours: for "colour": a dict or a JSON file mapping "#RRGGBB" (or "r,g,b") to a
            class id, or to 255 / null for ignored colours.
        num_classes: classes: mask values must be below it or 255. Default: the largest class
            id of `colours` + 1, or for index masks the largest id they hold + 1 (None when
            `labels=False`: no mask is read).
        class_names: one per class; default "0", "1", ...
        tile: cut images (and masks) into non-overlapping tile x tile pieces, dropping the
            remainder; an image smaller than a tile is skipped (in `info.skipped`). None:
            whole images, which must then all have one size.
        size_tolerance: a mask up to this many pixels off its image's size is cropped, with
            the image, to the common size (in `info.adjusted`); beyond it, an error.
        channels: 3 (default), 4 or None; see `tf_autoseg.images.read_image`.
        vertical_flip: with `augment`, flip up-down as well (overhead imagery).
        batch_size: examples per batch.
        seed: the order, crops and flips; the same seed gives the same batches.
        labels: yield (images, labels) instead of images.
        shuffle: a new seeded order every epoch; else file order, tiles in raster order.
        repeat: repeat forever.
        drop_remainder: drop the last incomplete batch.
        augment: random left-right flips (and up-down with `vertical_flip`).

    Returns:
        (dataset, info).
    """
    _choose("mask_format", mask_format, ("index", "colour"))
    if tile is not None and not (isinstance(tile, int) and tile >= 1):
        raise ValueError(f"`tile` must be None or a positive int. Received: tile={tile!r}")
    table = None
    if mask_format == "colour" and colours is not None:
        table = imageio.parse_colours(colours)
        class_ids = [v for v in table.values() if v != IGNORE]
        if num_classes is None and class_ids:
            num_classes = max(class_ids) + 1
    if labels and masks is None:
        raise ValueError("labels=True needs `masks`: a folder or a function image -> mask path")
    if labels and mask_format == "colour" and table is None:
        raise ValueError("mask_format='colour' needs `colours`, a dict or a JSON file")
    paths = imageio.list_files(images)
    xs, ys, skipped, adjusted = [], [], {}, {}
    for image_path in paths:
        if tile is not None:
            h, w = imageio.image_size(image_path)
            if h < tile or w < tile:
                skipped[str(image_path)] = f"{h}x{w} is smaller than the {tile}x{tile} tile"
                continue
        image, note = imageio.read_image(image_path, channels)
        notes = [note] if note else []
        if labels:
            mask_path = _mask_path(masks, image_path)
            if mask_format == "colour":
                mask = imageio.read_colour_mask(mask_path, table)
            else:
                mask = imageio.read_index_mask(mask_path, num_classes)
            image, mask, note = imageio.match_sizes(image, mask, mask_path, size_tolerance)
            notes += [note] if note else []
        if notes:
            adjusted[str(image_path)] = "; ".join(notes)
        if xs and image.shape[-1] != xs[0].shape[-1]:
            raise ValueError(
                f"{image_path} has {image.shape[-1]} channels, earlier images {xs[0].shape[-1]}"
            )
        if tile is None and xs and image.shape != xs[0].shape[1:]:
            raise ValueError(
                f"{image_path} is {image.shape[0]}x{image.shape[1]}, {paths[0]} "
                f"{xs[0].shape[1]}x{xs[0].shape[2]}: pass `tile` to cut images of several sizes"
            )
        pieces = imageio.cut_tiles(image, tile) if tile else image[None]
        if not len(pieces):  # the mask crop took it below one tile
            h, w = image.shape[:2]
            skipped[str(image_path)] = f"{h}x{w} once cropped to its mask is below one tile"
            continue
        xs.append(pieces)
        if labels:
            ys.append(imageio.cut_tiles(mask, tile) if tile else mask[None])
    if not xs:
        raise ValueError(f"No usable image in {images}: {skipped}")
    if labels and num_classes is None:  # index masks: the largest id they hold, + 1
        num_classes = int(max(np.max(y, initial=0, where=y != IGNORE) for y in ys)) + 1
    dataset = _pipeline(
        np.concatenate(xs),
        np.concatenate(ys) if labels else None,
        vertical_flip=vertical_flip,
        **_common(batch_size, seed, shuffle, repeat, drop_remainder, augment),
    )
    if class_names is None and num_classes is not None:
        class_names = tuple(str(k) for k in range(num_classes))
    info = DatasetInfo(
        num_classes=num_classes,
        channels=xs[0].shape[-1],
        class_names=tuple(class_names or ()),
        num_examples=sum(len(x) for x in xs),
        skipped=skipped,
        adjusted=adjusted,
    )
    return dataset, info


def _mask_path(masks, image_path):
    if callable(masks):
        mask_path = Path(masks(image_path))
        if not mask_path.is_file():
            raise ValueError(f"No mask {mask_path} for {image_path}")
        return mask_path
    if not Path(masks).is_dir():
        raise ValueError(f"No such mask folder: {masks}")
    for suffix in (".png", *imageio.IMAGE_SUFFIXES):
        mask_path = Path(masks) / f"{image_path.stem}{suffix}"
        if mask_path.is_file():
            return mask_path
    raise ValueError(f"No mask for {image_path} in {masks} (expected {image_path.stem}.png)")


DUBAI_IGNORED = ("Unlabeled",)


def dubai(
    path,
    tiles=(1, 2, 3, 4, 5, 6, 7, 8),
    *,
    tile=200,
    size_tolerance=2,
    batch_size=8,
    seed=0,
    labels=False,
    shuffle=True,
    repeat=False,
    drop_remainder=True,
    augment=False,
):
    """Dubai aerial imagery (MBRSC, Humans in the Loop) through `folder`.

    "Semantic segmentation of aerial imagery": `tile-N/images/*.jpg` with colour masks
    `tile-N/masks/<stem>.png`. Classes (Dubai-5) are those of `classes.json` in its order,
    "Unlabeled" left out: Water, Land (unpaved area), Road, Building, Vegetation. Unlabeled
    (#9B9B9B) and any colour the file does not list (a little pure black) are 255. Masks a
    pixel or two larger than their image are cropped with it to the common size (in
    `info.adjusted`); more than `size_tolerance` px is an error naming the mask.

    Args:
        path: the folder with `classes.json` and `tile-1` ... `tile-8`.
        tiles: which `tile-N` folders to read.
        tile: side of the pieces the images are cut into (remainder dropped).
        size_tolerance, batch_size, seed, labels, shuffle, repeat, drop_remainder, augment:
            see `folder`; `augment` flips left-right and up-down.

    Returns:
        (dataset, info).
    """
    path = Path(path)
    try:
        entries = json.loads((path / "classes.json").read_text())["classes"]
        colours = {e["color"]: None if e["title"] in DUBAI_IGNORED else e["title"] for e in entries}
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise ValueError(
            f"Cannot read the Dubai classes from {path / 'classes.json'}: {error}"
        ) from error
    names = tuple(title for title in colours.values() if title is not None)
    colours = {
        colour: None if title is None else names.index(title) for colour, title in colours.items()
    }
    folders = [path / f"tile-{t}" / "images" for t in tiles]
    for images in folders:
        if not images.is_dir():
            raise ValueError(f"No such folder: {images}")
    return folder(
        folders,
        lambda image_path: image_path.parent.parent / "masks" / f"{image_path.stem}.png",
        mask_format="colour",
        colours=colours,
        num_classes=len(names),
        class_names=names,
        tile=tile,
        size_tolerance=size_tolerance,
        vertical_flip=True,
        **_common(batch_size, seed, shuffle, repeat, drop_remainder, augment),
        labels=labels,
    )


# ------------------------------------------------------------------------------ the pipeline
def _common(batch_size, seed, shuffle, repeat, drop_remainder, augment):
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive int. Received: batch_size={batch_size!r}"
        )
    if not isinstance(seed, (int, np.integer)):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    return dict(
        batch_size=int(batch_size),
        seed=int(seed),
        shuffle=bool(shuffle),
        repeat=bool(repeat),
        drop_remainder=bool(drop_remainder),
        augment=bool(augment),
    )


def _choose(name, value, accepted):
    if value not in accepted:
        raise ValueError(f"`{name}` must be one of {accepted}. Received: {name}={value!r}")


def _pipeline(
    images,
    labels,
    *,
    batch_size,
    seed,
    shuffle,
    repeat,
    drop_remainder,
    augment,
    vertical_flip=False,
    crop=None,
    shapes=None,
):
    """Batches in-memory examples in a seeded order, with optional random crops and flips.

    Every draw is stateless: the order of epoch e comes from (seed, -1 - e), the crop and
    flips of example i in epoch e from (seed, e * N + i). So the same seed gives the same
    batches from any iterator, and a repeated epoch is reshuffled.

    Args:
        images: uint8 (N, H, W, C).
        labels: uint8 (N, H, W), or None.
        crop: with `shapes`, each example is a random crop x crop window of its top-left
            `shapes[i]` region (the rest is padding).
    """
    n = len(images)
    if drop_remainder and not repeat and n < batch_size:
        raise ValueError(
            f"Only {n} examples for batch_size={batch_size}: with drop_remainder=True and "
            "repeat=False the dataset would be empty. Lower `batch_size`, or pass "
            "drop_remainder=False or repeat=True"
        )
    channels = images.shape[-1]
    stacked = images if labels is None else np.concatenate([images, labels[..., None]], -1)
    data = tf.constant(stacked)
    sizes = tf.constant(np.zeros((n, 2), np.int32) if shapes is None else shapes, tf.int32)
    seed = tf.constant(seed, tf.int64)
    height, width = (crop, crop) if crop else images.shape[1:3]

    def epoch_order(epoch):
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            keys = tf.random.stateless_uniform([n], tf.stack([seed, -1 - epoch]))
            order = tf.cast(tf.argsort(keys, stable=True), tf.int64)
        return tf.data.Dataset.from_tensor_slices((tf.fill([n], epoch), order))

    def example(epoch, index):
        x = tf.gather(data, index)
        draws = tf.random.experimental.stateless_split(tf.stack([seed, epoch * n + index]), 3)
        if crop:
            size = tf.gather(sizes, index)
            top, left = (
                tf.random.stateless_uniform([], draws[k], maxval=size[k] - crop + 1, dtype=tf.int32)
                for k in (0, 1)
            )
            x = x[top : top + crop, left : left + crop]
        if augment:
            flips = tf.random.stateless_uniform([2], draws[2]) < 0.5
            x = tf.cond(flips[0], lambda: tf.reverse(x, [1]), lambda: x)
            if vertical_flip:
                x = tf.cond(flips[1], lambda: tf.reverse(x, [0]), lambda: x)
        x = tf.ensure_shape(x, (height, width, stacked.shape[-1]))
        if labels is None:
            return x
        return x[..., :channels], tf.cast(x[..., channels], tf.int32)

    epochs = tf.data.Dataset.counter() if repeat else tf.data.Dataset.range(1)
    dataset = epochs.flat_map(epoch_order)
    dataset = dataset.map(example, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    # flat_map hides the length; stating it gives Keras its steps per epoch.
    batches = n // batch_size if drop_remainder else -(-n // batch_size)
    length = tf.data.INFINITE_CARDINALITY if repeat else batches
    return dataset.apply(tf.data.experimental.assert_cardinality(length)).prefetch(tf.data.AUTOTUNE)
