"""The AC loss with IIC's displacement window: box filter against the loop over offsets.

Times forward + backward of the AC loss (`losses.joint_counts`, then `mutual_information_from_counts`, as the objective computes it) on the main and overclustering heads
(`--batch`x`--size`x`--size`, K = `--clusters` and `--overclustering`) at each
`--displacements` value, two ways in one process, interleaved:
- "box": `losses.joint_counts` (one depthwise box filter, one contraction);
- "loop": the earlier implementation kept here as the reference, one slice pair and one
  contraction per offset of the (2d + 1)^2 window.
Both give the same counts (checked here and in tests/modeling/test_losses.py). With `--model_steps`,
also times whole training steps (`train_on_batch`) of the model of experiments/dubai.cfg
(F2, width 64, 4 masked blocks, overclustering 25, flips/rotations, colour jitter) at
`--batch`x(4 `--size`)^2x3, one model per implementation, interleaved. Prints one JSON object.

    python -m benchmarks.loss_speed                      # 8x32x32 (128 px crops, stride 4)
    python -m benchmarks.loss_speed --model_steps=7      # and whole steps, 8x128x128x3
    python -m benchmarks.loss_speed --size=8 --repeats=1   # quick
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_autoseg.modeling import losses  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("size", 32, "Height and width of the head's grid.")
flags.DEFINE_integer("clusters", 5, "K of the main head.")
flags.DEFINE_integer("overclustering", 25, "K of the overclustering head.")
flags.DEFINE_list("displacements", ["1", "3"], "Half sides of the window to time.")
flags.DEFINE_integer("repeats", 20, "Timed steps per variant (the median is reported).")
flags.DEFINE_integer("model_steps", 0, "Timed whole training steps per variant (0: none).")
flags.DEFINE_integer("width", 64, "Width of the model of --model_steps.")


def loop_counts(p1, p2, displacement):
    """The offset loop: `joint_counts` as it was before the box filter."""
    height, width = tf.shape(p1)[1], tf.shape(p1)[2]
    total = 0.0
    for dy in range(-displacement, displacement + 1):
        for dx in range(-displacement, displacement + 1):
            a = p1[:, max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
            b = p2[:, max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)]
            total += tf.einsum("bhwk,bhwl->kl", a, b)
    return total


def _step(counts, displacement):
    @tf.function
    def step(logits):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = 0.0
            for a, b in logits:
                p1, p2 = tf.nn.softmax(a), tf.nn.softmax(b)
                loss -= losses.mutual_information_from_counts(counts(p1, p2, displacement))
        return loss, tape.gradient(loss, logits)

    return step


def _model_step_seconds(displacement):
    """Median train_on_batch seconds of the dubai.cfg model, per implementation."""
    import keras

    from tf_autoseg import AutoSegModel

    size = 4 * FLAGS.size
    images = tf.random.uniform((FLAGS.batch, size, size, 3), maxval=256, dtype=tf.int32)
    images = tf.cast(images, tf.uint8)
    models = {}
    for name, counts in (("box", losses.joint_counts), ("loop", loop_counts)):
        model = AutoSegModel.variant(
            "F2", FLAGS.clusters, (size, size, 3), width=FLAGS.width, ar_blocks=4,
            overclustering=FLAGS.overclustering, displacement=displacement,
            geometric="flip_rotate", photometric=True,
        )  # fmt: skip
        model.compile(optimizer=keras.optimizers.Adam(3e-4))
        original, losses.joint_counts = losses.joint_counts, counts
        try:  # traced with this implementation; the trace keeps it
            model.train_on_batch(images)
        finally:
            losses.joint_counts = original
        models[name] = model
    times = {name: [] for name in models}
    for _ in range(FLAGS.model_steps):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(images)
            times[name].append(time.perf_counter() - start)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv):
    del argv
    rng = np.random.default_rng(0)
    logits = [
        tuple(
            tf.constant(rng.normal(size=(FLAGS.batch, FLAGS.size, FLAGS.size, k)), tf.float32)
            for _ in range(2)
        )
        for k in (FLAGS.clusters, FLAGS.overclustering)
    ]
    results = []
    for displacement in (int(d) for d in FLAGS.displacements):
        variants = {
            "box": _step(losses.joint_counts, displacement),
            "loop": _step(loop_counts, displacement),
        }
        values = {name: float(step(logits)[0]) for name, step in variants.items()}  # traces
        times = {name: [] for name in variants}
        for _ in range(FLAGS.repeats):
            for name, step in variants.items():
                start = time.perf_counter()
                loss, grads = step(logits)
                float(loss + tf.reduce_sum(grads[0][0]))
                times[name].append(time.perf_counter() - start)
        median = {name: float(np.median(t)) for name, t in times.items()}
        result = {
            "displacement": displacement,
            "box_ms_median": round(1e3 * median["box"], 3),
            "loop_ms_median": round(1e3 * median["loop"], 3),
            "loop_over_box": round(median["loop"] / median["box"], 2),
            "loss_box": values["box"],
            "loss_loop": values["loop"],
        }
        if FLAGS.model_steps:
            step = _model_step_seconds(displacement)
            result.update(
                step_box_ms_median=round(1e3 * step["box"], 1),
                step_loop_ms_median=round(1e3 * step["loop"], 1),
                step_loop_over_box=round(step["loop"] / step["box"], 2),
            )
        results.append(result)
    print(
        json.dumps(
            {
                "grid": [FLAGS.batch, FLAGS.size, FLAGS.size],
                "clusters": [FLAGS.clusters, FLAGS.overclustering],
                "repeats": FLAGS.repeats,
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
