"""Input pipelines alone against the training step's consumption: in memory vs streamed.

Prints one JSON object. For each set (the Dubai aerial images, cut into 200 px tiles, and a
generated set of `--generated` 128x128 JPEG files) and each path (`memory`:
`tf_autoseg.data.core`; `stream`: `tf_autoseg.data.stream`), a fresh child process builds the training
pipeline (shuffled, repeated, flipped), times its first batch (which includes reading or
checking every file), then `--batches` batches after `--warmup`, and reports images/s, the
size of the serialized dataset graph and its own peak RSS. A last child per image shape
times F2's training step (`model.train_on_batch`, batch `--batch_size`): the images/s a
pipeline must deliver for training not to wait on input.

    python -m benchmarks.input_speed                        # Dubai + 20,000 generated files
    python -m benchmarks.input_speed --generated=200 --batches=5 --nodubai   # seconds

The generated files are written once into `--generated_dir` (default: a folder under the
system's temporary directory named for the count and size) and reused.
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
DUBAI = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dubai-aerial"


def define_flags():
    """The command's flags, defined only when it runs as a program (importing stays free)."""
    flags.DEFINE_bool("dubai", True, f"Time the Dubai set ({DUBAI}; skipped when absent).")
    flags.DEFINE_integer("generated", 20000, "Files in the generated set (0: none).")
    flags.DEFINE_integer("generated_size", 128, "Side of the generated images.")
    flags.DEFINE_string("generated_dir", None, "Where the generated files go (reused).")
    flags.DEFINE_list("paths", ["memory", "stream"], "Pipelines to time: memory, stream.")
    flags.DEFINE_integer("batch_size", 8, "Images per batch.")
    flags.DEFINE_integer("batches", 100, "Timed batches per pipeline.")
    flags.DEFINE_integer("warmup", 5, "Untimed batches after the first.")
    flags.DEFINE_integer("train_steps", 5, "Timed training steps (the median is reported).")
    flags.DEFINE_bool("train_step", True, "Also time F2's training step per image shape.")
    flags.DEFINE_string("one", None, "Internal: run one measurement (JSON) and print its result.")


def generate(folder, count, size):
    """`count` JPEG files of smooth random colour fields with fine noise, written once."""
    from PIL import Image

    folder = Path(folder)
    done = folder / "complete"
    if done.is_file() and done.read_text() == f"{count} {size}":
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
        field = np.asarray(coarse.resize((size, size), Image.BICUBIC), np.int16)
        pixels = np.clip(field + rng.integers(-12, 13, (size, size, 1)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"scene_{k:06d}.jpg", quality=90)
    done.write_text(f"{count} {size}")
    return folder


def pipeline(config):
    """The training pipeline of a measurement: (dataset, examples)."""
    from tf_autoseg.data import stream
    from tf_autoseg.datasets import dubai
    from tf_autoseg.datasets import folder

    options = dict(batch_size=config["batch_size"], seed=0, repeat=True, augment=True)
    memory = config["path"] == "memory"
    if config["set"] == "dubai":
        build = dubai.load if memory else dubai.streamed
        dataset, info = build(config["root"], tile=200, **options)
    else:
        build = folder.load if memory else stream.folder
        dataset, info = build(config["root"], **options)
    return dataset, info.num_examples


def time_pipeline(config):
    """Images/s of one pipeline after its first batch, its graph and the process's peak RSS."""
    from tf_autoseg.data import stream  # noqa: F401 - TensorFlow's import is not timed

    start = time.perf_counter()
    dataset, examples = pipeline(config)
    iterator = iter(dataset)
    next(iterator)
    first_s = time.perf_counter() - start
    for _ in range(config["warmup"]):
        next(iterator)
    start = time.perf_counter()
    for _ in range(config["batches"]):
        next(iterator)
    elapsed = time.perf_counter() - start
    return {
        "set": config["set"],
        "path": config["path"],
        "examples": examples,
        "first_batch_s": round(first_s, 2),
        "images_per_s": round(config["batches"] * config["batch_size"] / elapsed, 1),
        "graph_mb": round(len(dataset._as_serialized_graph().numpy()) / 2**20, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def time_train_step(config):
    """Images/s that F2's training step consumes at one image shape (median of steps)."""
    import keras
    import tensorflow as tf

    from tf_autoseg import AutoSegModel

    height, width, channels = config["shape"]
    model = AutoSegModel.variant("F2", 6, (height, width, channels))
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    images = tf.cast(
        tf.random.uniform((config["batch_size"], height, width, channels)) * 255, tf.uint8
    )
    model.train_on_batch(images)
    times = []
    for _ in range(config["train_steps"]):
        start = time.perf_counter()
        model.train_on_batch(images)
        times.append(time.perf_counter() - start)
    step = float(np.median(times))
    return {
        "shape": "x".join(map(str, config["shape"])),
        "batch_size": config["batch_size"],
        "step_s": round(step, 3),
        "images_per_s": round(config["batch_size"] / step, 1),
    }


def _child(config):
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.input_speed", f"--one={json.dumps(config)}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode:
        raise SystemExit(f"measurement {config} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if FLAGS.one:
        config = json.loads(FLAGS.one)
        print(json.dumps(time_train_step(config) if "shape" in config else time_pipeline(config)))
        return
    sets, shapes = [], []
    if FLAGS.dubai and DUBAI.is_dir():
        sets.append(("dubai", str(DUBAI)))
        shapes.append([200, 200, 3])
    if FLAGS.generated:
        folder = FLAGS.generated_dir or os.path.join(
            tempfile.gettempdir(),
            f"tf_autoseg_input_speed_{FLAGS.generated}_{FLAGS.generated_size}",
        )
        start = time.perf_counter()
        generate(folder, FLAGS.generated, FLAGS.generated_size)
        sets.append((f"generated_{FLAGS.generated}", folder))
        shapes.append([FLAGS.generated_size, FLAGS.generated_size, 3])
        generate_s = time.perf_counter() - start
    common = dict(batch_size=FLAGS.batch_size, batches=FLAGS.batches, warmup=FLAGS.warmup)
    results = [
        _child({"set": name.split("_")[0], "root": root, "path": path, **common}) | {"set": name}
        for name, root in sets
        for path in FLAGS.paths
    ]
    steps = []
    if FLAGS.train_step:
        steps = [
            _child(
                {"shape": shape, "batch_size": FLAGS.batch_size, "train_steps": FLAGS.train_steps}
            )
            for shape in shapes
        ]
    print(
        json.dumps(
            {
                "cpu_count": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "generated_files_s": round(generate_s, 1) if FLAGS.generated else None,
                "pipelines": results,
                "train_step": steps,
            }
        )
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
