"""Shared test set-up: quiet TensorFlow, seeded, float32 unless a test says otherwise."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_policy():
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy("float32")
    yield
    keras.mixed_precision.set_global_policy("float32")


# ------------------------------------------------------------------ data fixtures
# The real fixtures in ../shared/data when present; otherwise small replicas in their layout,
# generated here, so that a fresh clone runs the same tests (on other pixels).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# COCO-Stuff categories (public ids): things, "other", and stuff of each of the 15
# supercategories that COCO-Stuff-15 keeps.
COCO_CATEGORIES = [
    (1, "person", "person", 1), (3, "car", "vehicle", 1), (98, "cabinet", "furniture-stuff", 0),
    (102, "ceiling-other", "ceiling", 0), (104, "cloth", "textile", 0), (106, "clouds", "sky", 0),
    (113, "fence", "structural", 0), (115, "floor-other", "floor", 0),
    (122, "fruit", "food-stuff", 0), (124, "grass", "plant", 0), (128, "house", "building", 0),
    (139, "paper", "raw-material", 0), (149, "road", "ground", 0), (150, "rock", "solid", 0),
    (155, "sea", "water", 0), (157, "sky-other", "sky", 0), (159, "snow", "ground", 0),
    (169, "tree", "plant", 0), (171, "wall-brick", "wall", 0), (181, "window-other", "window", 0),
    (183, "other", "other", 0),
]  # fmt: skip


def _regions(rng, shape, values, cells=4):
    """(h, w) uint8 of rectangular regions, each one of `values`, on a `cells`-square grid."""
    h, w = shape
    grid = rng.choice(values, (cells, cells)).astype(np.uint8)
    rows = np.minimum(np.arange(h) * cells // h, cells - 1)
    cols = np.minimum(np.arange(w) * cells // w, cells - 1)
    return grid[rows][:, cols]


def make_potsdam_crops(root):
    """Potsdam's 512 px crop layout: img_dir/ and ann_dir/ (ids 0-5), one crop, seeded."""
    from PIL import Image

    rng = np.random.default_rng(7)
    ids = _regions(rng, (512, 512), np.arange(6), cells=8)
    ids[rng.random(ids.shape) < 0.02] = rng.integers(0, 6)  # scattered pixels: mixed blocks
    image = np.clip(ids[..., None] * 40 + rng.integers(0, 30, (512, 512, 3)), 0, 255)
    for folder, array in (("img_dir", image.astype(np.uint8)), ("ann_dir", ids)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / folder / "2_10_0_0_512_512.png")
    return root


def make_cocostuff_mini(root):
    """COCO-Stuff's layout (categories.json, {train,val}_{img,label}/), seeded, with images
    that IIC's curation keeps, drops for their size, and drops for their target share."""
    import json

    from PIL import Image

    rng = np.random.default_rng(11)
    root.mkdir(parents=True, exist_ok=True)
    keys = ("id", "name", "supercategory", "isthing")
    (root / "categories.json").write_text(json.dumps([dict(zip(keys, c)) for c in COCO_CATEGORIES]))
    stuff = [c[0] - 1 for c in COCO_CATEGORIES if not c[3] and c[1] != "other"]
    three = [c[0] - 1 for c in COCO_CATEGORIES if c[2] in ("sky", "plant", "ground")]
    things = [c[0] - 1 for c in COCO_CATEGORIES if c[3]]
    sets = {  # name: (height, width, share of thing pixels)
        "val": [(400, 520, 0.0), (300, 500, 0.0), (390, 400, 0.5), (370, 370, 0.0), (420, 600, 0.1)],
        "train": [(400, 540, 0.0), (480, 640, 0.1), (200, 300, 0.0), (450, 450, 0.6)],
    }  # fmt: skip
    for split, shapes in sets.items():
        for k, (h, w, share) in enumerate(shapes):
            label = _regions(rng, (h, w), three if k % 2 == 0 else stuff)  # COCO-Stuff-3 too
            label[rng.random((h, w)) < share] = rng.choice(things)
            image = np.clip(label[..., None] * 1.3 + rng.integers(0, 40, (h, w, 3)), 0, 255)
            stem = f"{split}{k:08d}"
            for folder in (f"{split}_img", f"{split}_label"):
                (root / folder).mkdir(exist_ok=True)
            Image.fromarray(image.astype(np.uint8)).save(root / f"{split}_img" / f"{stem}.jpg")
            Image.fromarray(label).save(root / f"{split}_label" / f"{stem}.png")
    return root


@pytest.fixture(scope="session")
def potsdam_crops(tmp_path_factory):
    """The Potsdam crop fixture: ../shared/data's, else a generated replica."""
    real = SHARED_DATA / "isprs-crops" / "potsdam"
    return real if real.is_dir() else make_potsdam_crops(tmp_path_factory.mktemp("potsdam"))


@pytest.fixture(scope="session")
def cocostuff_mini(tmp_path_factory):
    """The COCO-Stuff fixture: ../shared/data's cocostuff-mini, else a generated replica."""
    real = SHARED_DATA / "cocostuff-mini"
    return real if real.is_dir() else make_cocostuff_mini(tmp_path_factory.mktemp("cocostuff"))


# Dubai's published classes (title, colour); "Unlabeled" is left out of the five.
DUBAI_CLASSES = [("Water", "#E2A929"), ("Land (unpaved area)", "#8429F6"), ("Road", "#6EC1E4"),
                 ("Building", "#3C1098"), ("Vegetation", "#FEDD3A"), ("Unlabeled", "#9B9B9B")]  # fmt: skip


def make_dubai_aerial(root, tiles=8, per_tile=2, shape=(300, 420)):
    """The Dubai layout (classes.json, tile-<n>/images/*.jpg and masks/*.png colour masks)."""
    import json

    from PIL import Image

    rng = np.random.default_rng(13)
    root.mkdir(parents=True, exist_ok=True)
    classes = [{"title": t, "shape": "polygon", "color": c, "geometry_config": {}}
               for t, c in DUBAI_CLASSES]  # fmt: skip
    (root / "classes.json").write_text(json.dumps({"classes": classes, "tags": []}))
    palette = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for _, c in DUBAI_CLASSES])
    for t in range(1, tiles + 1):
        for k in range(1, per_tile + 1):
            ids = _regions(rng, shape, np.arange(len(DUBAI_CLASSES)), cells=6)
            image = np.clip(palette[ids] * 0.6 + rng.integers(0, 60, (*shape, 3)), 0, 255)
            for folder in ("images", "masks"):
                (root / f"tile-{t}" / folder).mkdir(parents=True, exist_ok=True)
            stem = f"image_part_{k:03d}"
            Image.fromarray(image.astype(np.uint8)).save(
                root / f"tile-{t}" / "images" / f"{stem}.jpg"
            )
            Image.fromarray(palette[ids].astype(np.uint8)).save(
                root / f"tile-{t}" / "masks" / f"{stem}.png"
            )
    return root


def make_camvid(root, shape=(120, 160)):
    """CamVid's SegNet layout: images/<split>-<sequence>_<frame>.jpg, labels/ (ids 0-10, 255)."""
    from PIL import Image

    rng = np.random.default_rng(17)
    frames = [("train", "0016E5", 4), ("train", "0006R0", 3), ("train", "0001TP", 3),
              ("val", "0016E5", 2)]  # fmt: skip
    for folder in ("images", "labels"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for split, sequence, count in frames:
        for k in range(count):
            ids = _regions(rng, shape, np.array([*range(11), 255]), cells=5)
            image = np.clip(ids[..., None] * 20 + rng.integers(0, 40, (*shape, 3)), 0, 255)
            stem = f"{split}-{sequence}_{k * 30:06d}"
            Image.fromarray(image.astype(np.uint8)).save(root / "images" / f"{stem}.jpg")
            Image.fromarray(ids).save(root / "labels" / f"{stem}.png")
    return root


@pytest.fixture(scope="session")
def dubai_aerial(tmp_path_factory):
    """The Dubai fixture: ../shared/data's dubai-aerial, else a generated replica."""
    real = SHARED_DATA / "dubai-aerial"
    return real if real.is_dir() else make_dubai_aerial(tmp_path_factory.mktemp("dubai"))


@pytest.fixture(scope="session")
def camvid_trainval(tmp_path_factory):
    """The CamVid fixture: ../shared/data's camvid-trainval, else a generated replica."""
    real = SHARED_DATA / "camvid-trainval"
    return real if real.is_dir() else make_camvid(tmp_path_factory.mktemp("camvid"))
