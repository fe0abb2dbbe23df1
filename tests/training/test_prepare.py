"""python -m tf_autoseg.prepare and tf_autoseg.data.records: the in-memory examples in shards, a
manifest, resumable preparation, resumable reading, and MultiWorker training by shard file.

Files are written into tmp_path; the COCO-Stuff check reads ../shared/data in place, or
conftest's generated replica when it is absent.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from tf_autoseg.data import records
from tf_autoseg.datasets import DataConfig
from tf_autoseg.datasets import cocostuff
from tf_autoseg.datasets import folder
from tf_autoseg.datasets import potsdam
from tf_autoseg.training import inputs
from tf_autoseg.training import prepare

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).resolve().parents[1] / "support" / "prepared_worker.py"


def collect(dataset):
    parts = [
        np.concatenate(p) for p in zip(*[b if isinstance(b, tuple) else (b,) for b in dataset])
    ]
    return parts[0] if len(parts) == 1 else tuple(parts)


def job(dataset, data_dir, output_dir, shard_size=4, **data):
    """`prepare.prepare`'s arguments: the dataset's two parts (tiles 1 and 2 for dubai)."""
    data = dict(tile=8, tiles=(1,)) | data
    train = DataConfig(dataset=dataset, data_dir=str(data_dir), **data)
    held_out = train.replace(part="eval", tiles=(2,))
    return dict(train=train, held_out=held_out, output_dir=str(output_dir), shard_size=shard_size)


def labelled_folder(root):
    """Images of several sizes (one below a 2x-shrunk 8 px tile) with index masks 0..2."""
    rng = np.random.default_rng(0)
    for k, (h, w) in enumerate([(40, 36), (24, 50), (17, 17), (10, 30), (33, 33)]):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
        mask[: h // 3] = 255
        (root / "images").mkdir(parents=True, exist_ok=True)
        (root / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / f"im{k}.png")
        Image.fromarray(mask).save(root / "masks" / f"im{k}.png")
    return root / "images", root / "masks"


def test_prepared_folder_holds_the_in_memory_examples_labels_and_skips(tmp_path):
    images, masks = labelled_folder(tmp_path / "src")
    options = job("folder", images, tmp_path / "out", downsample=2, masks_dir=str(masks))
    manifest = prepare.prepare(**options, log=lambda line: None)
    memory, memory_info = folder.load(images, masks, num_classes=3, tile=8, downsample=2,
                                   labels=True, shuffle=False, drop_remainder=False)  # fmt: skip
    prepared, prepared_info = records.load(tmp_path / "out", "train", labels=True, shuffle=False,
                                           drop_remainder=False)  # fmt: skip
    for a, b in zip(collect(memory), collect(prepared), strict=True):
        np.testing.assert_array_equal(a, b)
    part = manifest["parts"]["train"]
    assert part["examples"] == part["labelled"] == memory_info.num_examples == 12
    assert [s["examples"] for s in part["shards"]] == [4, 4, 4]
    assert part["skipped"] == memory_info.skipped  # 10x30 shrunk is below one tile
    assert (
        "smaller than the 8x8 tile once shrunk 2 times" in part["skipped"][str(images / "im3.png")]
    )
    assert prepared_info.num_examples == 12 and manifest["channels"] == 3


def raw_potsdam(folder, size=1200):
    """A raw-release tile: 4-band TIFF (extra sample "unspecified") and colour labels."""
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (size, size, 4), dtype=np.uint8)
    ids = rng.integers(0, 6, (size // 8, size // 8)).repeat(8, 0).repeat(8, 1)
    colours = np.array(list(potsdam.POTSDAM_COLOURS), dtype=object)
    rgb = np.array([[int(c[i : i + 2], 16) for i in (1, 3, 5)] for c in colours], np.uint8)[ids]
    folder.mkdir(parents=True)
    tifffile.imwrite(
        folder / "top_potsdam_2_10_RGBIR.tif", image, photometric="rgb", extrasamples=[0]
    )
    tifffile.imwrite(folder / "top_potsdam_2_10_label.tif", rgb, photometric="rgb")


def test_potsdam_tiffs_prepare_to_the_in_memory_4band_crops_and_the_3_class_merge(tmp_path):
    raw_potsdam(tmp_path / "potsdam")
    manifest = prepare.prepare(
        **job("potsdam", tmp_path / "potsdam", tmp_path / "out", num_classes=6)
    )
    assert manifest["channels"] == 4 and manifest["num_classes"] == 6
    for part, split in (("train", "train"), ("eval", "test")):
        for classes in (6, 3):
            memory, _ = potsdam.load(tmp_path / "potsdam", split, classes, labels=True,
                                     batch_size=1, shuffle=False)  # fmt: skip
            prepared, info = records.load(tmp_path / "out", part, labels=True, num_classes=classes,
                                          batch_size=1, shuffle=False)  # fmt: skip
            for a, b in zip(collect(memory), collect(prepared), strict=True):
                np.testing.assert_array_equal(a, b)
            assert info.class_names == tuple(
                potsdam.POTSDAM_CLASSES if classes == 6 else potsdam.POTSDAM3_CLASSES
            )
    assert (
        manifest["parts"]["eval"]["examples"] == 1 and manifest["parts"]["train"]["examples"] == 8
    )


def test_cocostuff_curation_and_scale_are_done_once_and_match_the_in_memory_crops(
    tmp_path, cocostuff_mini
):
    root = cocostuff_mini
    manifest = prepare.prepare(**job("cocostuff", root, tmp_path / "out", num_classes=15, tile=128))
    memory, memory_info = cocostuff.load(root, "val", 15, labels=True, batch_size=1, shuffle=False)
    prepared, prepared_info = records.load(tmp_path / "out", "eval", labels=True, batch_size=1,
                                           shuffle=False)  # fmt: skip
    for a, b in zip(collect(memory), collect(prepared), strict=True):
        np.testing.assert_array_equal(a, b)
    assert prepared_info.skipped == memory_info.skipped  # curated out, or too small once scaled
    assert list((tmp_path / "out").glob("curation-val-15-*.json"))  # the labels were read once
    kept, _ = cocostuff.curate(root, "train", 15)
    training, info = records.load(tmp_path / "out", "train", batch_size=2, augment=True)
    assert info.num_examples == manifest["parts"]["train"]["examples"] <= len(kept)
    assert collect(training).shape[1:] == (128, 128, 3)  # random 128 px crops of whole images


def test_an_interrupted_preparation_resumes_without_rewriting_done_shards(tmp_path):
    images, masks = labelled_folder(tmp_path / "src")
    options = job("folder", images, tmp_path / "out", masks_dir=str(masks), shard_size=2)
    written = []

    def stop_after_two(line):
        written.append(line)
        if len(written) == 2:
            raise KeyboardInterrupt  # as a kill between two shards

    with pytest.raises(KeyboardInterrupt):
        prepare.prepare(**options, log=stop_after_two)
    done = sorted((tmp_path / "out").glob("*.tfrecord"))
    assert len(done) == 2 and not (tmp_path / "out" / "manifest.json").exists()
    stamps = {p: p.stat().st_mtime_ns for p in done}
    lines = []
    manifest = prepare.prepare(**options, log=lines.append)
    assert sum("already written" in line for line in lines) == 2
    assert {p: p.stat().st_mtime_ns for p in done} == stamps
    fresh = prepare.prepare(**{**options, "output_dir": str(tmp_path / "fresh")}, log=print)
    assert manifest == fresh
    for shard in manifest["parts"]["train"]["shards"]:
        name = shard["file"]
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


@pytest.mark.slow
def test_sigkill_mid_preparation_then_rerun_completes_it(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for k in range(400):
        Image.fromarray(np.full((16, 16, 3), k % 256, np.uint8)).save(source / f"im{k:04d}.png")
    args = [sys.executable, "-m", "tf_autoseg.prepare", "--dataset=folder", f"--data_dir={source}",
            f"--output_dir={tmp_path / 'out'}", "--tile=16", "--shard_size=20", "--num_classes=3"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(list((tmp_path / "out").glob("*.tfrecord"))) < 3 and time.time() < deadline:
        assert process.poll() is None, "finished before it could be killed"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "out" / "manifest.json").exists()
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.splitlines()[-1])["examples"] == {"train": 400}
    dataset, info = records.load(tmp_path / "out", "train", batch_size=40, shuffle=False)
    values = collect(dataset)[:, 0, 0, 0]
    np.testing.assert_array_equal(values, np.arange(400) % 256)  # every example, once, in order


def test_a_rerun_with_other_flags_is_refused_naming_the_folder(tmp_path):
    images, _ = labelled_folder(tmp_path / "src")
    prepare.prepare(**job("folder", images, tmp_path / "out"), log=lambda line: None)
    with pytest.raises(ValueError, match=f"{tmp_path / 'out'} holds a preparation with other"):
        prepare.prepare(**job("folder", images, tmp_path / "out", tile=16), log=lambda line: None)


def test_a_folder_prepared_under_the_old_flag_names_is_the_same_preparation(tmp_path):
    # Before 2026-12-05 plan.json recorded --num_classes as "classes" and --tile as "crop".
    images, _ = labelled_folder(tmp_path / "src")
    prepare.prepare(**job("folder", images, tmp_path / "out"), log=lambda line: None)
    plan_path = tmp_path / "out" / prepare.PLAN
    plan = json.loads(plan_path.read_text())
    flags = plan["flags"]
    flags["classes"], flags["crop"] = flags.pop("num_classes"), flags.pop("tile")
    plan_path.write_text(json.dumps(plan))
    lines = []
    prepare.prepare(**job("folder", images, tmp_path / "out"), log=lines.append)  # not refused
    assert lines and all("already written" in line for line in lines)  # nothing written again
    with pytest.raises(ValueError, match="holds a preparation with other"):
        prepare.prepare(**job("folder", images, tmp_path / "out", tile=16), log=lambda line: None)


def id_images(folder, count, size=16):
    """Image k holds k in every pixel (channel 0: k mod 256, channel 1: k // 256), and noise."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        image = np.zeros((size, size, 3), np.uint8)
        image[..., 0], image[..., 1] = k % 256, k // 256
        image[..., 2] = rng.integers(0, 256, (size, size))
        Image.fromarray(image).save(folder / f"im{k:05d}.png")
    return folder


def ids(images):
    images = np.asarray(images).astype(np.int64)
    return images[:, 0, 0, 0] + 256 * images[:, 0, 0, 1]


def test_prepared_graph_has_the_same_size_for_16_and_2000_examples(tmp_path):
    """The same size but for a few bytes: protobuf writes the example counts as varints (16
    takes one byte, 2000 two), and traced functions are named with a process-wide counter.
    The in-memory graph of these 2,000 8x8 images would be 380 KB larger."""
    sizes = []
    for count in (16, 2000):
        source = id_images(tmp_path / f"src{count:05d}", count, size=8)
        out = tmp_path / f"out{count:05d}"
        prepare.prepare(**job("folder", source, out, tile=8, shard_size=4096), log=lambda _: 0)
        dataset, info = records.load(out, batch_size=8, repeat=True, augment=True)
        assert info.num_examples == count
        sizes.append(len(dataset._as_serialized_graph().numpy()))
    assert abs(sizes[1] - sizes[0]) <= 64, sizes


def test_records_resume_reads_the_same_remaining_batches_and_skips_whole_shards(tmp_path):
    source = id_images(tmp_path / "src", 40)
    out = tmp_path / "out"
    prepare.prepare(**job("folder", source, out, tile=16, shard_size=8), log=lambda _: 0)
    options = dict(batch_size=4, seed=3, repeat=True, augment=True, window=6)
    whole = [np.asarray(b) for b in records.load(out, **options)[0].take(30)]
    seen = np.concatenate([ids(b) for b in whole[:10]])
    assert sorted(seen) == list(range(40)), "an epoch reads every example once"
    assert not np.array_equal(ids(whole[0]), ids(whole[10])), "each epoch is reshuffled"
    for done in (1, 7, 12, 23):
        resumed, _ = records.load(out, start=done * 4, **options)
        for a, b in zip(whole[done:], resumed.take(30 - done), strict=True):
            np.testing.assert_array_equal(a, np.asarray(b))
    # In shard order, starting after two shards: they are never opened.
    resumed, _ = records.load(out, start=16, batch_size=4, shuffle=False)
    for name in ("train-00000-of-00005.tfrecord", "train-00001-of-00005.tfrecord"):
        (out / name).unlink()
    np.testing.assert_array_equal(ids(collect(resumed)), np.arange(16, 40))


def test_the_input_builder_reads_prepared_parts_and_leaves_absent_labels_to_memory(tmp_path):
    source = id_images(tmp_path / "src", 12)
    prepare.prepare(**job("folder", source, tmp_path / "out", tile=16), log=lambda _: 0)
    data = DataConfig(dataset="folder", data_dir=str(source), prepared_dir=str(tmp_path / "out"),
                      tile=16, batch_size=4, seed=1)  # fmt: skip
    resumed, info = inputs.build(data, start_batch=2)
    whole, _ = records.load(tmp_path / "out", batch_size=4, seed=1, repeat=True, augment=True)
    np.testing.assert_array_equal(next(iter(resumed)), list(whole.take(3))[2])
    assert info.num_examples == 12
    assert inputs.build(data, labels=True) is None  # no masks were prepared, nor given


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.slow
def test_prepared_set_trains_under_multiworker_each_worker_reading_its_own_shards(tmp_path):
    source = id_images(tmp_path / "src", 64)
    out = tmp_path / "out"
    prepare.prepare(**job("folder", source, out, tile=16, shard_size=8), log=lambda _: 0)
    workers = [f"127.0.0.1:{port}" for port in _free_ports(2)]
    processes = []
    for index in range(2):
        cluster = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2",
                   TF_CONFIG=json.dumps(cluster))  # fmt: skip
        processes.append(
            subprocess.Popen(
                [sys.executable, str(WORKER), str(out), str(tmp_path / f"w{index}.npz"), "3"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )  # fmt: skip
        )
    try:
        for process in processes:
            output, _ = process.communicate(timeout=600)
            assert process.returncode == 0, output[-3000:]
    finally:
        for process in processes:
            process.kill()
    first, second = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    assert int(first["replicas"]) == 2
    assert int(first["examples"]) == int(second["examples"]) == 64  # the whole set, described
    for index, result in enumerate((first, second)):
        shards = np.asarray(result["ids"]).ravel() // 8
        assert set(shards % 2) == {index}, "a worker reads only its own shard files"
    np.testing.assert_array_equal(first["losses"], second["losses"])
    assert np.isfinite(first["losses"]).all() and float(first["moved"]) > 1e-3
    for k in range(sum(name.startswith("w") for name in first.files)):
        np.testing.assert_array_equal(first[f"w{k}"], second[f"w{k}"])


def test_a_folder_trains_from_its_prepared_records_without_data_dir(tmp_path):
    source = id_images(tmp_path / "src", 12)
    prepare.prepare(**job("folder", source, tmp_path / "out", tile=16), log=lambda _: 0)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "tf_autoseg.train", "--flagfile=experiments/quickstart.cfg",
               "--dataset=folder", f"--prepared_dir={tmp_path / 'out'}", "--tile=16",
               "--width=8", "--ar_blocks=1", "--batch_size=4", "--steps=2",
               "--checkpoint_every=2", "--noexport", f"--run_dir={run_dir}"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["steps"] == 2


def test_prepared_records_are_checked_before_training(tmp_path):
    source = id_images(tmp_path / "src", 12)
    out = tmp_path / "out"
    prepare.prepare(**job("folder", source, out, tile=16, shard_size=4), log=lambda _: 0)
    records.load(out, batch_size=4)  # as written: fine
    manifest = json.loads((out / records.MANIFEST).read_text())

    def broken(change):
        edited = json.loads(json.dumps(manifest))
        change(edited)
        (out / records.MANIFEST).write_text(json.dumps(edited))

    broken(lambda m: m["parts"]["train"].update(examples=40))
    with pytest.raises(ValueError, match="says 40 examples, its shards 12"):
        records.load(out, batch_size=4)
    broken(lambda m: m.update(channels=4))
    with pytest.raises(ValueError, match="images of 3 channels, .* says 4"):
        records.load(out, batch_size=4)
    (out / records.MANIFEST).write_text(json.dumps(manifest))
    shard = out / manifest["parts"]["train"]["shards"][1]["file"]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(ValueError, match=f"{shard.name}: .* bytes, .* recorded .*truncated"):
        records.load(out, batch_size=4)


def test_a_preparation_that_failed_before_its_first_shard_does_not_lock_its_folder(tmp_path):
    source = id_images(tmp_path / "src", 6)
    bad = source / "im999.png"
    bad.write_bytes((source / "im00000.png").read_bytes()[:60])  # a header, then nothing
    options = job("folder", source, tmp_path / "out", tile=16)
    with pytest.raises(ValueError):
        prepare.prepare(**options, log=lambda _: 0)
    bad.unlink()
    manifest = prepare.prepare(**options, log=lambda _: 0)
    assert manifest["parts"]["train"]["examples"] == 6


def test_nonsense_jobs_and_tiles_are_refused_before_anything_is_written(tmp_path):
    from tf_autoseg.datasets import folder

    images, _ = labelled_folder(tmp_path / "src")
    for jobs in (0, -3):  # both wrote with one process, silently
        with pytest.raises(ValueError, match=f"Received: jobs={jobs}"):
            prepare.prepare(**job("folder", images, tmp_path / "out"), jobs=jobs, log=print)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match="`tile` must be an int >= 8. Received: tile=1"):
        job("folder", images, tmp_path / "out", tile=1)
    with pytest.raises(ValueError, match="Received: tile=2"):
        folder.load(images, num_classes=3, tile=2)


def test_a_record_damaged_after_preparing_is_one_line_naming_its_shard(tmp_path):
    source = id_images(tmp_path / "src", 64)
    out = tmp_path / "out"
    prepare.prepare(**job("folder", source, out, tile=16, shard_size=32), log=lambda _: 0)
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "tf_autoseg.train", "--flagfile=experiments/quickstart.cfg",
               "--dataset=folder", f"--prepared_dir={out}", "--tile=16", "--width=8",
               "--ar_blocks=1", "--batch_size=8", "--checkpoint_every=4", "--noexport",
               f"--run_dir={run_dir}"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([*command, "--steps=4"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics := run_dir / "metrics.json").unlink()  # as if stopped before the end
    checkpoint = run_dir / "checkpoints" / "ckpt-00000004.keras"
    kept = checkpoint.read_bytes()
    shard = out / "train-00000-of-00002.tfrecord"
    damaged = bytearray(shard.read_bytes())
    middle = len(damaged) // 2  # its header and size intact: the checks before training pass
    damaged[middle : middle + 64] = bytes(b ^ 0xFF for b in damaged[middle : middle + 64])
    shard.write_bytes(bytes(damaged))
    result = subprocess.run([*command, "--steps=16"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{shard}: corrupted record" in errors[0], errors
    assert "resumes from step 4" in errors[0] or "ckpt-00000004.keras" in errors[0], errors
    assert checkpoint.read_bytes() == kept and not metrics.exists()
