"""Export time, SavedModel size and serving latency of a realistic AutoSegModel.

Builds `AutoSegModel.variant(--variant, --classes, (--crop, --crop, 3))` (width
64, stride 4: the defaults; untrained weights time the same as trained ones),
exports it with `tf_autoseg.serving.export.export_model` into a temporary directory,
loads the export with `tf.saved_model.load` and times its `serving_default`
signature on one uint8 --size x --size image: --warmup untimed calls, then the
median of --repeats. Prints one JSON object.

    python -m benchmarks.serving_latency                 # F2, K=6, one 512x512 image
    python -m benchmarks.serving_latency --size 256 --repeats 5   # quick
    python -m benchmarks.serving_latency --labels_from=mixture --refine_iterations=3 --against_head

Expected on the 2-core development CPU (shared; AVX-512), about 10 s in all:
export about 1.1 s, SavedModel about 3.2 MB, median latency about 0.1 s per
512x512 image (float32 policy). Other machines: rerun.
"""

import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_autoseg import AutoSegModel  # noqa: E402
from tf_autoseg.serving import export  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("variant", "F2", "AutoSegModel variant (F1..F5 or random).")
flags.DEFINE_integer("classes", 6, "Number of clusters K.", lower_bound=2)
flags.DEFINE_integer("crop", 128, "Training crop side (the model's input_shape).", lower_bound=1)
flags.DEFINE_integer("size", 512, "Side of the served uint8 image.", lower_bound=1)
flags.DEFINE_integer("batch", 1, "Images per call.", lower_bound=1)
flags.DEFINE_integer("warmup", 3, "Untimed calls before timing.", lower_bound=1)
flags.DEFINE_integer("repeats", 20, "Timed calls (the median is reported).", lower_bound=1)
flags.DEFINE_enum(
    "labels_from", "head", ["head", "mixture", "features", "overclustering"],
    "What the export's labels come from; a label-free stage is fitted on random images first "
    "(an unfitted one answers with the head and would time as the head).",
)  # fmt: skip
flags.DEFINE_integer(
    "refine_iterations", 0, "Edge-aware refinement steps after a label-free stage.", lower_bound=0
)


flags.DEFINE_bool(
    "against_head", False,
    "Also export the same model labelling by its head, and call the two signatures in turn "
    "(--repeats each): the ratio of their medians holds on a loaded machine.",
)  # fmt: skip


def _size_bytes(path):
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    options = {"labels_from": FLAGS.labels_from, "refine_iterations": FLAGS.refine_iterations}
    if FLAGS.labels_from == "overclustering":
        options["overclustering"] = 25
    model = AutoSegModel.variant(
        FLAGS.variant, FLAGS.classes, (FLAGS.crop, FLAGS.crop, 3), **options
    )
    if model.labelling is not None:
        rng = np.random.default_rng(1)
        model.fit_labelling(
            [rng.integers(0, 256, (4, FLAGS.crop, FLAGS.crop, 3), np.uint8) for _ in range(4)]
        )
    with tempfile.TemporaryDirectory() as base:
        start = time.perf_counter()
        path = export.export_model(model, "benchmark", base)
        export_s = time.perf_counter() - start
        size = _size_bytes(path)
        start = time.perf_counter()
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        load_s = time.perf_counter() - start
        shape = (FLAGS.batch, FLAGS.size, FLAGS.size, 3)
        images = tf.constant(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
        head = None
        if FLAGS.against_head:
            plain = AutoSegModel.variant(FLAGS.variant, FLAGS.classes, (FLAGS.crop,) * 2 + (3,))
            head_path = export.export_model(plain, "head", base)
            head = tf.saved_model.load(str(head_path)).signatures["serving_default"]
        for _ in range(FLAGS.warmup):
            serve(images=images)["labels"].numpy()
            if head is not None:
                head(images=images)["labels"].numpy()
        times, head_times = [], []
        for _ in range(FLAGS.repeats):
            start = time.perf_counter()
            serve(images=images)["labels"].numpy()
            times.append(time.perf_counter() - start)
            if head is not None:
                start = time.perf_counter()
                head(images=images)["labels"].numpy()
                head_times.append(time.perf_counter() - start)
    print(
        json.dumps(
            {
                "variant": FLAGS.variant,
                "classes": FLAGS.classes,
                "labels_from": FLAGS.labels_from,
                "refine_iterations": FLAGS.refine_iterations,
                "input_shape": model.image_shape,
                "width": model.config.network.width,
                "stride": model.config.network.stride,
                "parameters": model.count_params(),
                "export_s": round(export_s, 2),
                "saved_model_bytes": size,
                "load_s": round(load_s, 2),
                "image_shape": shape,
                "repeats": FLAGS.repeats,
                "latency_s_median": round(float(np.median(times)), 4),
                "latency_s_min": round(float(np.min(times)), 4),
                "latency_s_max": round(float(np.max(times)), 4),
                "cpu_count": os.cpu_count(),
                **(
                    {
                        "head_latency_s_median": round(float(np.median(head_times)), 4),
                        "over_head": round(float(np.median(times) / np.median(head_times)), 2),
                    }
                    if head_times
                    else {}
                ),
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
