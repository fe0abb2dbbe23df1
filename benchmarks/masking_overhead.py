"""Cost of causality: a stack of masked residual blocks against the plain Conv2D stack.

Times forward + backward of `--blocks` residual blocks at `--batch`x`--size`x`--size`x
`--channels`, under a random ordering id fed as a tensor (the training path: mask gather,
shift by padding, masked kernel), against the same blocks built from `keras.layers.Conv2D`
with SAME padding. Both run in one process, interleaved, so the ratio is what to quote.
Prints one JSON object.

    python -m benchmarks.masking_overhead                 # 8x128x128x64, 5 blocks
    python -m benchmarks.masking_overhead --size 32 --repeats 3   # quick
"""

import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from tf_autoseg import MaskedResidualBlock  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("batch", 8, "Batch size.")
flags.DEFINE_integer("size", 128, "Height and width of the feature map.")
flags.DEFINE_integer("channels", 64, "Channels of every block.")
flags.DEFINE_integer("blocks", 5, "Residual blocks in the stack.")
flags.DEFINE_integer("repeats", 7, "Timed steps per variant (the median is reported).")
flags.DEFINE_enum("policy", "float32", ["float32", "mixed_bfloat16"], "Keras dtype policy.")


class PlainBlock(keras.layers.Layer):
    """The same residual block with unmasked `keras.layers.Conv2D`."""

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.conv1 = keras.layers.Conv2D(filters, 3, padding="same")
        self.conv2 = keras.layers.Conv2D(filters, 3, padding="same")

    def call(self, x, ordering=None):
        return x + self.conv2(tf.nn.relu(self.conv1(tf.nn.relu(x))))


def _step_fn(blocks):
    variables = None

    @tf.function
    def step(x, ordering):
        with tf.GradientTape() as tape:
            y = x
            for block in blocks:
                y = block(y, ordering=ordering)
            loss = tf.reduce_mean(tf.square(tf.cast(y, tf.float32)))
        return tape.gradient(loss, variables)

    def run(x, ordering):
        nonlocal variables
        if variables is None:
            y = x
            for block in blocks:
                y = block(y)
            variables = [v for b in blocks for v in b.trainable_variables]
        return step(x, ordering)

    return run


def main(argv):
    del argv
    keras.mixed_precision.set_global_policy(FLAGS.policy)
    shape = (FLAGS.batch, FLAGS.size, FLAGS.size, FLAGS.channels)
    x = tf.random.normal(shape)
    variants = {
        "masked": _step_fn([MaskedResidualBlock(FLAGS.channels) for _ in range(FLAGS.blocks)]),
        "plain": _step_fn([PlainBlock(FLAGS.channels) for _ in range(FLAGS.blocks)]),
    }
    rng = np.random.default_rng(0)
    times = {name: [] for name in variants}
    for run in variants.values():  # warm-up and trace
        run(x, tf.constant(0))
    for _ in range(FLAGS.repeats):
        for name, run in variants.items():
            ordering = tf.constant(int(rng.integers(16)))
            start = time.perf_counter()
            grads = run(x, ordering)
            float(tf.reduce_sum(grads[0]))
            times[name].append(time.perf_counter() - start)
    median = {name: float(np.median(t)) for name, t in times.items()}
    print(
        json.dumps(
            {
                "shape": shape,
                "blocks": FLAGS.blocks,
                "policy": FLAGS.policy,
                "repeats": FLAGS.repeats,
                "masked_step_s_median": round(median["masked"], 4),
                "plain_step_s_median": round(median["plain"], 4),
                "masked_over_plain": round(median["masked"] / median["plain"], 3),
                "threads": tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
