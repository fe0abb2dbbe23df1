"""Streaming pipelines: the in-memory batches, a graph and memory that do not grow with the files,
resume without reading what was skipped, and bad files named before training.

Files are written into tmp_path (tiny images); the Dubai check reads ../shared/data in place,
or conftest's generated replica when it is absent.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_autoseg import datasets
from tf_autoseg.data import stream
from tf_autoseg.datasets import DataConfig
from tf_autoseg.datasets import dubai
from tf_autoseg.datasets import folder as folder_in_memory
from tf_autoseg.training import inputs

ROOT = Path(__file__).resolve().parents[2]


def batches(dataset, count=None):
    taken = dataset if count is None else dataset.take(count)
    return [np.asarray(b) for b in taken]


def smooth(k, size):
    """A compressible image (a gradient) that differs for every k."""
    rows, cols = np.mgrid[:size, :size]
    return np.stack(
        [(rows + k) % 256, (cols * 3 + k // 256) % 256, (rows + cols + 7 * k) % 256], -1
    ).astype(np.uint8)


def write_files(folder, count, size=16, name="img"):
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        Image.fromarray(smooth(k, size)).save(folder / f"{name}_{k:05d}.png")
    return folder


def mixed_folder(folder):
    """PNGs in every mode the pipelines convert, and JPEGs with 4:2:0 and 4:4:4 chroma."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    noise = rng.integers(0, 256, (60, 76, 3), dtype=np.uint8)
    Image.fromarray(noise).save(folder / "a_rgb.png")
    Image.fromarray(noise[:44, :52, 0]).save(folder / "b_grey.png")
    Image.fromarray(np.dstack([noise[:40, :40], noise[:40, :40, :1]])).save(folder / "c_rgba.png")
    Image.fromarray(noise[:36, :48]).convert("P", palette=Image.ADAPTIVE).save(folder / "d_p.png")
    smoothish = np.clip(np.cumsum(noise.astype(int) - 127, 1) // 8 + 128, 0, 255).astype(np.uint8)
    Image.fromarray(smoothish).save(folder / "e_420.jpg", quality=90, subsampling=2)
    Image.fromarray(smoothish[:50, :70]).save(folder / "f_444.jpg", quality=90, subsampling=0)
    Image.fromarray(noise[:6, :6]).save(folder / "g_small.png")  # below one tile: skipped
    return folder


@pytest.mark.parametrize("tile, downsample", [(8, 1), (8, 2)])
def test_same_seed_gives_the_in_memory_batches(tmp_path, tile, downsample):
    folder = mixed_folder(tmp_path / "images")
    options = dict(tile=tile, downsample=downsample, vertical_flip=True, batch_size=5, seed=11,
                   repeat=True, augment=True)  # fmt: skip
    memory, memory_info = folder_in_memory.load(folder, **options)
    streamed, streamed_info = stream.folder(folder, **options)
    assert streamed_info == memory_info  # examples, skipped (the small file), conversions
    assert "grayscale replicated to RGB" in memory_info.adjusted[str(folder / "b_grey.png")]
    epochs = 2 * memory_info.num_examples // 5 + 1  # past an epoch boundary: reshuffled
    for a, b in zip(batches(memory, epochs), batches(streamed, epochs), strict=True):
        np.testing.assert_array_equal(a, b)
    other, _ = stream.folder(folder, **{**options, "seed": 12})
    assert not np.array_equal(batches(other, 1)[0], batches(streamed, 1)[0])


@pytest.mark.slow
def test_dubai_jpeg_tiles_stream_to_the_in_memory_pixels(dubai_aerial):
    root = dubai_aerial
    options = dict(tiles=(8,), tile=200, batch_size=8, seed=3, repeat=True, augment=True)
    memory, memory_info = dubai.load(root, **options)
    streamed, streamed_info = dubai.streamed(root, **options)
    assert streamed_info == memory_info
    for a, b in zip(batches(memory, 8), batches(streamed, 8)):
        np.testing.assert_array_equal(a, b)


def test_resumed_stream_sees_the_remaining_batches_without_reading_the_skipped(tmp_path):
    folder = write_files(tmp_path / "images", 23)
    options = dict(batch_size=4, seed=5, repeat=True, augment=True)
    whole = batches(stream.folder(folder, **options)[0], 20)
    for done in (3, 13):  # inside the first epoch, and after two epochs of 23 examples
        resumed, _ = stream.folder(folder, start=done * 4, **options)
        for a, b in zip(whole[done:], batches(resumed, 20 - done), strict=True):
            np.testing.assert_array_equal(a, b)
    # In file order, the skipped examples are the first files: remove them once the
    # pipeline is built, and reading must not need them.
    resumed, _ = stream.folder(folder, start=8, batch_size=4, shuffle=False, drop_remainder=True)
    expected = batches(stream.folder(folder, batch_size=4, shuffle=False)[0])[2:]
    for path in sorted(folder.iterdir())[:8]:
        path.unlink()
    for a, b in zip(expected, batches(resumed), strict=True):
        np.testing.assert_array_equal(a, b)


def test_two_workers_read_disjoint_halves_of_each_global_batch(tmp_path):
    folder = write_files(tmp_path / "images", 20)
    options = dict(batch_size=4, seed=2, repeat=True)
    single = np.concatenate(batches(stream.folder(folder, **options)[0], 6))
    # Each worker's batch is split in two by tf.distribute: a step reads 2 examples of each.
    halves = [
        np.concatenate(batches(stream.folder(folder, num_workers=2, worker=w, **options)[0], 3))
        for w in (0, 1)
    ]
    for step in range(6):
        together = np.concatenate([h[2 * step : 2 * step + 2] for h in halves])
        expected = single[4 * step : 4 * step + 4]
        assert sorted(map(bytes, together)) == sorted(map(bytes, expected))


def _graph_bytes(dataset):
    return len(dataset._as_serialized_graph().numpy())


def test_graph_grows_by_file_names_only_not_pixels(tmp_path):
    small = write_files(tmp_path / "small", 16, size=32)
    large = write_files(tmp_path / "large", 2000, size=32)
    streamed = [_graph_bytes(stream.folder(f, batch_size=8)[0]) for f in (small, large)]
    in_memory = [_graph_bytes(folder_in_memory.load(f, batch_size=8)[0]) for f in (small, large)]
    added = 2000 - 16
    name = len("img_00000.png")
    # Streamed: the name and a few int32s (file, corner, size) per file: under 64 bytes a file.
    assert (streamed[1] - streamed[0]) / added < name + 48, streamed
    assert streamed[1] < 200_000
    # In memory (the contrast): every pixel is in the graph.
    assert (in_memory[1] - in_memory[0]) / added >= 32 * 32 * 3, in_memory


# Peak RSS of building and iterating the pipeline, over what the process held
# once TensorFlow was imported: writing 5 to clear_refs resets the kernel's
# high-water mark (VmHWM), so whatever the import peaked at (CI once measured a
# 1061 MB whole-process peak for 200 files, masking the 88 MB contrast) cannot
# hide what the pipeline itself costs.
_RSS_SCRIPT = """
import sys
from tf_autoseg.datasets import folder
from tf_autoseg import datasets
from tf_autoseg.data import stream

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field))

with open("/proc/self/clear_refs", "w") as control:
    control.write("5")
baseline = status("VmRSS:")
build = stream.folder if sys.argv[2] == "stream" else folder.load
dataset, info = build(sys.argv[1], batch_size=16, seed=0, shuffle=True)
for _ in dataset:
    pass
print(info.num_examples, (status("VmHWM:") - baseline) // 1024)
"""


def _peak_rss_mb(folder, path):
    result = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(folder), path],
        env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    count, megabytes = map(int, result.stdout.split()[-2:])
    return count, megabytes


@pytest.mark.slow
def test_peak_memory_of_a_streamed_epoch_does_not_grow_with_the_files(tmp_path):
    # 128x128 gradients: about 1 KB on disk, 48 KB decoded; 1,800 more files are 88 MB.
    few = write_files(tmp_path / "few", 200, size=128)
    many = write_files(tmp_path / "many", 2000, size=128)
    (n_few, streamed_few), (n_many, streamed_many) = (
        _peak_rss_mb(f, "stream") for f in (few, many)
    )
    assert (n_few, n_many) == (200, 2000)
    assert streamed_many - streamed_few < 40, (streamed_few, streamed_many)
    # The contrast: in memory the same files cost their decoded size, and more.
    memory_few, memory_many = (_peak_rss_mb(f, "memory")[1] for f in (few, many))
    assert memory_many - memory_few > 80, (memory_few, memory_many)


def test_bad_files_among_many_are_named_before_any_batch(tmp_path):
    folder = write_files(tmp_path / "images", 2000, size=8)
    truncated = folder / "img_00777.png"
    truncated.write_bytes(truncated.read_bytes()[:-20])
    garbage = folder / "img_01500.png"
    garbage.write_bytes(b"not an image at all")
    Image.fromarray(smooth(0, 16)).save(folder / "photo.jpg")
    cut = folder / "photo.jpg"
    cut.write_bytes(cut.read_bytes()[: len(cut.read_bytes()) // 2])
    with pytest.raises(ValueError) as raised:
        stream.folder(folder, batch_size=8)  # raises while building: before any step
    message = str(raised.value)
    assert "3 bad image file(s) of 2001" in message
    for path in (truncated, garbage, cut):
        assert str(path) in message


def test_a_corrupt_middle_passes_the_header_pass_and_is_named_by_the_decode_check(tmp_path):
    folder = write_files(tmp_path / "images", 30, size=16)
    damaged = folder / "img_00012.png"
    raw = bytearray(damaged.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    damaged.write_bytes(bytes(raw))
    stream.folder(folder, batch_size=8)  # the header and the end are intact
    with pytest.raises(ValueError, match="img_00012.png"):
        stream.folder(folder, batch_size=8, check="decode")


def _damaged_jpeg(path):
    """A JPEG whose header and end marker are intact and whose middle is broken."""
    Image.fromarray(smooth(0, 64)).save(path, quality=90)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"\xff\xda") + 20
    for k in range(start, len(raw) - 2, 7):
        raw[k] = 0xFF if k % 2 else 0xD0  # stray markers inside the entropy-coded data
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("pipeline", ["memory", "stream"])
def test_training_refuses_a_file_that_does_not_decode_fully_whatever_the_pipeline(
    tmp_path, pipeline
):
    folder = write_files(tmp_path / "images", 8, size=64)
    _damaged_jpeg(folder / "broken.jpg")
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "tf_autoseg.train", "--flagfile=experiments/quickstart.cfg",
               "--dataset=folder", f"--data_dir={folder}", "--tile=32", "--width=8",
               "--batch_size=4", "--steps=2", "--checkpoint_every=2", f"--pipeline={pipeline}",
               f"--run_dir={run_dir}", "--noexport"]  # fmt: skip
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.jpg" in errors[0], result.stderr[-3000:]
    assert not (run_dir / "metrics.json").exists()


def test_tiff_is_refused_with_the_prepare_command(tmp_path):
    import tifffile

    folder = write_files(tmp_path / "images", 3)
    tifffile.imwrite(folder / "band4.tif", np.zeros((16, 16, 4), np.uint8), photometric="rgb")
    with pytest.raises(ValueError, match=r"band4.tif.*tf_autoseg.prepare"):
        stream.folder(folder, batch_size=2)


def _data(**overrides):
    return DataConfig(**{**dict(dataset="folder", tile=8, batch_size=4), **overrides})


def test_auto_keeps_small_sets_in_memory_and_streams_past_the_limit(tmp_path, monkeypatch):
    folder = write_files(tmp_path / "images", 12)
    data = _data(data_dir=str(folder))
    assert not _reads_files(inputs.build(data)[0])  # 9 KB: in memory
    monkeypatch.setattr(inputs, "MEMORY_LIMIT", 1000)
    dataset, info = inputs.build(data, start_batch=2)
    assert _reads_files(dataset) and info.num_examples == 48  # four 8 px tiles of each file
    whole, _ = stream.folder(folder, tile=8, batch_size=4, seed=0, repeat=True, augment=True)
    np.testing.assert_array_equal(batches(dataset, 1)[0], batches(whole, 3)[2])
    assert inputs.build(data, labels=True) is None  # labelled: in memory (no masks: no part)
    forced = inputs.build(_data(data_dir=str(folder), pipeline="stream"))
    assert _reads_files(forced[0]) and forced[1].num_examples == 48


def _reads_files(dataset):
    """Whether the dataset's graph reads files (streamed) rather than holding pixels."""
    return b"ReadFile" in dataset._as_serialized_graph().numpy()


def test_a_service_run_that_cannot_stream_is_refused_not_silently_in_memory():
    data = _data(dataset="synthetic", data_service="grpc://localhost:5050")
    with pytest.raises(ValueError, match="--data_service: synthetic"):
        inputs.build(data)


def test_worker_split_follows_tf_config(monkeypatch):
    cluster = {"chief": ["a:1"], "worker": ["b:1", "c:1"]}
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}})
    )
    assert inputs.worker_split("auto") == (3, 2)
    assert inputs.worker_split("none") == (1, 0)
    monkeypatch.delenv("TF_CONFIG")
    assert inputs.worker_split("auto") == (1, 0)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(pipeline="fast"), "`pipeline` must be one of"),
        (dict(data_service="localhost:5050"), "grpc://host:port"),
        (dict(data_service="grpc://localhost:5050", pipeline="memory"), "`data_service` needs"),
        (dict(dataset="cocostuff", pipeline="stream"), "tf_autoseg.prepare --dataset=cocostuff"),
        (dict(prepared_dir="/nonexistent"), "`prepared_dir` holds no manifest.json"),
    ],
)
def test_input_arguments_are_checked_and_named(overrides, message, tmp_path):
    with pytest.raises(ValueError, match=message):  # by the DataConfig, else by its dataset
        data = _data(data_dir=str(tmp_path), **overrides)
        datasets.get(data.dataset).check(data)


def test_stream_keeps_one_example_shape_and_states_its_length(tmp_path):
    folder = write_files(tmp_path / "images", 10)
    dataset, _ = stream.folder(folder, batch_size=4, drop_remainder=False)
    assert dataset.element_spec.shape.as_list() == [None, 16, 16, 3]
    assert int(dataset.cardinality()) == 3
    assert tf.data.experimental.AutoShardPolicy.OFF == (
        dataset.options().experimental_distribute.auto_shard_policy
    )


@pytest.mark.slow
def test_input_speed_benchmark_prints_every_figure(tmp_path):
    args = ["--nodubai", "--generated=24", "--generated_size=16", "--batches=2", "--warmup=1",
            "--train_steps=1", f"--generated_dir={tmp_path / 'generated'}"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.input_speed", *args],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [(r["set"], r["path"]) for r in report["pipelines"]] == [
        ("generated_24", "memory"),
        ("generated_24", "stream"),
    ]
    for figures in report["pipelines"]:
        assert figures["examples"] == 24 and figures["images_per_s"] > 0
        assert figures["peak_rss_mb"] > 0 and figures["graph_mb"] > 0
    assert report["train_step"][0]["shape"] == "16x16x3"
