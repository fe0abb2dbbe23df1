"""Input pipelines: tiling, label mapping, curation, determinism and bad inputs.

The dataset checks read ../shared/data in place, or replicas of its layouts that conftest
generates when it is absent (a fresh clone); the others make their files in tmp_path.
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tifffile
from PIL import Image

from tf_autoseg.data import core
from tf_autoseg.data import images as imageio
from tf_autoseg.datasets import cocostuff
from tf_autoseg.datasets import dubai
from tf_autoseg.datasets import folder
from tf_autoseg.datasets import potsdam
from tf_autoseg.datasets import synthetic

POTSDAM_RGB = {0: (255, 255, 255), 1: (0, 0, 255), 2: (0, 255, 255), 3: (0, 255, 0)}
POTSDAM_RGB.update({4: (255, 255, 0), 5: (255, 0, 0)})


def collect(dataset):
    """One pass over a dataset as NumPy arrays (images, or (images, labels))."""
    batches = [tuple(np.asarray(t) for t in (b if isinstance(b, tuple) else (b,))) for b in dataset]
    parts = [np.concatenate(p) for p in zip(*batches)]
    return parts[0] if len(parts) == 1 else tuple(parts)


def block_mean(image, f):
    h, w, c = image.shape
    sums = image.astype(np.int64).reshape(h // f, f, w // f, f, c).sum((1, 3))
    return ((sums + f * f // 2) // (f * f)).astype(np.uint8)


def pixels(path, mode=None):
    """A file's pixels read directly with Pillow (the reference the pipelines are checked on)."""
    with Image.open(path) as image:
        return np.asarray(image.convert(mode) if mode else image)


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def raw_potsdam(folder, size=800, unlabelled=False):
    """A raw-release-style pair: 4-band RGBIR TIFF (extra sample "unspecified", the band
    Pillow drops) and a colour label TIFF whose quadrants are classes 0..3."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    ids = np.zeros((size, size), np.uint8)
    half = size // 2
    ids[:half, half:], ids[half:, :half], ids[half:, half:] = 1, 2, 3
    ids[0:2, 0:2] = [[1, 4], [1, 1]]  # majority building in the first 2x2 block
    ids[2:4, 0:2] = [[5, 4], [4, 5]]  # a tie: the top-left pixel's id (clutter) wins
    colours = np.array([POTSDAM_RGB[k] for k in range(6)], np.uint8)[ids]
    colours[10:12, 10:12] = (12, 34, 56)  # a colour outside the table: ignored
    folder.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(
        folder / "top_potsdam_2_10_RGBIR.tif", image, photometric="rgb", extrasamples=[0]
    )
    tifffile.imwrite(folder / "top_potsdam_2_10_label.tif", colours, photometric="rgb")
    if unlabelled:
        other = rng.integers(0, 256, (400, 400, 4), dtype=np.uint8)
        tifffile.imwrite(
            folder / "top_potsdam_9_9_RGBIR.tif", other, photometric="rgb", extrasamples=[0]
        )
    return image, ids


# ----------------------------------------------------------------------------------- Potsdam
def test_raw_potsdam_tiff_gives_four_4band_crops_with_the_right_ids(tmp_path):
    image, ids = raw_potsdam(tmp_path)
    dataset, info = potsdam.load(tmp_path, "all", labels=True, batch_size=1, shuffle=False)
    images, labels = collect(dataset)
    assert (info.num_examples, info.channels, info.num_classes) == (4, 4, 6)
    assert images.shape == (4, 200, 200, 4) and images.dtype == np.uint8
    assert labels.shape == (4, 200, 200) and labels.dtype == np.int32
    for k, (top, left) in enumerate([(0, 0), (0, 400), (400, 0), (400, 400)]):
        np.testing.assert_array_equal(
            images[k], block_mean(image[top : top + 400, left : left + 400], 2)
        )
        assert labels[k, 100, 100] == ids[top + 200, left + 200]  # quadrant classes 0, 1, 2, 3
    assert labels[0, 0, 0] == 1  # majority of [[1, 4], [1, 1]]
    assert labels[0, 1, 0] == 5  # tie in [[5, 4], [4, 5]]: the top-left id
    assert labels[0, 5, 5] == 255  # unknown colour

    dataset3, info3 = potsdam.load(tmp_path, "all", 3, labels=True, batch_size=1, shuffle=False)
    _, labels3 = collect(dataset3)
    merge = np.array([0, 1, 2, 2, 0, 1] + [255] * 250)
    np.testing.assert_array_equal(labels3, merge[labels])
    assert [labels3[k, 100, 100] for k in range(4)] == [0, 1, 2, 2]
    assert info3.class_names == potsdam.POTSDAM3_CLASSES


def test_potsdam_split_is_over_crops_seeded_and_disjoint(tmp_path):
    raw_potsdam(tmp_path, unlabelled=True)  # 16 labelled crops at crop=200, 4 unlabelled

    def crops(split, split_seed=0, labels=False):
        dataset, info = potsdam.load(
            tmp_path,
            split,
            crop=200,
            size=100,
            test_fraction=0.25,
            split_seed=split_seed,
            labels=labels,
            batch_size=1,
            shuffle=False,
        )
        return {x.tobytes() for x in (collect(dataset)[0] if labels else collect(dataset))}, info

    everything, _ = crops("all")
    train, test = crops("train")[0], crops("test")[0]
    assert len(everything) == 20 and len(test) == 4 and len(train) == 16
    assert train | test == everything and not train & test
    assert crops("test")[0] == test and crops("test", split_seed=1)[0] != test
    labelled_train, info = crops("train", labels=True)
    assert len(labelled_train) == 12 and list(info.skipped.values()) == ["no label file"]


def test_potsdam_fixture_crop_is_tiled_with_the_fixture_ids(potsdam_crops):
    root = potsdam_crops
    raw_image = pixels(root / "img_dir" / "2_10_0_0_512_512.png")
    raw_ids = pixels(root / "ann_dir" / "2_10_0_0_512_512.png")
    _, info = potsdam.load(root, "all", batch_size=1)
    assert (info.num_examples, info.channels) == (1, 3)  # one 400 crop of 512; RGB, no IR
    dataset, info = potsdam.load(
        root, "all", crop=256, size=128, labels=True, batch_size=1, shuffle=False
    )
    images, labels = collect(dataset)
    assert images.shape == (4, 128, 128, 3) and info.num_examples == 4
    for k, (top, left) in enumerate([(0, 0), (0, 256), (256, 0), (256, 256)]):
        window = np.s_[top : top + 256, left : left + 256]
        np.testing.assert_array_equal(images[k], block_mean(raw_image[window], 2))
        blocks = raw_ids[window].reshape(128, 2, 128, 2).transpose(0, 2, 1, 3).reshape(128, 128, 4)
        uniform = (blocks == blocks[..., :1]).all(-1)
        np.testing.assert_array_equal(labels[k][uniform], blocks[..., 0][uniform])
        assert (blocks == labels[k][..., None]).any(-1).all()  # never an interpolated id
    assert labels[0, 10, 10] == raw_ids[20, 20] and labels[3, 100, 50] == raw_ids[456, 356]
    _, labels3 = collect(
        potsdam.load(root, "all", 3, crop=256, size=128, labels=True, batch_size=1, shuffle=False)[
            0
        ]
    )
    np.testing.assert_array_equal(labels3, np.array([0, 1, 2, 2, 0, 1])[labels])


# -------------------------------------------------------------------------------- COCO-Stuff
def tiny_coco(root, shapes):
    """A COCO-Stuff layout with images only: no label folder at all."""
    categories = [
        {"id": 157, "name": "sky-other", "supercategory": "sky", "isthing": 0},
        {"id": 124, "name": "grass", "supercategory": "plant", "isthing": 0},
        {"id": 149, "name": "road", "supercategory": "ground", "isthing": 0},
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "categories.json").write_text(json.dumps(categories))
    for name, (shape, value) in shapes.items():
        write_png(root / "train_img" / f"{name}.png", np.full(shape, value, np.uint8))


def _category(entries, name):
    return next(e for e in entries if e["name"] == name)["id"] - 1  # label value = id - 1


def test_cocostuff_ids_map_to_the_15_and_3_classes(cocostuff_mini):
    categories = cocostuff_mini / "categories.json"
    entries = json.loads(categories.read_text())
    lut15, names15 = cocostuff.class_map(categories, 15)
    lut3, names3 = cocostuff.class_map(categories, 3)
    assert len(names15) == 15 and "other" not in names15 and names3 == ("sky", "plant", "ground")
    expected = {  # name: (COCO-Stuff-15 class, COCO-Stuff-3 class)
        "sky-other": ("sky", "sky"),
        "clouds": ("sky", "sky"),
        "grass": ("plant", "plant"),
        "tree": ("plant", "plant"),
        "road": ("ground", "ground"),
        "snow": ("ground", "ground"),
        "rock": ("solid", None),
        "sea": ("water", None),
        "wall-brick": ("wall", None),
        "person": (None, None),
        "car": (None, None),
        "other": (None, None),
    }
    for name, (class15, class3) in expected.items():
        value = _category(entries, name)
        assert lut15[value] == (255 if class15 is None else names15.index(class15)), name
        assert lut3[value] == (255 if class3 is None else names3.index(class3)), name
    assert lut15[255] == lut3[255] == 255


def test_cocostuff_pipeline_labels_are_the_mapped_centre_crop(cocostuff_mini):
    root = cocostuff_mini
    dataset, info = cocostuff.load(
        root, "val", 3, scale=1, min_target_share=0, labels=True, batch_size=1, shuffle=False
    )
    images, labels = collect(dataset)
    first = sorted(set((root / "val_img").glob("*.jpg")) - {Path(p) for p in info.skipped})[0]
    raw = pixels(root / "val_label" / f"{first.stem}.png")
    lut, _ = cocostuff.class_map(root / "categories.json", 3)
    top, left = (raw.shape[0] - 128) // 2, (raw.shape[1] - 128) // 2
    np.testing.assert_array_equal(labels[0], lut[raw[top : top + 128, left : left + 128]])
    raw_image = pixels(first)
    np.testing.assert_array_equal(images[0], raw_image[top : top + 128, left : left + 128])
    assert all("min_side=360" in r for r in info.skipped.values())  # share rule off here


def test_cocostuff_curation_is_counted_and_the_same_with_or_without_labels(
    monkeypatch, cocostuff_mini
):
    root = cocostuff_mini
    kept, skipped = cocostuff.curate(root, "val", 15)
    assert len(kept) + len(skipped) == len(list((root / "val_img").glob("*.jpg")))
    assert kept and all("min_side" in r or "target share" in r for r in skipped.values())
    _, with_labels = cocostuff.load(root, "val", 15, labels=True, batch_size=1)
    too_small = {k: v for k, v in with_labels.skipped.items() if k not in skipped}
    assert all("smaller than the 128x128 crop" in v for v in too_small.values())
    assert with_labels.num_examples == len(kept) - len(too_small)

    opened = []
    real_open = Image.open
    monkeypatch.setattr(
        Image, "open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k)
    )
    dataset, info = cocostuff.load(root, "val", 15, curated=kept, batch_size=1)
    assert info.num_examples == with_labels.num_examples == len(collect(dataset))
    assert opened and not [p for p in opened if "_label" in p]  # training never reads labels
    with pytest.raises(ValueError, match="min_target_share"):
        cocostuff.load(root, "val", 15, batch_size=1)  # the share rule needs labels or a list


def test_cocostuff_training_loads_without_any_label_folder(tmp_path):
    tiny_coco(tmp_path, {"0": ((48, 40, 3), 1), "1": ((40, 64, 3), 2), "2": ((20, 20, 3), 3)})
    dataset, info = cocostuff.load(
        tmp_path, "train", 3, crop=32, scale=1, min_side=0, min_target_share=0, batch_size=2
    )
    images = collect(dataset)
    assert images.shape == (2, 32, 32, 3) and info.num_examples == 2
    assert "smaller than the 32x32 crop" in info.skipped[str(tmp_path / "train_img" / "2.png")]
    with pytest.raises(ValueError, match="train_label"):
        cocostuff.load(
            tmp_path, "train", 3, crop=32, scale=1, min_side=0, labels=True, batch_size=2
        )


# ------------------------------------------------------------------------------------- Dubai
DUBAI_IDS = {"#E2A929": 0, "#8429F6": 1, "#6EC1E4": 2, "#3C1098": 3, "#FEDD3A": 4}


def dubai_ids(mask):
    """The raw colour mask decoded by hand: the five classes, anything else 255."""
    rgb = mask[..., :3].astype(np.int64)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    ids = np.full(packed.shape, 255, np.int64)
    for colour, k in DUBAI_IDS.items():
        ids[packed == int(colour[1:], 16)] = k
    return ids


def test_dubai_colours_decode_to_the_five_classes(dubai_aerial):
    root = dubai_aerial
    dataset, info = dubai.load(root, tiles=(1,), labels=True, batch_size=1, shuffle=False)
    images, labels = collect(dataset)
    assert info.class_names == ("Water", "Land (unpaved area)", "Road", "Building", "Vegetation")
    raw = pixels(root / "tile-1" / "masks" / "image_part_001.png", "RGB")
    expected = dubai_ids(raw[:200, :200])
    np.testing.assert_array_equal(labels[0], expected)
    for k in np.unique(expected):  # one pixel of each class present, checked by colour
        r, c = np.argwhere(expected == k)[0]
        colour = "#" + "".join(f"{v:02X}" for v in raw[r, c])
        assert labels[0, r, c] == DUBAI_IDS.get(colour, 255)
    sizes = [pixels(p).shape[:2] for p in sorted((root / "tile-1" / "images").glob("*.jpg"))]
    assert info.num_examples == sum((h // 200) * (w // 200) for h, w in sizes)
    assert images.shape[1:] == (200, 200, 3)


def test_dubai_mask_a_pixel_larger_is_cropped_and_counted_more_is_an_error(tmp_path, dubai_aerial):
    source = dubai_aerial
    shutil.copy(source / "classes.json", tmp_path / "classes.json")
    (tmp_path / "tile-1" / "images").mkdir(parents=True)
    image_path = tmp_path / "tile-1" / "images" / "image_part_001.jpg"
    shutil.copy(source / "tile-1" / "images" / "image_part_001.jpg", image_path)
    raw = pixels(source / "tile-1" / "masks" / "image_part_001.png", "RGB")
    mask_path = write_png(
        tmp_path / "tile-1" / "masks" / "image_part_001.png",
        np.pad(raw, ((0, 1), (0, 2), (0, 0)), "edge"),
    )
    dataset, info = dubai.load(tmp_path, tiles=(1,), tile=None, labels=True, batch_size=1)
    _, labels = collect(dataset)
    assert f"cropped to {raw.shape[0]}x{raw.shape[1]}" in info.adjusted[str(image_path)]
    np.testing.assert_array_equal(labels[0], dubai_ids(raw))
    write_png(mask_path, np.pad(raw, ((0, 5), (0, 0), (0, 0)), "edge"))
    with pytest.raises(ValueError, match="image_part_001.png"):
        dubai.load(tmp_path, tiles=(1,), labels=True, batch_size=1)


# ------------------------------------------------------------------------------ determinism
def test_synthetic_is_identical_for_a_seed_and_differs_across_seeds():
    def run(seed):
        return collect(
            synthetic.load(16, 32, 3, labels=True, batch_size=4, seed=seed, augment=True)[0]
        )

    (a_images, a_labels), (b_images, b_labels) = run(1), run(1)
    info = synthetic.load(16, 32, 3, batch_size=4)[1]
    assert dataclasses.asdict(info)["num_examples"] == 16  # plain data, JSON-friendly
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.num_examples = 3
    np.testing.assert_array_equal(a_images, b_images)
    np.testing.assert_array_equal(a_labels, b_labels)
    assert a_images.dtype == np.uint8 and a_labels.dtype == np.int32
    assert not np.array_equal(run(2)[0], a_images)


def test_pipeline_options_are_one_checked_object_for_every_dataset():
    options = core.PipelineOptions(batch_size=np.int64(4), seed=np.int32(2), shuffle=0)
    assert (options.batch_size, options.seed, options.shuffle) == (4, 2, False)
    assert type(options.batch_size) is int and type(options.seed) is int
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.seed = 3
    with pytest.raises(ValueError, match=r"Received: batch_size=0"):
        synthetic.load(8, 16, batch_size=0)
    with pytest.raises(ValueError, match=r"Received: seed='1'"):
        synthetic.load(8, 16, seed="1")
    with pytest.raises(TypeError, match="batchsize"):  # a misspelt keyword is named, not dropped
        synthetic.load(8, 16, batchsize=4)


def test_dataset_modules_and_their_class_counts_load_without_tensorflow():
    # The training flags are checked against them before TensorFlow starts (datasets.Dataset).
    script = (
        "import sys\n"
        "from tf_autoseg.datasets import camvid, cocostuff, dubai, folder, potsdam, synthetic\n"
        "counts = [m.NUM_CLASSES for m in (camvid, cocostuff, dubai, potsdam, synthetic)]\n"
        "print('tensorflow' in sys.modules, counts)\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, PYTHONPATH=str(root)),
    )  # fmt: skip
    assert result.stdout.split(" ", 1)[0] == "False", result.stdout + result.stderr[-2000:]
    assert "[(3, 11), (15, 3), (5,), (6, 3), (2, 3, 4, 5, 6)]" in result.stdout


def test_same_seed_same_batches_for_folder_and_potsdam(tmp_path):
    rng = np.random.default_rng(0)
    for k in range(6):
        write_png(
            tmp_path / "images" / f"{k}.png", rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        )

    def folder_batches(seed, augment=True):
        dataset, _ = folder.load(
            tmp_path / "images", tile=32, batch_size=4, seed=seed, repeat=True, augment=augment
        )
        return np.stack([np.asarray(b) for b in dataset.take(12)])  # two epochs of 24 tiles

    dataset, info = folder.load(tmp_path / "images", tile=32, batch_size=5)
    assert info.num_examples == 24 and dataset.cardinality() == 4 == len(list(dataset))
    first = folder_batches(3)
    np.testing.assert_array_equal(first, folder_batches(3))
    assert not np.array_equal(first, folder_batches(4))
    # The order alone (no flips): each epoch a seeded permutation, the second one new.
    tiles = collect(folder.load(tmp_path / "images", tile=32, batch_size=4, shuffle=False)[0])
    plain = folder_batches(3, augment=False).reshape(2, 24, 32, 32, 3)
    for epoch in plain:
        assert sorted(x.tobytes() for x in epoch) == sorted(x.tobytes() for x in tiles)
    assert not np.array_equal(plain[0], tiles) and not np.array_equal(plain[0], plain[1])
    np.testing.assert_array_equal(plain, folder_batches(3, augment=False).reshape(plain.shape))
    assert not np.array_equal(plain, folder_batches(4, augment=False).reshape(plain.shape))

    raw_potsdam(tmp_path / "potsdam")

    def potsdam_batches(seed):
        dataset, _ = potsdam.load(
            tmp_path / "potsdam",
            "all",
            crop=200,
            size=100,
            labels=True,
            batch_size=4,
            seed=seed,
            augment=True,
        )
        return collect(dataset)

    (x1, y1), (x2, y2) = potsdam_batches(5), potsdam_batches(5)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, potsdam_batches(6)[0])


def test_random_crops_stay_inside_each_image_and_follow_the_seed(tmp_path):
    tiny_coco(tmp_path, {"a": ((40, 40, 3), 7), "b": ((40, 90, 3), 9)})

    def run(seed):
        return collect(
            cocostuff.load(
                tmp_path,
                num_classes=3,
                crop=32,
                scale=1,
                min_side=0,
                min_target_share=0,
                batch_size=1,
                seed=seed,
                repeat=True,
            )[0].take(20)
        )

    crops = run(0)
    assert set(np.unique(crops)) <= {7, 9}  # never the zero padding of the smaller image
    np.testing.assert_array_equal(crops, run(0))


# ------------------------------------------------------------------------------- bad inputs
def test_bad_image_files_raise_errors_naming_the_file(tmp_path):
    good = np.zeros((32, 32, 3), np.uint8)
    write_png(tmp_path / "a" / "good.png", good)
    (tmp_path / "a" / "corrupt.png").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="corrupt.png"):
        folder.load(tmp_path / "a", batch_size=1)
    write_png(tmp_path / "b" / "whole.png", good)
    payload = (tmp_path / "b" / "whole.png").read_bytes()
    (tmp_path / "b" / "truncated.png").write_bytes(payload[: len(payload) // 2])
    with pytest.raises(ValueError, match="truncated.png"):
        folder.load(tmp_path / "b", batch_size=1)


def test_documented_conversions_are_applied_and_listed(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    gray = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    deep = rng.integers(0, 65536, (16, 16), dtype=np.uint16)
    write_png(tmp_path / "0_rgb.png", rgb)
    write_png(tmp_path / "1_gray.png", gray)
    write_png(tmp_path / "2_rgba.png", np.dstack([rgb, np.full((16, 16), 9, np.uint8)]))
    write_png(tmp_path / "3_deep.png", deep)
    with Image.open(tmp_path / "3_deep.png") as stored:
        assert stored.mode == "I;16"
    dataset, info = folder.load(tmp_path / "*.png", batch_size=1, shuffle=False)
    images = collect(dataset)
    np.testing.assert_array_equal(images[0], rgb)
    np.testing.assert_array_equal(images[1], np.dstack([gray] * 3))
    np.testing.assert_array_equal(images[2], rgb)
    np.testing.assert_array_equal(images[3], np.dstack([deep >> 8] * 3).astype(np.uint8))
    notes = {Path(k).name: v for k, v in info.adjusted.items()}
    assert set(notes) == {"1_gray.png", "2_rgba.png", "3_deep.png"}
    assert "grayscale" in notes["1_gray.png"] and "alpha dropped" in notes["2_rgba.png"]
    assert "16-bit" in notes["3_deep.png"]
    write_png(tmp_path / "gray" / "only.png", gray)
    with pytest.raises(ValueError, match="only.png has 1 band"):
        folder.load(tmp_path / "gray", channels=4, batch_size=1)  # 4 bands required: no guessing


def test_12_bit_data_in_16_bit_tiffs_is_scaled_by_its_range_or_named_in_a_warning(tmp_path, caplog):
    ramp = (np.arange(32 * 32).reshape(32, 32) * 4).astype(np.uint16)  # 0..4092: 12 bits
    rgb = np.dstack([ramp, ramp // 2, ramp // 4])
    declared = tmp_path / "declared.tif"
    tifffile.imwrite(declared, rgb, photometric="rgb", extratags=[(281, "H", 1, 4095, False)])
    image, note = imageio.read_image(declared)
    expected = np.round(rgb.astype(np.float64) * 255 / 4095).astype(np.uint8)
    np.testing.assert_array_equal(image, expected)  # its real range: not near-black
    assert image.max() == 255 and "range 0-4095 scaled to 8-bit" in note
    bare = tmp_path / "bare.tif"
    tifffile.imwrite(bare, rgb, photometric="rgb")
    with caplog.at_level("WARNING"):
        image, note = imageio.read_image(bare)
    np.testing.assert_array_equal(image, (rgb >> 8).astype(np.uint8))  # as before, but said
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and str(bare) in warned[0] and "nearly black" in warned[0], warned
    assert "reach only 4092 of 65535" in note
    full = tmp_path / "full.tif"  # 16-bit data over its whole range: the high byte, quietly
    tifffile.imwrite(full, (rgb.astype(np.uint32) * 16).astype(np.uint16), photometric="rgb")
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert imageio.read_image(full)[1] == "16-bit reduced to 8-bit (high byte)"
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_image_smaller_than_the_tile_is_a_counted_skip(tmp_path):
    write_png(tmp_path / "big.png", np.zeros((70, 64, 3), np.uint8))
    write_png(tmp_path / "small.png", np.zeros((20, 64, 3), np.uint8))
    _, info = folder.load(tmp_path, tile=32, batch_size=1)
    assert info.num_examples == 4  # 2x2 tiles of big.png, its 6-row remainder dropped
    assert info.skipped == {str(tmp_path / "small.png"): "20x64 is smaller than the 32x32 tile"}


def test_downsample_shrinks_images_by_block_mean_and_masks_by_majority(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (70, 66, 3), dtype=np.uint8)
    mask = rng.integers(0, 3, (70, 66), dtype=np.uint8)
    mask[:2, :2] = [[2, 1], [1, 1]]  # a block whose majority (1) is not its top-left id
    write_png(tmp_path / "images" / "x.png", image)
    write_png(tmp_path / "masks" / "x.png", mask)
    write_png(tmp_path / "images" / "y.png", image[:40])  # 20 rows once halved: below a tile
    dataset, info = folder.load(
        tmp_path / "images", tmp_path / "masks", tile=32, downsample=2, labels=True,
        num_classes=3, batch_size=1, shuffle=False,
    )  # fmt: skip
    images, labels = collect(dataset)
    assert info.num_examples == 1 and images.shape == (1, 32, 32, 3)  # 35x33 after halving
    np.testing.assert_array_equal(images[0], block_mean(image[:64, :64], 2))
    np.testing.assert_array_equal(labels[0], imageio.downscale_mode(mask[:64, :64], 2))
    assert labels[0, 0, 0] == 1
    reason = "40x66 is smaller than the 32x32 tile once shrunk 2 times"
    assert info.skipped == {str(tmp_path / "images" / "y.png"): reason}
    with pytest.raises(ValueError, match="`downsample` must be a positive int"):
        folder.load(tmp_path / "images", downsample=0, batch_size=1)


def test_mask_errors_name_the_file(tmp_path):
    write_png(tmp_path / "images" / "x.png", np.zeros((32, 32, 3), np.uint8))
    mask = write_png(tmp_path / "masks" / "x.png", np.zeros((40, 32), np.uint8))
    with pytest.raises(ValueError, match=r"masks/x.png is 40x32 but its image is 32x32"):
        folder.load(
            tmp_path / "images", tmp_path / "masks", num_classes=2, labels=True, batch_size=1
        )
    write_png(mask, np.full((32, 32), 7, np.uint8))
    with pytest.raises(ValueError, match=r"masks/x.png holds values \[7\]"):
        folder.load(
            tmp_path / "images", tmp_path / "masks", num_classes=2, labels=True, batch_size=1
        )
    (tmp_path / "masks" / "x.png").unlink()
    with pytest.raises(ValueError, match="No mask for .*x.png"):
        folder.load(
            tmp_path / "images", tmp_path / "masks", num_classes=2, labels=True, batch_size=1
        )
    write_png(mask, np.array([[0, 3], [255, 0]], np.uint8).repeat(16, 0).repeat(16, 1))
    dataset, info = folder.load(tmp_path / "images", tmp_path / "masks", labels=True, batch_size=1)
    assert info.num_classes == 4 and set(np.unique(collect(dataset)[1])) == {0, 3, 255}
    # labels=False never looks at masks, even a folder that does not exist
    _, info = folder.load(tmp_path / "images", tmp_path / "missing", batch_size=1)
    assert info.num_examples == 1


def test_colour_masks_map_through_a_json_table(tmp_path):
    write_png(tmp_path / "images" / "x.png", np.zeros((8, 8, 3), np.uint8))
    mask = np.zeros((8, 8, 3), np.uint8)
    mask[:4] = (255, 0, 0)
    mask[4:, :4] = (0, 0, 255)
    write_png(tmp_path / "masks" / "x.png", mask)
    (tmp_path / "colours.json").write_text(
        json.dumps({"#FF0000": 1, "0,0,255": None, "#000000": 0})
    )
    dataset, info = folder.load(
        tmp_path / "images",
        tmp_path / "masks",
        mask_format="colour",
        colours=tmp_path / "colours.json",
        labels=True,
        batch_size=1,
    )
    _, labels = collect(dataset)
    assert info.num_classes == 2
    assert labels[0, 0, 0] == 1 and labels[0, 7, 0] == 255 and labels[0, 7, 7] == 0


@pytest.mark.parametrize("make", ["empty", "missing"])
def test_empty_or_missing_folder_is_an_error_naming_it(tmp_path, make):
    target = tmp_path / "nothing_here"
    if make == "empty":
        target.mkdir()
    with pytest.raises(ValueError, match="nothing_here"):
        folder.load(target)
    with pytest.raises(ValueError, match="nothing_here"):
        potsdam.load(target)


def test_too_few_examples_for_a_batch_is_an_error(tmp_path):
    write_png(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="batch_size=8"):
        folder.load(tmp_path)
    single, info = folder.load(tmp_path, drop_remainder=False)
    assert info.num_examples == 1 and single.cardinality() == 1
    repeated = folder.load(tmp_path, repeat=True)[0]  # batches run across epochs
    assert next(iter(repeated)).shape == (8, 8, 8, 3)
    assert repeated.cardinality() == tf.data.INFINITE_CARDINALITY


def test_block_mode_never_interpolates_and_breaks_ties_to_the_top_left():
    labels = np.array([[1, 2, 0, 0], [2, 2, 0, 3], [5, 4, 9, 9], [4, 5, 9, 9]], np.uint8)
    np.testing.assert_array_equal(imageio.downscale_mode(labels, 2), [[2, 0], [5, 9]])


def test_camvid_sequences_pick_frames_of_whole_video_sequences_from_every_split(tmp_path):
    from tf_autoseg.datasets import camvid

    names = ["train-0001TP_1", "train-0006R0_1", "train-0016E5_1", "train-0016E5_2",
             "val-0016E5_3"]  # fmt: skip
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for k, name in enumerate(names):
        write_png(tmp_path / "images" / f"{name}.png", np.full((8, 8, 3), k, np.uint8))
        write_png(tmp_path / "labels" / f"{name}.png", np.full((8, 8), 3, np.uint8))

    def stems(sequences, split="train"):
        found = imageio.list_files(camvid.frames(tmp_path, split, sequences))
        return sorted(p.stem for p in found)

    assert stems(None) == sorted(names[:4]) and stems(None, "val") == ["val-0016E5_3"]
    assert stems(["0016E5"]) == ["train-0016E5_1", "train-0016E5_2", "val-0016E5_3"]
    assert stems(["0001TP", "0006R0"]) == ["train-0001TP_1", "train-0006R0_1"]
    with pytest.raises(ValueError, match="sequences"):
        camvid.frames(tmp_path, "train", ["0016E6"])
    _, info = camvid.load(tmp_path, "val", 3, labels=True, sequences=["0016E5"], batch_size=2,
                          drop_remainder=False)  # fmt: skip
    assert info.num_examples == 3


def test_one_tile_rule_for_memory_stream_and_prepared():
    assert core.tile_corners(50, 70, 16) == ([(0, 0), (0, 16), (0, 32), (0, 48), (16, 0),
                                             (16, 16), (16, 32), (16, 48), (32, 0), (32, 16),
                                             (32, 32), (32, 48)], None)  # fmt: skip
    assert core.tile_corners(64, 40, 16, downsample=2) == ([(0, 0), (32, 0)], None)
    assert core.tile_corners(30, 64, 16, downsample=2) == (
        [],
        "30x64 is smaller than the 16x16 tile once shrunk 2 times",
    )
    lut = core.label_lut([2, 0, 1])
    np.testing.assert_array_equal(lut[[0, 1, 2, 3, 255]], [2, 0, 1, 255, 255])
