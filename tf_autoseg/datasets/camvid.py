"""CamVid street scenes (SegNet's 480x360 preparation): `load(path, split, num_classes)`.

The Cambridge-driving Labeled Video Database as `images/<split>-<stem>.jpg` with
`labels/<split>-<stem>.png` (one channel of class ids 0..10, 255 = void): sky, building, pole,
road, pavement, tree, sign-symbol, fence, car, pedestrian, bicyclist. `num_classes=3` is the
"stuff" reading that IIC uses for COCO-Stuff-3: sky (sky), ground (road + pavement), plant
(tree); every other class is ignored. Training reads the `train-*` frames without labels;
`val-*` frames come from 0016E5, the sequence of most training frames, so they reward
memorising it: `sequences` picks frames by video sequence instead (train on some, score on
another). See `tf_autoseg.datasets.folder` for the pipeline.
"""

from pathlib import Path

from tf_autoseg import arguments
from tf_autoseg.data import images as imageio
from tf_autoseg.data.prepared import Reader
from tf_autoseg.data.prepared import tiled_part
from tf_autoseg.datasets import folder
from tf_autoseg.datasets.catalog import Dataset

CLASSES11 = ("sky", "building", "pole", "road", "pavement", "tree", "sign-symbol", "fence",
             "car", "pedestrian", "bicyclist")  # fmt: skip
CLASSES3 = ("sky", "ground", "plant")
# CamVid id -> class id of the 3-class reading (255 = ignored).
MERGE3 = (0, 255, 255, 1, 1, 2, 255, 255, 255, 255, 255)
SPLITS = ("train", "val", "test")
NUM_CLASSES = (3, 11)
# The video sequences of the train and val frames (the stem's prefix): 0001TP (62 train
# frames), 0006R0 (101), 0016E5 (204 train, 101 val).
SEQUENCES = ("0001TP", "0006R0", "0016E5")


def frames(path, split="train", sequences=None):
    """The glob patterns of one part's frames: `<split>-*`, or with `sequences` the frames of
    those video sequences from every split (train and val), `split` then unused."""
    arguments.choice("split", split, SPLITS)
    images = Path(path) / "images"
    if not sequences:
        return [str(images / f"{split}-*")]
    _check_sequences(sequences)
    return [str(images / f"*-{sequence}_*") for sequence in sequences]


def _check_sequences(sequences):
    for sequence in sequences:
        arguments.choice("sequences", sequence, SEQUENCES)


def _checked(path, num_classes):
    """`path` as a Path, once the class count and the frames folder are checked."""
    arguments.choice("num_classes", num_classes, NUM_CLASSES)
    path = Path(path)
    if not (path / "images").is_dir():
        raise ValueError(f"No CamVid frames: {path / 'images'} is not a folder")
    return path


def load(
    path,
    split="train",
    num_classes=3,
    *,
    tile=None,
    downsample=1,
    labels=False,
    sequences=None,
    **options,
):
    """One split of CamVid, as tiles for training or whole frames for evaluation.

    Args:
        path: the folder holding `images/` and `labels/`.
        split: "train", "val" or "test": the frames named `<split>-*`.
        num_classes: 3 (sky, ground, plant) or 11.
        tile: cut frames into tile x tile pieces (remainder dropped); None: whole frames.
        downsample: shrink frames (block mean; labels block majority) this many times first.
        labels: yield (images, labels) instead of images.
        sequences: video sequences (of `SEQUENCES`) whose frames to read, from every split;
            None: the `<split>-*` frames.
        **options: the keywords of `tf_autoseg.data.core.PipelineOptions`; `augment` flips
            left-right only (street scenes have an up).

    Returns:
        (dataset, info).
    """
    path = _checked(path, num_classes)
    return folder.load(
        frames(path, split, sequences),
        lambda image: path / "labels" / f"{image.stem}.png",
        label_map=MERGE3 if num_classes == 3 else range(11),
        num_classes=num_classes,
        class_names=CLASSES3 if num_classes == 3 else CLASSES11,
        tile=tile,
        downsample=downsample,
        labels=labels,
        **options,
    )


def streamed(
    path, split="train", num_classes=3, *, tile=None, downsample=1, sequences=None, **options
):
    """`load` for training, streamed: the `<split>-*` frames (or those of
    `sequences`), flipped left-right.

    `options`: those of `tf_autoseg.data.stream.folder`.
    """
    from tf_autoseg.data import stream  # TensorFlow: loaded only to stream

    path = _checked(path, num_classes)
    return stream.folder(
        frames(path, split, sequences),
        tile=tile,
        downsample=downsample,
        num_classes=num_classes,
        class_names=CLASSES3 if num_classes == 3 else CLASSES11,
        **options,
    )


# ------------------------------------------------------------ the programs' dataset
def read_part(data, labels, options):
    """The in-memory part of `data` (see `tf_autoseg.datasets.Dataset`).

    Training cuts the train frames (of `sequences`) into crops; labelled parts are whole
    frames: the val frames of the eval part, or the train frames (of `sequences`).
    """
    return load(
        data.data_dir, split="train" if data.part == "train" else "val",
        num_classes=data.num_classes, tile=None if labels else data.tile,
        downsample=data.downsample, sequences=data.sequences, labels=labels, **options,
    )  # fmt: skip


def streamed_part(data, options, split, small):
    """The streamed training frames, or None when they fit in memory."""
    if small(frames(data.data_dir, "train", data.sequences), data.downsample):
        return None
    return streamed(data.data_dir, "train", data.num_classes, sequences=data.sequences,
                    tile=data.tile, downsample=data.downsample, check=data.file_check, **options,
                    **split)  # fmt: skip


def prepared_parts(train, held_out, work_dir):
    """(parts, manifest fields) that `python -m tf_autoseg.prepare` writes (see
    `tf_autoseg.datasets.Dataset`), from the files' headers: training tiles, whole val frames."""
    root, k = Path(train.data_dir), train.num_classes
    arguments.choice("num_classes", k, NUM_CLASSES)
    label_map = MERGE3 if k == 3 else tuple(range(11))
    reader = Reader(mask_format="index", label_map=label_map)
    parts = {}
    for part, split, data in (("train", "train", train), ("eval", "val", held_out)):
        found = imageio.list_files(frames(root, split, data.sequences))
        pairs = [(f, root / "labels" / f"{f.stem}.png") for f in found]
        parts[part] = tiled_part(pairs, reader, data.tile, data.downsample, False,
                                 whole=part == "eval")  # fmt: skip
    names = CLASSES3 if k == 3 else CLASSES11
    return parts, dict(num_classes=k, class_names=names)


def check_part(data):
    """CamVid's own checks of `data` (see `tf_autoseg.datasets.Dataset`): its sequences."""
    _check_sequences(data.sequences)


DATASET = Dataset("camvid", read_part, num_classes=NUM_CLASSES, downsample=True,
                  streamed=streamed_part, prepared=prepared_parts, checks=check_part)  # fmt: skip
