"""CamVid street scenes (SegNet's 480x360 preparation): `load(path, split, classes)`.

The Cambridge-driving Labeled Video Database as `images/<split>-<stem>.jpg` with
`labels/<split>-<stem>.png` (one channel of class ids 0..10, 255 = void): sky, building, pole,
road, pavement, tree, sign-symbol, fence, car, pedestrian, bicyclist. `classes=3` is the
"stuff" reading that IIC uses for COCO-Stuff-3: sky (sky), ground (road + pavement), plant
(tree); every other class is ignored. Training reads the `train-*` frames without labels;
settings are chosen on `val-*`. See `tf_autoseg.folder` for the pipeline.
"""

from pathlib import Path

from tf_autoseg import arguments
from tf_autoseg import folder

CLASSES11 = ("sky", "building", "pole", "road", "pavement", "tree", "sign-symbol", "fence",
             "car", "pedestrian", "bicyclist")  # fmt: skip
CLASSES3 = ("sky", "ground", "plant")
# CamVid id -> class id of the 3-class reading (255 = ignored).
MERGE3 = (0, 255, 255, 1, 1, 2, 255, 255, 255, 255, 255)
SPLITS = ("train", "val", "test")
NUM_CLASSES = (3, 11)


def load(
    path,
    split="train",
    classes=3,
    *,
    tile=None,
    downsample=1,
    labels=False,
    **options,
):
    """One split of CamVid, as tiles for training or whole frames for evaluation.

    Args:
        path: the folder holding `images/` and `labels/`.
        split: "train", "val" or "test": the frames named `<split>-*`.
        classes: 3 (sky, ground, plant) or 11.
        tile: cut frames into tile x tile pieces (remainder dropped); None: whole frames.
        downsample: shrink frames (block mean; labels block majority) this many times first.
        labels: yield (images, labels) instead of images.
        **options: the keywords of `tf_autoseg.data.PipelineOptions`; `augment` flips
            left-right only (street scenes have an up).

    Returns:
        (dataset, info).
    """
    arguments.choice("split", split, SPLITS)
    arguments.choice("classes", classes, NUM_CLASSES)
    path = Path(path)
    if not (path / "images").is_dir():
        raise ValueError(f"No CamVid frames: {path / 'images'} is not a folder")
    return folder.load(
        str(path / "images" / f"{split}-*"),
        lambda image: path / "labels" / f"{image.stem}.png",
        label_map=MERGE3 if classes == 3 else range(11),
        num_classes=classes,
        class_names=CLASSES3 if classes == 3 else CLASSES11,
        tile=tile,
        downsample=downsample,
        labels=labels,
        **options,
    )
