"""segment as a program: it reads what training reads, and checks everything before writing."""

import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tifffile
from PIL import Image

from tf_autoseg import AutoSegModel
from tf_autoseg.cli import commands
from tf_autoseg.data import images
from tf_autoseg.serving import segment

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny untrained models on disk, by channel count: {3: path, 4: path}."""
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for channels in (3, 4):
        keras.utils.set_random_seed(channels)
        model = AutoSegModel(3, (16, 16, channels), width=8, stride=2, ar_blocks=1)
        paths[channels] = folder / f"rgb{'ir' if channels == 4 else ''}.keras"
        model.save(paths[channels])
    return paths


def _segment(model, source, output):
    return subprocess.run(
        [sys.executable, "-m", "tf_autoseg.segment", f"--model={model}", f"--input={source}",
         f"--output={output}"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip


def _expected(model_path, path, channels):
    model = keras.saving.load_model(model_path, compile=False)
    image = images.read_image(path, channels)[0]
    return model.predict_labels(image[None]).numpy()[0]


def _written(path):
    return np.asarray(Image.open(path))


def test_segment_reads_tiff_webp_and_converts_as_training_does(tmp_path, models):
    rng = np.random.default_rng(0)
    source = tmp_path / "in"
    source.mkdir()
    tifffile.imwrite(source / "tile.tif", rng.integers(0, 256, (24, 40, 3), dtype=np.uint8))
    tifffile.imwrite(source / "rgbir.tiff", rng.integers(0, 256, (16, 20, 4), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (20, 16, 3), dtype=np.uint8)).save(source / "w.webp")
    Image.fromarray(rng.integers(0, 256, (18, 18), dtype=np.uint8)).save(source / "grey.png")
    result = _segment(models[3], source, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    noise = [line for line in result.stderr.splitlines(True) if commands.is_noise(line)]
    assert noise == [], "TensorFlow's start-up log is shown"
    for path in sorted(source.iterdir()):
        labels = _written(tmp_path / "out" / f"{path.stem}_labels.png")
        np.testing.assert_array_equal(labels, _expected(models[3], path, 3))
        assert _written(tmp_path / "out" / f"{path.stem}_overlay.png").shape == (*labels.shape, 3)


def test_segment_feeds_all_four_bands_to_a_four_channel_model(tmp_path, models):
    rng = np.random.default_rng(1)
    path = tmp_path / "potsdam_RGBIR.tif"
    tifffile.imwrite(path, rng.integers(0, 256, (32, 24, 4), dtype=np.uint8))
    result = _segment(models[4], path, tmp_path / "out")
    assert result.returncode == 0, result.stderr[-3000:]
    labels = _written(tmp_path / "out" / "potsdam_RGBIR_labels.png")
    np.testing.assert_array_equal(labels, _expected(models[4], path, 4))
    # The infrared band matters: the same image with it zeroed is segmented otherwise.
    model = keras.saving.load_model(models[4], compile=False)
    no_ir = tifffile.imread(path) * np.array([1, 1, 1, 0], np.uint8)
    assert (model.predict_labels(no_ir[None]).numpy()[0] != labels).any()


def test_segment_loads_an_export_through_the_one_loader(tmp_path, models):
    from tf_autoseg.serving import export

    export.export_model(models[3], "rgb", tmp_path / "saved")
    path = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (20, 28, 3), np.uint8)).save(path)
    result = _segment(tmp_path / "saved" / "rgb", path, tmp_path / "out")  # the base folder
    assert result.returncode == 0, result.stderr[-3000:]
    labels = _written(tmp_path / "out" / "frame_labels.png")
    np.testing.assert_array_equal(labels, _expected(models[3], path, 3))


def test_segment_with_named_classes_writes_class_ids_their_colours_and_a_legend(tmp_path, models):
    import json

    mapping = tmp_path / "classes.json"
    mapping.write_text(json.dumps({
        "classes": [{"name": "road", "colour": "#ff0000", "clusters": [0, 2]}],
        "ignored": [1],
    }))  # fmt: skip
    path = tmp_path / "frame.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (20, 28, 3), np.uint8)).save(path)
    result = subprocess.run(
        [sys.executable, "-m", "tf_autoseg.segment", f"--model={models[3]}", f"--input={path}",
         f"--output={tmp_path / 'out'}", f"--classes_json={mapping}"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    clusters = _expected(models[3], path, 3)
    labels = _written(tmp_path / "out" / "frame_labels.png")
    np.testing.assert_array_equal(labels, np.array([0, 255, 0])[clusters])
    overlay = _written(tmp_path / "out" / "frame_overlay.png")
    road = labels == 0
    assert road.any() and (overlay[road][:, 0] >= 127).all()  # half of #ff0000 over the image
    assert (overlay[~road] <= 128).all()  # ignored: half of black
    legend = _written(tmp_path / "out" / "legend.png")
    assert (legend == (255, 0, 0)).all(-1).any()  # the class's swatch
    assert "classes: road" in result.stdout


def test_one_bad_file_stops_segment_before_anything_is_written(tmp_path, models):
    source = tmp_path / "in"
    source.mkdir()
    for name in ("a.png", "b.png", "d.png"):
        Image.new("RGB", (16, 16), (10, 200, 30)).save(source / name)
    (source / "c.png").write_bytes(b"not a png")
    result = _segment(models[3], source, tmp_path / "out")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(source / "c.png") in lines[0], result.stderr[-3000:]
    assert not (tmp_path / "out").exists()


def test_two_inputs_with_one_output_name_are_refused(tmp_path):
    files = [tmp_path / "a.jpg", tmp_path / "a.png", tmp_path / "b.png"]
    with pytest.raises(ValueError, match=r"a.jpg and .*a.png would both write .*a_labels.png"):
        segment.output_stems(files, tmp_path / "out")
    assert segment.output_stems(files[1:], tmp_path / "out") == [
        tmp_path / "out" / "a",
        tmp_path / "out" / "b",
    ]


def test_segment_lists_the_suffixes_training_reads(tmp_path):
    for name in ("a.tif", "b.TIFF", "c.webp", "d.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in segment.list_inputs(str(tmp_path))] == [
        "a.tif",
        "b.TIFF",
        "c.webp",
        "d.png",
    ]
    with pytest.raises(ValueError, match=r"--input='.*nowhere'"):
        segment.list_inputs(str(tmp_path / "nowhere"))


def test_a_symlink_loop_under_double_star_lists_each_image_once(tmp_path):
    for name in ("a.png", "sub/b.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (16, 16)).save(tmp_path / name)
    (tmp_path / "sub" / "loop").symlink_to(tmp_path)  # `**` follows it until ELOOP
    found = segment.list_inputs(str(tmp_path / "**" / "*.png"))
    assert found == [tmp_path / "a.png", tmp_path / "sub" / "b.png"]  # no 40-fold path
    assert segment.output_stems(found, tmp_path / "out")  # nor a clash with itself


def test_a_tiled_image_reports_its_progress():
    seen = []

    def predict(batch):
        return np.ones((*batch.shape[:3], 2), np.float32)

    image = np.zeros((100, 130, 3), np.uint8)
    segment.segment_probabilities(
        predict, image, tile=32, overlap=8, progress=lambda *a: seen.append(a)
    )
    total = seen[0][1]
    assert total > 1 and seen == [(k, total) for k in range(1, total + 1)]
    from tf_autoseg.cli.segment import Progress

    clock, lines = iter(range(0, 1000, 4)), []
    report = Progress(
        "big.tif",
        every=10,
        clock=lambda: float(next(clock)),
        out=lambda *a, **k: lines.append(a[0]),
    )
    for done in range(1, 11):
        report(done, 10)
    assert lines == [
        "big.tif: 3 of 10 tiles (30%, 12 s)",
        "big.tif: 6 of 10 tiles (60%, 24 s)",
        "big.tif: 9 of 10 tiles (90%, 36 s)",
    ]


def _halves(left, right, size=32):
    """A (size, size, 3) image: its left half one colour, its right half another, jittered."""
    rng = np.random.default_rng(sum(left) + sum(right))
    image = np.empty((size, size, 3), np.int64)
    image[:, : size // 2], image[:, size // 2 :] = left, right
    return np.clip(image + rng.integers(-4, 5, image.shape), 0, 255).astype(np.uint8)


def test_segment_adapt_labelling_refits_the_stage_on_the_images_it_segments(tmp_path, models):
    """A mixture fitted on bright scenes gives a dark scene's two halves one label; refitted on
    the dark images themselves (--adapt_labelling) it tells them apart."""
    keras.utils.set_random_seed(0)
    model = AutoSegModel(2, (32, 32, 3), width=8, ar_blocks=1, labels_from="mixture")
    bright = np.stack([_halves((250, 240, 230), (200, 250, 200)) for _ in range(8)])
    model.fit_labelling([bright], seed=0)
    path = tmp_path / "mixture.keras"
    model.save(path)
    source = tmp_path / "in"
    source.mkdir()
    for i, colours in enumerate((((20, 10, 40), (60, 10, 10)), ((22, 12, 38), (58, 12, 12)))):
        Image.fromarray(_halves(*colours)).save(source / f"dark{i}.png")

    def halves_apart(output):
        labels = _written(output / "dark0_labels.png")
        left, right = np.bincount(labels[:, :16].ravel()), np.bincount(labels[:, 16:].ravel())
        return left.argmax() != right.argmax()

    served = _segment(path, source, tmp_path / "served")
    assert served.returncode == 0, served.stderr[-3000:]
    assert not halves_apart(tmp_path / "served")
    result = subprocess.run(
        [sys.executable, "-m", "tf_autoseg.segment", f"--model={path}", f"--input={source}",
         f"--output={tmp_path / 'adapted'}", "--adapt_labelling"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "labelling refitted on 2 image(s)" in result.stdout
    assert halves_apart(tmp_path / "adapted")
    # A model without a stage has nothing to refit: one line, exit 2, nothing written.
    refused = subprocess.run(
        [sys.executable, "-m", "tf_autoseg.segment", f"--model={models[3]}",
         f"--input={source}", f"--output={tmp_path / 'refused'}", "--adapt_labelling"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--adapt_labelling needs a .keras model" in refused.stderr
    assert not (tmp_path / "refused").exists()
